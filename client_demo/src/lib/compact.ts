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
 * names are looked at. Elements that earlier patches of the batch wrote inside (Immer writes an
 * edited element's fields before its array's cascade) are never matched, so never moved. A run is
 * left as Immer wrote it when an earlier patch wrote A, an ancestor or an element of A as a whole,
 * or inserted into or removed from an ancestor (A in `base` would no longer be its base), when A
 * is not an array in `base`, or when the rewrite is not shorter (fewer patches, or as many carrying
 * fewer values). A `replace` of a whole array by another (`list = list.filter(...)` in a recipe)
 * is rewritten the same way when the index operations move no element of the array. Inverse patches compact the same way against
 * the state they apply to: `compactPatches(after, inversePatches)`.
 */
import type { Patch } from "immer"

type Segment = string | number

/** Patches equivalent to `patches` (applied to `base`), with array cascades compacted. */
export function compactPatches(base: unknown, patches: Patch[]): Patch[] {
  let out: Patch[] | undefined // created at the first rewrite
  const touched = new Touched()
  for (let i = 0; i < patches.length; ) {
    const patch = patches[i]!
    const parent = patch.path.slice(0, -1)
    const dirty = patch.path.length > 0 ? touched.inside(parent) : undefined
    const array = dirty ? resolve(base, parent) : undefined
    if (dirty && Array.isArray(array)) {
      const run = new Run(array, parent)
      let end = i
      while (end < patches.length && run.take(patches[end]!)) end++
      if (end - i >= 2) {
        const rewritten = run.rewrite(patches, i, end, dirty)
        if (rewritten) out ??= patches.slice(0, i)
        if (out) for (const p of rewritten ?? patches.slice(i, end)) out.push(p)
        touched.add(parent, false) // as if the array itself was written: O(1) a run
        i = end
        continue
      }
    }
    if (patch.op === "replace" && Array.isArray(patch.value) && !touched.anything(patch.path)) {
      // not in a run: a whole array replaced
      const whole = resolve(base, patch.path)
      const rewritten = Array.isArray(whole) ? rewriteWhole(whole, patch) : undefined
      if (rewritten) {
        out ??= patches.slice(0, i)
        for (const p of rewritten) out.push(p)
        touched.add(patch.path, false)
        i++
        continue
      }
    }
    out?.push(patch)
    touched.add(patch.path, patch.op !== "replace" || patch.path[patch.path.length - 1] === "length")
    i++
  }
  return out ?? patches
}

/** The paths the earlier patches of a batch wrote. */
class Touched {
  private readonly paths = new Set<string>()
  private readonly prefixes = new Set<string>() // every prefix of those, the paths included
  private readonly parents = new Set<string>() // the parent of each
  private readonly shifted = new Set<string>() // the parent of each insert or removal
  private readonly inner = new Map<string, Set<Segment>>() // children written inside, not whole

  add(path: readonly Segment[], shifts: boolean): void {
    this.paths.add(pathKey(path, path.length))
    for (let k = 0; k <= path.length; k++) this.prefixes.add(pathKey(path, k))
    if (path.length > 0) {
      const parent = pathKey(path, path.length - 1)
      this.parents.add(parent)
      // an index, "-" or "length": whether the parent was an array is not known, so it may be
      const last = String(path[path.length - 1])
      if (shifts && (/^(0|[1-9][0-9]*|-|length)$/.test(last))) this.shifted.add(parent)
    }
    for (let k = 0; k < path.length - 1; k++) {
      const key = pathKey(path, k)
      let children = this.inner.get(key)
      if (!children) this.inner.set(key, (children = new Set()))
      children.add(path[k]!)
    }
  }

  /**
   * Whether `array` or an ancestor was written, or an ancestor had an element inserted or removed
   * (or its `length` set): the value at that path in `base` is no longer the batch's.
   */
  moved(array: readonly Segment[]): boolean {
    if (this.paths.has(pathKey(array, array.length))) return true
    for (let k = 0; k < array.length; k++) {
      const key = pathKey(array, k)
      if (this.paths.has(key) || this.shifted.has(key)) return true
    }
    return false
  }

  /** Whether `array` moved, or a descendant was touched. */
  anything(array: readonly Segment[]): boolean {
    return this.prefixes.has(pathKey(array, array.length)) || this.moved(array)
  }

  /**
   * The indexes of `array` whose elements were written inside (in place: their positions still
   * hold; their values in `base` are stale), or undefined when it moved or an element was written
   * as a whole.
   */
  inside(array: readonly Segment[]): Set<number> | undefined {
    const key = pathKey(array, array.length)
    if (this.parents.has(key) || this.moved(array)) return undefined
    const dirty = new Set<number>()
    for (const seg of this.inner.get(key) ?? []) {
      if (typeof seg !== "number") return undefined
      dirty.add(seg)
    }
    return dirty
  }
}

