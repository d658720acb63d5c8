/**
 * Compaction of Immer's array shift cascades into the index operations they stand for.
 *
 * Immer writes a mid-array insertion or removal as one whole-element `replace` per shifted element
 * plus an `add`/`remove` at the end (or, up to 9.0.21, a `replace [..., "length"]`): deleting the
 * first of 10,000 gifts is ~1.7 MB of patches that overlap every concurrent edit of the list.
 * `compactPatches(base, patches)` rewrites each such run into the fewest index operations with the
 * same result (there, one `remove [gifts, 0]`).
 *
 * A run is a contiguous sequence of patches on the elements of one array A that only replace
 * existing elements, append at the end and remove from the end (Immer's generateArrayPatches
 * shape). Immer reuses the base's references for elements it did not change, so a shift is found
 * by reference identity (`Object.is`) against A in `base`; only elements at the indexes the run
 * names are looked at. A run is left as Immer wrote it when an earlier patch of the batch touched
 * A, an ancestor or a descendant (A in `base` would no longer be its base), when A is not an array
 * in `base`, or when the rewrite is not shorter. Inverse patches compact the same way against the
 * state they apply to: `compactPatches(after, inversePatches)`.
 */
import type { Patch } from "immer"

type Segment = string | number

/** Patches equivalent to `patches` (applied to `base`), with array cascades compacted. */
export function compactPatches(base: unknown, patches: Patch[]): Patch[] {
  let out: Patch[] | undefined // created at the first rewrite
  const touchedPaths = new Set<string>()
  const touchedPrefixes = new Set<string>()
  const touch = (path: readonly Segment[]) => {
    touchedPaths.add(pathKey(path, path.length))
    for (let k = 0; k <= path.length; k++) touchedPrefixes.add(pathKey(path, k))
  }
  for (let i = 0; i < patches.length; ) {
    const patch = patches[i]!
    const parent = patch.path.slice(0, -1)
    if (patch.path.length > 0 && !isTouched(parent, touchedPaths, touchedPrefixes)) {
      const array = resolve(base, parent)
      if (Array.isArray(array)) {
        const run = new Run(array, parent)
        let end = i
        while (end < patches.length && run.take(patches[end]!)) end++
        if (end - i >= 2) {
          const rewritten = run.rewrite(patches, i, end)
          if (rewritten) out ??= patches.slice(0, i)
          if (out) for (const p of rewritten ?? patches.slice(i, end)) out.push(p)
          touch(parent) // as if the array itself was written: coarser, and O(1) a run
          i = end
          continue
        }
      }
    }
    out?.push(patch)
    touch(patch.path)
    i++
  }
  return out ?? patches
}

function pathKey(path: readonly Segment[], length: number): string {
  return JSON.stringify(path.slice(0, length).map(String))
}

function isTouched(array: readonly Segment[], paths: Set<string>, prefixes: Set<string>): boolean {
  if (prefixes.has(pathKey(array, array.length))) return true
  for (let k = 0; k < array.length; k++) if (paths.has(pathKey(array, k))) return true
  return false
}

function resolve(base: unknown, path: readonly Segment[]): unknown {
  let node = base
  for (const seg of path) {
    if (Array.isArray(node)) {
      if (typeof seg !== "number" || !(seg >= 0 && seg < node.length)) return undefined
      node = node[seg]
    } else if (node !== null && typeof node === "object" && isPlain(node)) {
      if (!Object.prototype.hasOwnProperty.call(node, seg)) return undefined
      node = (node as Record<string, unknown>)[String(seg)]
    } else {
      return undefined
    }
  }
  return node
}

function isPlain(node: object): boolean {
  const proto: unknown = Object.getPrototypeOf(node)
  return proto === Object.prototype || proto === null
}

/** One edit of a rewritten run. */
interface Edit {
  op: "add" | "remove" | "replace"
  index: number
  value?: unknown
}

/** A cascade on one array being read: the array's length and the values written where. */
class Run {
  private length: number
  private written = new Map<number, unknown>()
  private readonly base: readonly unknown[]
  private readonly parent: readonly Segment[]

  constructor(base: readonly unknown[], parent: readonly Segment[]) {
    this.base = base
    this.parent = parent
    this.length = base.length
  }

  /** Accounts for `patch` if it continues the run (and changes nothing otherwise). */
  take(patch: Patch): boolean {
    const { path } = patch
    const depth = this.parent.length
    if (path.length !== depth + 1) return false
    for (let k = 0; k < depth; k++) if (String(path[k]) !== String(this.parent[k])) return false
    const last = path[depth]
    if (patch.op === "replace" && last === "length") {
      const n: unknown = patch.value
      if (typeof n !== "number" || !Number.isInteger(n) || n < 0 || n > this.length) return false
      for (const k of [...this.written.keys()]) if (k >= n) this.written.delete(k)
      this.length = n
      return true
    }
    if (typeof last !== "number" || !Number.isInteger(last) || last < 0) return false
    if (patch.op === "replace" && last < this.length) {
      this.written.set(last, patch.value)
    } else if (patch.op === "add" && last === this.length) {
      this.written.set(last, patch.value)
      this.length++
    } else if (patch.op === "remove" && last === this.length - 1) {
      this.written.delete(last)
      this.length--
    } else {
      return false
    }
    return true
  }

