/**
 * Undo and redo of this client's own changes, safe with other users editing. No sockets, no
 * timers, no Immer import: the revert recipe works on the draft of whichever Immer runs it.
 *
 * An `Edit` is one local change as last run: the state it ran on (`before`) and the state it
 * produced (`after`); the replica keeps both up to date when it re-runs the change (rebase) or the
 * server confirms it. Undoing edits is an ordinary change whose recipe (`revertRecipe`) walks
 * `before` -> `after` (O(what changed), by reference: the states share everything else) and
 * restores each value it finds changed, but only where the document still holds what the edit
 * wrote there (deep equality); elsewhere a collaborator changed it since, and their value wins.
 *
 * Arrays: elements that stayed in place (same length, same `id` where elements carry one) are
 * reverted one by one. An insert, removal or move is one unit: it is undone by position only if
 * everything from its first changed index to the end still equals what the edit left (so no
 * shift is ever half applied); otherwise, when the elements carry ids, element by element by id
 * (remove what the edit added, restore what it changed, re-insert what it removed after its
 * nearest earlier neighbour that is still there); otherwise the unit is skipped.
 */
import type { Recipe } from "./replica"

/** One local change as last run. */
export interface Edit<T> {
  readonly before: T
  readonly after: T
}

/** One undo (or redo) step: the edits it reverts, oldest first. */
export interface UndoEntry<T> {
  readonly edits: Edit<T>[]
}

export interface UndoOptions {
  /** Undoable changes closer together than this (ms) form one undo step. Default 500. */
  readonly captureTimeoutMs?: number
  /** Most undo steps (and redo steps) kept; the oldest are forgotten. Default 100. */
  readonly depth?: number
  /** The member that identifies the elements of an array, to find them after they moved. Default `id`. */
  readonly idField?: string
}

export const DEFAULT_UNDO: Required<UndoOptions> = { captureTimeoutMs: 500, depth: 100, idField: "id" }

/** What a run of a revert recipe did: operations applied, and skipped because their value changed. */
export interface RevertCount {
  applied: number
  skipped: number
}

/**
 * The undo/redo stacks. `capture` takes each new undoable local change and groups it with the
 * previous one when it follows within `captureTimeoutMs`, or inside `batch`.
 */
export class UndoHistory<T> {
  private readonly undoStack: UndoEntry<T>[] = []
  private readonly redoStack: UndoEntry<T>[] = []
  private capturing = false
  private lastCapture = 0
  private batchDepth = 0
  private readonly captureTimeoutMs: number
  private readonly depth: number
  private readonly now: () => number

  constructor(options: UndoOptions = {}, now: () => number = Date.now) {
    this.captureTimeoutMs = options.captureTimeoutMs ?? DEFAULT_UNDO.captureTimeoutMs
    this.depth = options.depth ?? DEFAULT_UNDO.depth
    this.now = now
  }

  get canUndo(): boolean {
    return this.undoStack.length > 0
  }

  get canRedo(): boolean {
    return this.redoStack.length > 0
  }

  /** A new undoable local change: joins the top step or starts one; the redo stack is cleared. */
  capture(edit: Edit<T>): void {
    this.redoStack.length = 0
    const now = this.now()
    const top = this.undoStack[this.undoStack.length - 1]
    if (top && this.capturing && (this.batchDepth > 0 || now - this.lastCapture < this.captureTimeoutMs)) {
      top.edits.push(edit)
    } else {
      push(this.undoStack, { edits: [edit] }, this.depth)
    }
    this.capturing = true
    this.lastCapture = now
  }

  /** The next change starts a new step. */
  stopCapturing(): void {
    this.capturing = false
  }

  /** Every change made during `fn` forms one step of its own. */
  batch<R>(fn: () => R): R {
    if (this.batchDepth === 0) this.stopCapturing()
    this.batchDepth += 1
    try {
      return fn()
    } finally {
      this.batchDepth -= 1
      if (this.batchDepth === 0) this.stopCapturing()
    }
  }

  popUndo(): UndoEntry<T> | undefined {
    this.stopCapturing()
    return this.undoStack.pop()
  }

  popRedo(): UndoEntry<T> | undefined {
    this.stopCapturing()
    return this.redoStack.pop()
  }

  pushUndo(entry: UndoEntry<T>): void {
    push(this.undoStack, entry, this.depth)
  }

  pushRedo(entry: UndoEntry<T>): void {
    push(this.redoStack, entry, this.depth)
  }
}

function push<E>(stack: E[], entry: E, depth: number): void {
  stack.push(entry)
  if (stack.length > depth) stack.splice(0, stack.length - depth)
}

/**
 * A recipe that reverts `edits` (newest first) where their preconditions hold. `count` receives
 * what its latest run did; a run that applies nothing changes nothing.
 */