function pathKey(path: readonly Segment[], length: number): string {
  return JSON.stringify(path.slice(0, length).map(String))
}

/**
 * A replace of a whole array by another (`list = list.filter(...)` in a recipe) as index operations
 * (left as it is if it changes nothing), when they move no element (a permutation stays one replace) and
 * remove no more elements than the new array has (or 2): a concurrent edit of another element then
 * no longer overlaps it.
 */
function rewriteWhole(base: readonly unknown[], patch: Patch): Patch[] | undefined {
  const value = patch.value as unknown[]
  const removed = Math.max(2, value.length)
  const written = new Map(value.map((v, k) => [k, v]))
  const edits = shortestEdits(base, value.length, written, value.length + 1, new Set(), value.length + removed, false)
  if (!edits?.length || edits.length - carrying(edits) > removed) return undefined
  return asPatches(edits, patch.path)
}

const carrying = (edits: readonly Edit[]): number => edits.filter(e => e.op !== "remove").length

function asPatches(edits: readonly Edit[], array: readonly Segment[]): Patch[] {
  return edits.map(({ op, index, value }) =>
    op === "remove" ? { op, path: [...array, index] } : { op, path: [...array, index], value },
  )
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
      if (this.length - n < this.written.size) for (let k = n; k < this.length; k++) this.written.delete(k)
      else for (const k of [...this.written.keys()]) if (k >= n) this.written.delete(k)
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
  rewrite(patches: readonly Patch[], start: number, end: number, dirty: Set<number>): Patch[] | undefined {
    const count = end - start
    const edits = shortestEdits(this.base, this.length, this.written, count, dirty, count)
    // never none: a batch that changes nothing still makes a version on the server
    if (!edits?.length) return undefined
    // fewer patches, or as many carrying fewer values (a removal for a replace)
    let values = 0
    for (let k = start; k < end; k++) {
      const { op, path } = patches[k]!
      if (op !== "remove" && path[path.length - 1] !== "length") values++
    }
    if (edits.length === count && carrying(edits) >= values) return undefined
    return asPatches(edits, patches[start]!.path.slice(0, -1))
  }
}

const MINUS_ZERO = Symbol("-0")
/** A Map key equal exactly for interchangeable values (Map's SameValueZero merges 0 and -0). */
const key = (value: unknown): unknown => (Object.is(value, -0) ? MINUS_ZERO : value)

/**
 * Index edits turning `base` into the array a cascade makes (`length` elements: `written[k]` where
 * written, else `base[k]`), or undefined if too costly or more than `limit` (by default: fewer than
 * `budget`, shorter than the run). `dirty` indexes of `base` hold elements changed since (by
 * earlier patches, in place): they are never matched, so never moved (undefined if one would be).
 * Without `moves`, undefined is returned too when an edit would re-send an element of `base`.
 * `budget`, the run's patch count, bounds the elements read beyond those named: a common prefix and
 * suffix are kept, and only the middle between them is diffed, greedily.
 */
function shortestEdits(
  base: readonly unknown[],
  length: number,
  written: Map<number, unknown>,
  budget: number,
  dirty: Set<number>,
  limit = budget - 1,
  moves = true,
): Edit[] | undefined {
  const n = base.length
  const m = length
  const shorter = Math.min(n, m)
  const order = [...written.keys()].sort((a, b) => a - b)
  // an unwritten index below `length` was never cut off, so it holds the base's element
  const at = (k: number): unknown => (written.has(k) ? written.get(k) : base[k])
  /** Whether the result's element `k` is the base's element `q`. */
  const same = (k: number, q: number): boolean =>
    !dirty.has(q) && (written.has(k) || !dirty.has(k)) && Object.is(at(k), base[q])

  // common prefix: unwritten indexes below `shorter` hold the base's elements
  let p = shorter
  for (const k of order) {
    if (k >= shorter || !same(k, k)) {
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
    if (!same(i, q)) break
    i--
    q--
    s++
  }
  const oldN = n - s - p
  const newN = m - s - p
  if (oldN + newN > 2 * budget + 2) return undefined
  for (let k = p; k < p + newN && dirty.size; k++) if (!written.has(k) && dirty.has(k)) return undefined
  // a changed element matches nothing: a fresh object stands for it
  const old = base.slice(p, p + oldN).map((v, t) => (dirty.has(p + t) ? {} : v))
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
      if (!moves && inOld.has(fresh[b])) return undefined // an element of the base re-sent: moved
      edits.push({ op: action, index: pos, value: fresh[b] })
      b++
      pos++
      if (action === "replace") a++
    }
    if (edits.length > limit) return undefined // no need to finish
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

  has(value: unknown): boolean {
    return this.where.has(key(value))
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
