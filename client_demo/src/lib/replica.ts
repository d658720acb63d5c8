/**
 * The optimistic replica of one document: the server's state at its version ("confirmed") plus
 * the local changes the server has not committed yet ("pending"). No sockets, no timers.
 *
 * Shown state = confirmed state with every pending change applied on top, in order. Whenever the
 * confirmed state moves by something other than our own head change, every pending recipe is re-run
 * on top of it (rebase), so a pending change's patches always fit the state just before it.
 *
 * At most one batch is in flight (the client enforces it), and it starts with the head change: its
 * patches then fit the confirmed state exactly and `base` is always the true version they were
 * made against. Normally the batch is the head change alone. Under contention (the head change has
 * met a `conflict`), the leading pending changes are squashed into one batch under the head's id
 * (their patches concatenated: each change's patches apply to the state after the previous one),
 * so that a backlog drains in one round trip instead of one per change. Each change stays its own
 * unit for undo.
 */
import { applyPatches, enablePatches, freeze, produceWithPatches } from "immer"
import type { Draft, Objectish, Patch } from "immer"
import { compactPatches } from "./compact"
import { SyncError } from "./errors"
import type { Epoch, ErrorBody, OutgoingPatch } from "./protocol"

enablePatches()

/**
 * An Immer recipe. Recipes can be re-run on newer server state (rebase, conflict retry,
 * reconnect), so they must be pure: no side effects, ids or random values created inside.
 */
export type Recipe<T> = (draft: Draft<T>) => Draft<T> | void

/**
 * One local change. `before` and `after` are the states around its latest run (undo reads them):
 * re-runs update them, and so does the server's confirmation; a dropped change is left with
 * `after === before`.
 */
export interface Change<T> {
  /** Wire id; a new one for each conflict retry or server epoch, the same one for resends. */
  id: string
  readonly recipe: Recipe<T>
  /** Patches from the state before this change (confirmed + earlier pending) to `after`. */
  patches: Patch[]
  before: T
  after: T
  /** The patches last sent under `id`: what the server commits if it accepts `id`. */
  sent?: Patch[]
  /** `before` and `after` when first sent under `id`: its last run, if the server already had it. */
  sentRun?: { readonly before: T; readonly after: T }
  conflicts: number
  /** On the head change while `id` is in flight: how many leading changes were sent under `id`. */
  batch?: number
  /** Sent alone from now on: it was part of a squashed batch the server refused (not a conflict). */
  alone?: boolean
}

/** Bounds of a squashed batch: changes, operations and JSON characters of its patches. */
export const SQUASH_MAX_CHANGES = 64
export const SQUASH_MAX_OPS = 1000
export const SQUASH_MAX_CHARS = 256 * 1024

/** What became of an `ack` or `reject`: `gap` means the replica can no longer follow the server. */
export type Outcome = "settled" | "retry" | "ignored" | "gap"

export class Replica<T> {
  private confirmed: T
  private confirmedVersion: number
  private currentEpoch: Epoch
  private pending: Change<T>[] = []
  private readonly nextId: () => string
  private readonly report: (error: SyncError) => void

  /** `nextId` makes fresh wire ids; `report` receives the errors of dropped changes. */
  constructor(
    state: T,
    version: number,
    epoch: Epoch,
    nextId: () => string,
    report: (error: SyncError) => void,
  ) {
    this.confirmed = freeze(state, true)
    this.confirmedVersion = version
    this.currentEpoch = epoch
    this.nextId = nextId
    this.report = report
  }

  get version(): number {
    return this.confirmedVersion
  }

  get epoch(): Epoch {
    return this.currentEpoch
  }

  get hasPending(): boolean {
    return this.pending.length > 0
  }

  get shown(): T {
    const last = this.pending[this.pending.length - 1]
    return last ? last.after : this.confirmed
  }

  /** Runs `recipe` on the shown state; returns undefined (and records nothing) if it changed nothing. */
  local(recipe: Recipe<T>): Change<T> | undefined {
    const before = this.shown
    const [after, produced] = produceWithPatches(before, recipe)
    if (produced.length === 0) return undefined
    const patches = compactPatches(before, produced) // array shifts as index operations
    const change: Change<T> = { id: this.nextId(), recipe, patches, before, after, conflicts: 0 }
    this.pending.push(change)
    return change
  }

  /**
   * Takes `changes` out of the queue, if every one of them is pending and not sent (a change in
   * flight may already be committed); the rest are re-run without them. False if not possible.
   */
  withdraw(changes: readonly object[]): boolean {
    const withdrawn = new Set(changes)
    const queued = this.pending.filter((change) => withdrawn.has(change) && change.sent === undefined)
    if (queued.length !== withdrawn.size) return false
    this.pending = this.pending.filter((change) => !withdrawn.has(change))
    this.rebase()
    return true
  }