export function revertRecipe<T>(edits: readonly Edit<T>[], idField: string, count?: RevertCount): Recipe<T> {
  return (draft) => {
    const tally: RevertCount = { applied: 0, skipped: 0 }
    let root: unknown = draft
    for (let index = edits.length - 1; index >= 0; index--) {
      const edit = edits[index]!
      root = revertRoot(root, root === draft, edit.before, edit.after, { idField, tally })
    }
    if (count) Object.assign(count, tally)
    return root === draft ? undefined : (root as typeof draft)
  }
}

/** The inverse of an edit, as an edit: reverting it re-applies the original. */
export function inverted<T>(edit: Edit<T>): Edit<T> {
  return { before: edit.after, after: edit.before }
}

interface Context {
  readonly idField: string
  readonly tally: RevertCount
}

const ABSENT = Symbol("absent")
type Kind = "object" | "array" | "leaf" | "absent"

function revertRoot(root: unknown, rootIsDraft: boolean, before: unknown, after: unknown, context: Context): unknown {
  if (before === after) return root
  const kind = kindOf(after)
  if ((kind === "object" || kind === "array") && kindOf(before) === kind) {
    if (kindOf(root) === kind && !Object.isFrozen(root)) {
      revertContainer(root, before, after, context)
      return root
    }
  } else if (deepEqual(root, after) && !(rootIsDraft && context.tally.applied > 0)) {
    // A replaced root is given back by the recipe, which Immer allows only for an unmodified draft.
    context.tally.applied += 1
    return before
  }
  context.tally.skipped += 1
  return root
}

/** `current` (a draft), `before` and `after` are all objects or all arrays. */
function revertContainer(current: any, before: any, after: any, context: Context): void {
  if (Array.isArray(after)) {
    revertArray(current, before, after, context)
    return
  }
  for (const key of new Set([...Object.keys(before), ...Object.keys(after)])) {
    const was = member(before, key)
    const wrote = member(after, key)
    if (was !== wrote) revertSlot(current, key, was, wrote, context)
  }
}

/** Restores `container[key]` from `wrote` to `was` where it still holds `wrote`; descends into containers. */
function revertSlot(container: any, key: string | number, was: unknown, wrote: unknown, context: Context): void {
  const now = member(container, key)
  const kind = kindOf(wrote)
  if ((kind === "object" || kind === "array") && kindOf(was) === kind) {
    if (kindOf(now) === kind) revertContainer(container[key], was, wrote, context)
    else context.tally.skipped += 1
    return
  }
  if (!deepEqual(now, wrote) || (was === ABSENT && Array.isArray(container))) {
    context.tally.skipped += 1
    return
  }
  if (was === ABSENT) delete container[key]
  else container[key] = was
  context.tally.applied += 1
}

function revertArray(current: any[], before: readonly unknown[], after: readonly unknown[], context: Context): void {
  const { idField } = context
  if (before.length === after.length && before.every((was, index) => sameElement(was, after[index], idField))) {
    for (let index = 0; index < after.length; index++) {
      if (before[index] === after[index]) continue
      const at = locate(current, after, index, idField)
      if (at < 0) context.tally.skipped += 1
      else revertSlot(current, at, before[index], after[index], context)
    }
    return
  }
  if (revertShift(current, before, after)) {
    context.tally.applied += 1
  } else if (hasIds(before, idField) && hasIds(after, idField)) {
    revertById(current, before, after, context)
  } else {
    context.tally.skipped += 1
  }
}

/**
 * Undoes an insert/removal/move by position, if the array from its first change to the edit's end
 * is as the edit left it (elements appended since by others are kept).
 */
function revertShift(current: any[], before: readonly unknown[], after: readonly unknown[]): boolean {
  if (current.length < after.length) return false
  let start = 0
  while (start < before.length && start < after.length && before[start] === after[start]) start++
  for (let index = start; index < after.length; index++) {
    if (!deepEqual(member(current, index), after[index])) return false
  }
  let tail = 0
  while (
    tail < before.length - start &&
    tail < after.length - start &&
    before[before.length - 1 - tail] === after[after.length - 1 - tail]
  ) {
    tail++
  }
  current.splice(start, after.length - tail - start, ...before.slice(start, before.length - tail))
  return true
}