  /** The shorter equivalent of `patches[start:end]`, or undefined. */
  rewrite(patches: readonly Patch[], start: number, end: number): Patch[] | undefined {
    const edits = shortestEdits(this.base, this.length, this.written, end - start)
    if (!edits || edits.length >= end - start) return undefined
    const parent = patches[start]!.path.slice(0, -1)
    return edits.map(({ op, index, value }) =>
      op === "remove" ? { op, path: [...parent, index] } : { op, path: [...parent, index], value },
    )
  }
}

const MINUS_ZERO = Symbol("-0")
/** A Map key equal exactly for interchangeable values (Map's SameValueZero merges 0 and -0). */
const key = (value: unknown): unknown => (Object.is(value, -0) ? MINUS_ZERO : value)

/**
 * Index edits turning `base` into the array a cascade makes (`length` elements: `written[k]` where
 * written, else `base[k]`), or undefined if too costly.
 * `budget`, the run's patch count, bounds the elements read beyond those named: a common prefix and
 * suffix are kept, and only the middle between them is diffed, greedily.
 */
function shortestEdits(
  base: readonly unknown[],
  length: number,
  written: Map<number, unknown>,
  budget: number,
): Edit[] | undefined {
  const n = base.length
  const m = length
  const shorter = Math.min(n, m)
  const order = [...written.keys()].sort((a, b) => a - b)
  // an unwritten index below `length` was never cut off, so it holds the base's element
  const at = (k: number): unknown => (written.has(k) ? written.get(k) : base[k])

  // common prefix: unwritten indexes below `shorter` hold the base's elements
  let p = shorter
  for (const k of order) {
    if (k >= shorter || !Object.is(written.get(k), base[k])) {
      p = Math.min(k, shorter)
      break
    }
  }
  // common suffix, walking down from both ends
  let s = 0
  let spare = budget
  let ptr = order.length - 1
  let i = m - 1
  let q = n - 1
  while (i >= p && q >= p) {
    while (ptr >= 0 && order[ptr]! > i) ptr--
    if (!(ptr >= 0 && order[ptr] === i)) {
      if (m === n) {
        // unwritten and unshifted down to the next written index: all equal
        const step = i - Math.max(ptr >= 0 ? order[ptr]! : -1, p - 1)
        i -= step
        q -= step
        s += step
        continue
      }
      if (spare === 0) break
      spare--
    }
    if (!Object.is(at(i), base[q])) break
    i--
    q--
    s++
  }
  const oldN = n - s - p
  const newN = m - s - p
  if (oldN + newN > 2 * budget + 2) return undefined
  const old = base.slice(p, p + oldN)
  const fresh = Array.from({ length: newN }, (_, t) => at(p + t))
  const inOld = new Occurrences(old)
  const inNew = new Occurrences(fresh)
  const edits: Edit[] = []
  let a = 0 // next element of old
  let b = 0 // next element of fresh
  let pos = p // where the next element of fresh goes
  while (a < oldN || b < newN) {
    if (a < oldN && b < newN && Object.is(old[a], fresh[b])) {
      a++
      b++
      pos++
      continue
    }
    let action: Edit["op"]
    if (b >= newN) action = "remove"
    else if (a >= oldN) action = "add"
    else {
      const laterOld = inOld.after(fresh[b], a) // the new element is an old one, later
      const laterNew = inNew.after(old[a], b) // the old element is kept, later
      if (laterOld === undefined && laterNew === undefined) action = "replace"
      else if (laterNew === undefined) action = "remove"
      else if (laterOld === undefined) action = "add"
      else action = laterOld - a <= laterNew - b ? "remove" : "add"
    }
    if (action === "remove") {
      edits.push({ op: "remove", index: pos })
      a++
    } else {
      edits.push({ op: action, index: pos, value: fresh[b] })
      b++
      pos++
      if (action === "replace") a++
    }
    if (edits.length >= budget) return undefined // not shorter than the run: no need to finish
  }
  return edits
}

/** The next index holding a value, after a position that only moves forward. */
class Occurrences {
  private readonly where = new Map<unknown, number[]>()
  private readonly cursor = new Map<unknown, number>()

  constructor(values: readonly unknown[]) {
    values.forEach((value, i) => {
      const k = key(value)
      const list = this.where.get(k)
      if (list) list.push(i)
      else this.where.set(k, [i])
    })
  }

  after(value: unknown, position: number): number | undefined {
    const k = key(value)
    const indexes = this.where.get(k)
    if (!indexes) return undefined
    let c = this.cursor.get(k) ?? 0
    while (c < indexes.length && indexes[c]! <= position) c++
    this.cursor.set(k, c)
    return indexes[c]
  }
}