  /** A batch from elsewhere; false if it is not the next version or does not apply (resync). */
  remote(version: number, patches: readonly Patch[]): boolean {
    if (!this.advance(version, patches)) return false
    this.rebase()
    return true
  }

  /** Replaces the confirmed state (a snapshot). Pending changes survive, rebased. */
  reset(state: T, version: number, epoch: Epoch): void {
    if (epoch !== this.currentEpoch) {
      // A new history: ids sent to the old one mean nothing, so those changes are new again.
      for (const change of this.pending) {
        change.id = this.nextId()
        change.sent = undefined
        change.batch = undefined
      }
    }
    this.confirmed = freeze(state, true)
    this.confirmedVersion = version
    this.currentEpoch = epoch
    this.rebase()
  }

  /**
   * The batch to send now, starting with the head change; leading changes that became no-ops are
   * dropped first. A head that has met a conflict takes the changes queued behind it along
   * (squashed, within the SQUASH_ bounds); a resend under the same id (after a reconnect) carries
   * the same changes as the first send, whatever was queued since.
   */
  nextToSend(): OutgoingPatch | undefined {
    const resend = this.pending[0]?.sent !== undefined ? (this.pending[0].batch ?? 1) : 0
    if (resend > 1) {
      const members = this.inFlight()
      if (members.some((change) => change.patches.length > 0)) return this.send(members)
      // Re-run on newer state, the whole batch changes nothing: dropped unsent, as a lone head is.
      this.pending.splice(0, resend)
    }
    while (this.pending[0]?.patches.length === 0) this.pending.shift()
    const head = this.pending[0]
    if (!head) return undefined
    if (head.sent !== undefined || head.conflicts === 0 || head.alone) return this.send([head])
    const members: [Change<T>, ...Change<T>[]] = [head]
    let ops = head.patches.length
    let chars = JSON.stringify(head.patches).length
    for (const change of this.pending.slice(1, SQUASH_MAX_CHANGES)) {
      if (change.alone) break
      const size = JSON.stringify(change.patches).length
      if (ops + change.patches.length > SQUASH_MAX_OPS || chars + size > SQUASH_MAX_CHARS) break
      ops += change.patches.length
      chars += size
      members.push(change)
    }
    return this.send(members)
  }

  private send(members: readonly [Change<T>, ...Change<T>[]]): OutgoingPatch {
    const [head] = members
    for (const change of members) {
      if (change.sent === undefined) change.sentRun = { before: change.before, after: change.after }
      change.sent = change.patches
    }
    head.batch = members.length
    const patches = members.length === 1 ? head.patches : members.flatMap((change) => change.patches)
    return { id: head.id, base: this.confirmedVersion, patches }
  }

  /** The changes sent under the head's id; only called when the head is sent. */
  private inFlight(): [Change<T>, ...Change<T>[]] {
    const [head, ...rest] = this.pending
    if (head?.sent === undefined) throw new Error("no batch in flight")
    return [head, ...rest.slice(0, (head.batch ?? 1) - 1)]
  }

  /**
   * The server committed change `id` as `version`. `applied` is what it applied instead of the
   * patches sent, when those differ (it rebased a stale batch or normalised it): the confirmed
   * state at `version` is then the one the server holds, and the pending changes are re-run on it.
   */
  acknowledge(id: string, version: number, applied?: readonly Patch[]): Outcome {
    const head = this.pending[0]
    if (head?.id !== id || head.sent === undefined) {
      // Not ours (any more): harmless if we already hold that version, else we lack its patches.
      return version <= this.confirmedVersion ? "ignored" : "gap"
    }
    if ((head.batch ?? 1) > 1) return this.acknowledgeBatch(version, applied)
    if (version <= this.confirmedVersion) {
      // Already in the confirmed state: it came back as a patch or in a snapshot (a resend the
      // server deduplicated after a reconnect), as first sent: later re-runs ran on top of it.
      this.pending.shift()
      if (head.sentRun) ({ before: head.before, after: head.after } = head.sentRun)
      this.rebase()
      return "settled"
    }
    if (applied === undefined && head.sent === head.patches && version === this.confirmedVersion + 1) {
      // The common case: nothing arrived in between, so the state we showed is the server's.
      this.pending.shift()
      this.confirmed = head.after
      this.confirmedVersion = version
      return "settled"
    }
    const before = this.confirmed
    if (!this.advance(version, applied ?? head.sent)) return "gap"
    head.before = before
    head.after = this.confirmed
    this.pending.shift()
    this.rebase()
    return "settled"
  }