function revertById(current: any[], before: readonly unknown[], after: readonly unknown[], context: Context): void {
  const { idField, tally } = context
  const id = (element: unknown) => (element as Record<string, unknown>)[idField]
  const wasAt = new Map(before.map((element, index) => [id(element), index]))
  const wroteAt = new Map(after.map((element, index) => [id(element), index]))
  const kept = (list: readonly unknown[], other: Map<unknown, number>) =>
    list.map(id).filter((key) => other.has(key))
  const keptBefore = kept(before, wroteAt)
  const keptAfter = kept(after, wasAt)
  if (keptBefore.some((key, index) => keptAfter[index] !== key)) {
    tally.skipped += 1 // the edit reordered elements: not undone element by element
    return
  }
  for (const wrote of after) {
    if (wasAt.has(id(wrote))) continue
    const at = indexById(current, id(wrote), idField)
    if (at >= 0 && deepEqual(member(current, at), wrote)) {
      current.splice(at, 1)
      tally.applied += 1
    } else {
      tally.skipped += 1 // gone already, or changed by someone else since
    }
  }
  for (const wrote of after) {
    const index = wasAt.get(id(wrote))
    if (index === undefined || before[index] === wrote) continue
    const at = indexById(current, id(wrote), idField)
    if (at < 0) tally.skipped += 1
    else revertSlot(current, at, before[index], wrote, context)
  }
  before.forEach((was, index) => {
    if (wroteAt.has(id(was))) return
    if (indexById(current, id(was), idField) >= 0) {
      tally.skipped += 1 // someone put it back already
      return
    }
    current.splice(insertionIndex(current, before, index, idField), 0, was)
    tally.applied += 1
  })
}

/** Where `before[index]` goes back: after its nearest earlier neighbour still there, else before a later one. */
function insertionIndex(current: any[], before: readonly unknown[], index: number, idField: string): number {
  for (let other = index - 1; other >= 0; other--) {
    const at = indexById(current, (before[other] as Record<string, unknown>)[idField], idField)
    if (at >= 0) return at + 1
  }
  for (let other = index + 1; other < before.length; other++) {
    const at = indexById(current, (before[other] as Record<string, unknown>)[idField], idField)
    if (at >= 0) return at
  }
  return current.length
}

/** The index in `current` of the element that was `after[index]`: by id if it has one, else by position. */
function locate(current: any[], after: readonly unknown[], index: number, idField: string): number {
  const key = idOf(after[index], idField)
  if (key === undefined) return current.length === after.length ? index : -1
  if (idOf(member(current, index), idField) === key) return index
  return indexById(current, key, idField)
}

function indexById(current: any[], key: unknown, idField: string): number {
  for (let index = 0; index < current.length; index++) {
    if (idOf(member(current, index), idField) === key) return index
  }
  return -1
}

function idOf(value: unknown, idField: string): unknown {
  if (kindOf(value) !== "object") return undefined
  const key = (value as Record<string, unknown>)[idField]
  return typeof key === "string" || typeof key === "number" ? key : undefined
}

function hasIds(list: readonly unknown[], idField: string): boolean {
  const keys = list.map((element) => idOf(element, idField))
  return keys.every((key) => key !== undefined) && new Set(keys).size === keys.length
}

/** Whether `after` is still the element `was` (edited in place), not a different one. */
function sameElement(was: unknown, after: unknown, idField: string): boolean {
  if (was === after) return true
  const kind = kindOf(was)
  return kind === kindOf(after) && (kind !== "object" || idOf(was, idField) === idOf(after, idField))
}

/**
 * `container[key]`, or ABSENT. Read through the property descriptor: on an Immer draft (any
 * version) it holds the underlying value rather than a new child draft, so an element nobody
 * touched in this run is still identical to the state it came from, and comparing it is O(1).
 */
function member(container: any, key: string | number): unknown {
  const value: unknown = Object.getOwnPropertyDescriptor(container, key)?.value
  return value === undefined ? ABSENT : value
}

function kindOf(value: unknown): Kind {
  if (value === ABSENT || value === undefined) return "absent"
  if (Array.isArray(value)) return "array"
  return typeof value === "object" && value !== null ? "object" : "leaf"
}

/** JSON deep equality (members holding `undefined` count as absent); works on drafts too. */
export function deepEqual(left: unknown, right: unknown): boolean {
  if (left === right) return true
  const kind = kindOf(left)
  if (kind !== kindOf(right) || kind === "leaf" || kind === "absent") return false
  if (kind === "array") {
    const length = (left as unknown[]).length
    if ((right as unknown[]).length !== length) return false
    for (let index = 0; index < length; index++) {
      if (!deepEqual(member(left, index), member(right, index))) return false
    }
    return true
  }
  const keys = Object.keys(left as object).filter((key) => member(left, key) !== ABSENT)
  const others = Object.keys(right as object).filter((key) => member(right, key) !== ABSENT)
  if (keys.length !== others.length) return false
  return keys.every((key) => {
    const other = member(right, key)
    return other !== ABSENT && deepEqual(member(left, key), other)
  })
}