  /** `acknowledge` for a squashed batch: it settles every change sent under the head's id. */
  private acknowledgeBatch(version: number, applied?: readonly Patch[]): Outcome {
    const members = this.inFlight()
    if (version <= this.confirmedVersion) {
      // Already in the confirmed state (a deduplicated resend): each change as first sent.
      this.pending.splice(0, members.length)
      for (const change of members) {
        if (change.sentRun) ({ before: change.before, after: change.after } = change.sentRun)
      }
      this.rebase()
      return "settled"
    }
    const exact = members.every((change) => change.sent === change.patches)
    if (applied === undefined && exact && version === this.confirmedVersion + 1) {
      // Nothing arrived in between: the states we showed, change by change, are the server's.
      this.pending.splice(0, members.length)
      this.confirmed = (members[members.length - 1] ?? members[0]).after
      this.confirmedVersion = version
      return "settled"
    }
    if (!this.advance(version, applied ?? members.flatMap((change) => change.sent ?? []))) return "gap"
    // The server's batch cannot be split back into changes: each keeps its latest run (on the
    // state before the batch, one after the other) for undo, which only reverts what still holds.
    this.pending.splice(0, members.length)
    this.rebase()
    return "settled"
  }

  /**
   * The server refused change `id`. A `conflict` is retried without limit: remote batches up to
   * the server's version arrived before the reject, so the head was already re-run on the newest
   * state and goes out again under a new id; if that re-run changes nothing, the change is
   * dropped and reported as `superseded`. Any other code drops the change and reports it.
   */
  reject(id: string, error: ErrorBody): Outcome {
    const head = this.pending[0]
    if (head?.id !== id || head.sent === undefined) return "ignored"
    if ((head.batch ?? 1) > 1) return this.rejectBatch(error)
    if (error.code === "conflict" && head.patches.length > 0) {
      head.conflicts += 1
      head.id = this.nextId()
      head.sent = undefined
      return "retry"
    }
    this.pending.shift()
    head.after = head.before // dropped: there is nothing of it to undo
    if (error.code === "conflict") {
      this.report(superseded(`re-run after a conflict (${error.message}), it changes nothing`))
    } else {
      this.rebase()
      this.report(new SyncError(error.code, error.message))
    }
    return "settled"
  }

  /**
   * `reject` for a squashed batch. A `conflict`: the changes (already re-run on the newest state)
   * are squashed again under a new id; those whose re-run changes nothing are dropped and reported
   * as `superseded`. Another code: nothing is dropped, but each change of the batch is sent alone
   * from now on, so that the one the server refuses is isolated, dropped and reported as usual.
   */
  private rejectBatch(error: ErrorBody): Outcome {
    const members = this.inFlight()
    const head = members[0]
    head.id = this.nextId() // the refused batch is never sent again under its id
    for (const change of members) {
      change.sent = undefined
      change.batch = undefined
    }
    const conflict = error.code === "conflict"
    if (conflict) head.conflicts += 1
    else for (const change of members) change.alone = true
    // Members that no longer change anything were kept only because they were sent: drop them.
    const moot = new Set(members.filter((change) => change.patches.length === 0))
    this.pending = this.pending.filter((change) => !moot.has(change))
    const next = this.pending[0]
    const retry = conflict && next !== undefined && members.includes(next)
    if (retry && next !== head) next.conflicts = Math.max(next.conflicts, head.conflicts)
    const why = conflict ? `re-run after a conflict (${error.message})` : "re-run on newer state"
    for (const change of moot) {
      change.after = change.before
      this.report(superseded(`${why}, it changes nothing`))
    }
    return retry ? "retry" : "settled"
  }

  /** How many conflicts in a row the head change has met (0 for a fresh change). */
  get headConflicts(): number {
    return this.pending[0]?.conflicts ?? 0
  }

  private advance(version: number, patches: readonly Patch[]): boolean {
    if (version !== this.confirmedVersion + 1) return false
    try {
      this.confirmed = applyPatches(this.confirmed as Objectish, patches) as T
    } catch {
      return false
    }
    this.confirmedVersion = version
    return true
  }

  /**
   * Re-runs every pending recipe on the confirmed state. A change that now does nothing is dropped
   * (and reported as `superseded`), unless it was sent: the server may still answer for it, and
   * the answer must find it.
   */
  private rebase(): void {
    let base = this.confirmed
    const dropped: SyncError[] = []
    this.pending = this.pending.filter((change) => {
      let failed = false
      change.before = base
      try {
        ;[change.after, change.patches] = produceWithPatches(base, change.recipe)
        change.patches = compactPatches(base, change.patches)
      } catch (cause) {
        dropped.push(new SyncError("recipe_failed", "a pending change failed on newer state", { cause }))
        change.after = base
        change.patches = []
        failed = true
      }
      base = change.after
      if (change.patches.length > 0 || change.sent !== undefined) return true
      if (!failed) dropped.push(superseded("re-run on newer state, it changes nothing"))
      return false
    })
    for (const error of dropped) this.report(error) // once consistent: a listener may call update()
  }
}

/** A change dropped because, re-run on newer state, it no longer changes anything. */
function superseded(why: string): SyncError {
  return new SyncError("superseded", `a change was dropped: ${why}`)
}
