// Random JSON-safe documents and random Immer recipes, deterministic from a PRNG.
//
// `immerBatches(immer, makeRng, seed, steps)` yields the batches of one seed: a first root
// replace, then `produceWithPatches(state, recipe)` for random recipes. `randomRecipe` returns
// a recipe that
// performs 1-4 random mutations the way application code would: object members set, replaced,
// deleted or set to undefined; arrays pushed, popped, shifted, unshifted, spliced, sorted,
// reversed, truncated through `length`, elements set to (or inserted as) undefined; subtrees
// replaced, moved or copied; keys that need escaping in JSON Pointer ("a/b", "m~n", "~1"), keys
// that look like indexes or like "-" and "length", unicode; and now and then a recipe that
// returns a brand-new root (an object, an array or a primitive).
//
// Not generated: sparse arrays (growing `length`, writing past the end). They are not JSON
// documents, and Immer itself does not replay them: e.g. `a.length = 2; a.length = 4` on a
// 4-element array yields a single `add` at a path that does not exist (immer 9 and 11), and
// with enableArrayMethods `pop()` then `a.length = n + 1` yields no patch at all.
//
// Run standalone (`node mutations.mjs [seeds] [steps] [first-seed]`) to check the generator
// against Immer itself, with no server: every batch must replay with Immer's own applyPatches
// after a JSON round trip (what the wire delivers), for immer 11 (with and without
// enableArrayMethods) and immer 9.

import { chance, int, pick, wire } from "./lib.mjs"

export const WEIRD_KEYS = [
  "a/b", "m~n", "", "-", "0", "1", "10", "~1", "~0", "~", "/", "~01", "a~1b", "length",
  "a.b", "$ref", "null", "true", " ", "key with spaces", "ü", "键", "🙂", "\u0000", "tab\t",
  'quote"', "back\\slash", "é", "e\u0301", "\u2028",
]

const STRINGS = [
  "", "x", "hello", "a/b", "~1", "-", "0", "🙂🎁", "ünïcödé", "中文", "line\nbreak", 'q"uote',
  "back\\slash", "\u0000nul", "emoji 👩‍👩‍👧", "\u2028", "null", "  ",
]

const NUMBERS = [
  0, 1, -1, 2, 7, 42, -17, 255, 1000, 65536, 2 ** 31, -(2 ** 31), 2 ** 53 - 1, -(2 ** 53 - 1),
  0.5, -1.25, 3.14159, 1e-7, 1e21, 6.02e23, 1.7976931348623157e308, 5e-324, 0.1, 123.456,
]

/** Object keys a recipe may write: weird ones, plus plain ones so objects grow. */
function randomKey(rng) {
  return chance(rng, 0.5) ? pick(rng, WEIRD_KEYS) : `k${int(rng, 12)}`
}

function randomPrimitive(rng) {
  const r = rng()
  if (r < 0.1) return null
  if (r < 0.2) return chance(rng, 0.5)
  if (r < 0.55) return pick(rng, NUMBERS)
  if (r < 0.65) return int(rng, 1000)
  return pick(rng, STRINGS)
}

/** A random JSON value; `depth` bounds nesting. Object members may hold `undefined`. */
export function randomValue(rng, depth = 3, containerBias = 0.35) {
  if (depth <= 0 || !chance(rng, containerBias)) return randomPrimitive(rng)
  return chance(rng, 0.5) ? randomArray(rng, depth) : randomObject(rng, depth)
}

function randomArray(rng, depth) {
  const out = []
  const n = int(rng, 5)
  for (let i = 0; i < n; i++) out.push(randomValue(rng, depth - 1))
  return out
}

function randomObject(rng, depth) {
  const out = {}
  const n = int(rng, 5)
  for (let i = 0; i < n; i++) out[randomKey(rng)] = chance(rng, 0.05) ? undefined : randomValue(rng, depth - 1)
  return out
}

/** A document to start from: always an object with a few containers in it. */
export function randomDocument(rng) {
  const doc = {}
  const n = 2 + int(rng, 5)
  for (let i = 0; i < n; i++) doc[randomKey(rng)] = randomValue(rng, 4, 0.7)
  doc.list = randomArray(rng, 3)
  doc.nested = { items: randomArray(rng, 3), meta: randomObject(rng, 2) }
  return doc
}

const isContainer = v => typeof v === "object" && v !== null

/** Keys of `node` under which a child container sits. Reading through a draft is harmless. */
function containerKeys(node) {
  if (Array.isArray(node)) {
    const keys = []
    for (let i = 0; i < node.length; i++) if (isContainer(node[i])) keys.push(i)
    return keys
  }
  return Object.keys(node).filter(k => isContainer(node[k]))
}

/** Walk down from `root` to a random container; returns it and its path. */
function randomContainer(rng, root) {
  let node = root
  const path = []
  for (let depth = 0; depth < 8; depth++) {
    const keys = containerKeys(node)
    if (!keys.length || chance(rng, 0.3)) break
    const key = pick(rng, keys)
    node = node[key]
    path.push(key)
  }
  return { node, path }
}

const isPrefix = (prefix, path) => prefix.length <= path.length && prefix.every((s, i) => s === path[i])

/** A sort comparator that is total over JSON values (drafts included) and deterministic. */
function compareValues(a, b) {
  const rank = v => (v === undefined ? 0 : v === null ? 1 : typeof v === "boolean" ? 2 : typeof v === "number" ? 3 : typeof v === "string" ? 4 : Array.isArray(v) ? 5 : 6)
  const ra = rank(a)
  const rb = rank(b)
  if (ra !== rb) return ra - rb
  if (ra === 3 || ra === 2) return Number(a) - Number(b)
  if (ra === 4) return a < b ? -1 : a > b ? 1 : 0
  if (ra === 5) return a.length - b.length
  if (ra === 6) return Object.keys(a).length - Object.keys(b).length
  return 0
}

function mutateArray(rng, arr, api) {
  const len = arr.length
  const i = len ? int(rng, len) : 0
  const r = int(rng, 17)
  switch (r) {
    case 0: arr.push(randomValue(rng, 2)); return "push"
    case 1: arr.push(randomValue(rng, 1), randomValue(rng, 1)); return "push2"
    case 2: arr.pop(); return "pop"
    case 3: arr.shift(); return "shift"
    case 4: arr.unshift(randomValue(rng, 2)); return "unshift"
    case 5: arr.splice(i, int(rng, 3), ...Array.from({ length: int(rng, 3) }, () => randomValue(rng, 2))); return "splice"
    case 6: arr.sort(compareValues); return "sort"
    case 7: arr.reverse(); return "reverse"
    case 8: if (len) arr[i] = randomValue(rng, 2); return "set-index"
    case 9: if (len) arr[i] = undefined; return "set-undefined"
    case 10: if (len) delete arr[i]; return "delete-index"
    case 11: arr.length = int(rng, len + 1); return "truncate"
    case 12: arr.push(undefined); return "push-undefined"
    case 13: arr[len] = randomValue(rng, 2); return "set-end"
    case 14: arr.splice(i, 0, undefined); return "insert-undefined"
    case 15: { // move an element to another position
      if (len < 2) return "noop"
      const [item] = arr.splice(i, 1)
      arr.splice(int(rng, arr.length + 1), 0, item)
      return "move-element"
    }
    default: { // mutate an element in place, then shift the array under it
      if (len && isContainer(arr[i])) {
        api.mutateNode(arr[i])
        if (chance(rng, 0.5)) arr.shift()
        else arr.unshift(randomPrimitive(rng))
        return "mutate-then-shift"
      }
      arr.splice(i, 1)
      return "remove-one"
    }
  }
}

function mutateObject(rng, obj) {
  const keys = Object.keys(obj)
  const existing = keys.length && chance(rng, 0.6) ? pick(rng, keys) : randomKey(rng)
  const r = int(rng, 8)
  switch (r) {
    case 0:
    case 1: obj[existing] = randomPrimitive(rng); return "set"
    case 2: obj[existing] = randomValue(rng, 3, 0.8); return "replace-subtree"
    case 3: delete obj[existing]; return "delete"
    case 4: obj[existing] = undefined; return "set-undefined"
    case 5: obj[randomKey(rng)] = randomValue(rng, 2); return "add"
    case 6: { // rename a member
      if (!keys.length) return "noop"
      const from = pick(rng, keys)
      const to = randomKey(rng)
      if (from === to) return "noop"
      const value = obj[from]
      delete obj[from]
      obj[to] = value
      return "rename"
    }
    default: // overwrite with the same value: no patch expected
      if (keys.length) obj[existing] = obj[existing]
      return "same-value"
  }
}

/**
 * Returns { recipe, description }. `immer` is the module (for `current`); `options.arrayMethods`
 * says whether its enableArrayMethods plugin is on. The description lists the operations the
 * recipe performs; it is filled in while the recipe runs.
 */
export function randomRecipe(rng, state, immer, options = {}) {
  const description = []
  const rootIsContainer = isContainer(state)
  if (!rootIsContainer || chance(rng, 0.02)) {
    const r = rng()
    const value = r < 0.7 ? randomDocument(rng) : r < 0.85 ? randomArray(rng, 3) : randomPrimitive(rng)
    description.push("return-new-root")
    return { recipe: () => value, description }
  }
  const count = 1 + int(rng, 4)
  const recipe = draft => {
    const api = {
      mutateNode: node => {
        if (Array.isArray(node)) description.push(mutateArray(rng, node, api))
        else description.push(mutateObject(rng, node))
      },
    }
    for (let n = 0; n < count; n++) {
      const target = randomContainer(rng, draft)
      const r = rng()
      if (r < 0.08) {
        // move or copy a subtree into another container (never into itself)
        const source = randomContainer(rng, draft)
        if (source.path.length === 0 || isPrefix(source.path, target.path)) continue
        const key = Array.isArray(target.node) ? target.node.length : randomKey(rng)
        if (chance(rng, 0.5)) {
          // a plain, unfrozen deep copy (`current` shares unmodified frozen subtrees)
          target.node[key] = wire(immer.isDraft(source.node) ? immer.current(source.node) : source.node)
          description.push("copy-subtree")
        } else {
          const parent = source.path.slice(0, -1).reduce((node, seg) => node[seg], draft)
          const last = source.path[source.path.length - 1]
          // Immer 11.2 with enableArrayMethods leaves a revoked proxy in the result when a
          // draft spliced out of an array is put into a new (non-draft) object in that array:
          // there, move a copy instead
          const copy = options.arrayMethods && !immer.isDraft(target.node) && immer.isDraft(source.node)
          const moved = copy ? wire(immer.current(source.node)) : source.node
          if (Array.isArray(parent)) parent.splice(last, 1)
          else delete parent[last]
          target.node[key] = moved // a detached draft stays valid: Immer finalizes it in place
          description.push(copy ? "move-subtree-copy" : "move-subtree")
        }
        continue
      }
      api.mutateNode(target.node)
    }
  }
  return { recipe, description }
}

/**
 * Count the features a batch exercises, against the JSON document it applies to (what the
 * server sees): the test asserts the interesting ones did occur, so a generator change cannot
 * quietly stop covering them. `applyOne(state, patch)` applies a single patch.
 */
export function countFeatures(counts, before, patches, applyOne) {
  const bump = name => (counts[name] = (counts[name] ?? 0) + 1)
  let state = before
  for (const patch of patches) {
    bump(`op:${patch.op}`)
    const { path } = patch
    if (path.length === 0) {
      bump(isContainer(patch.value) && !Array.isArray(patch.value) ? "root-replace-object" : "root-replace-other")
    } else {
      let parent = state
      for (const seg of path.slice(0, -1)) parent = parent?.[seg]
      const last = path[path.length - 1]
      const hasValue = "value" in patch
      if (Array.isArray(parent)) {
        if (last === "length") bump("array-length")
        else if (!hasValue && patch.op !== "remove") bump("array-element-without-value")
      } else if (isContainer(parent)) {
        const present = Object.prototype.hasOwnProperty.call(parent, last)
        if (!hasValue && patch.op !== "remove") bump(`member-${patch.op}-without-value`)
        if (!present && patch.op === "replace") bump("replace-absent-member")
        if (!present && patch.op === "remove") bump("remove-absent-member")
        if (present && patch.op === "add") bump("add-present-member")
      }
    }
    for (const seg of path) {
      if (typeof seg !== "string") continue
      if (/[~/]/.test(seg)) bump("key-needing-escape")
      if (/^(\d+|-|)$/.test(seg)) bump("key-like-index-or-empty")
      if (/[^\x00-\x7f]/.test(seg)) bump("non-ascii-key")
    }
    state = applyOne(state, patch)
  }
}

/** Serialized size, used to keep documents bounded. */
export const sizeOf = state => (state === undefined ? 0 : JSON.stringify(state).length)

const MAX_DOC_CHARS = 6000 // beyond this the next batch returns a fresh, smaller document

/**
 * The batches of one seed: `{ step, description, before, after, patches }` for steps 0..steps,
 * all with at least one patch (a recipe that changes nothing is drawn again). Step 0 sets the
 * first document the way Immer does when a recipe returns a new value: a root replace.
 * `before`, `after` and `patches` are JSON-normalized (what a wire delivers); `check` is false
 * when Immer's own applyPatches does not turn `before` into `after` with `patches` (or throws):
 * then the batch is Immer's problem, not the server's.
 */
export function* immerBatches(immer, makeRng, seed, steps, { start = {}, ...options } = {}) {
  const rng = makeRng(seed)
  let state = start
  let step = 0
  for (let attempt = 0; step <= steps; attempt++) {
    if (attempt > 4 * steps + 10) throw new Error(`seed ${seed}: the recipes keep changing nothing`)
    const { recipe, description } =
      step === 0 || sizeOf(state) > MAX_DOC_CHARS
        ? { recipe: () => randomDocument(rng), description: ["return-new-root"] }
        : randomRecipe(rng, state, immer, options)
    let next, patches, before, after
    try {
      ;[next, patches] = immer.produceWithPatches(state, recipe)
      if (patches.length === 0) {
        state = next
        continue
      }
      before = wire(state)
      after = wire(next)
      patches = wire(patches)
    } catch (err) {
      // e.g. a revoked draft left in the result: Immer's bug, reported with what led to it
      yield { step, description, before: wire(state), error: String(err), check: false }
      return
    }
    let check
    try {
      check = jsonEqualWire(immer.applyPatches(before, patches), after)
    } catch {
      check = false
    }
    yield { step, description, before, after, patches, check }
    state = next
    step++
  }
}

const jsonEqualWire = (a, b) => JSON.stringify(sortKeys(wire(a))) === JSON.stringify(sortKeys(b))
function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys)
  if (!isContainer(value)) return value
  return Object.fromEntries(Object.keys(value).sort().map(k => [k, sortKeys(value[k])]))
}

// -- standalone self-check -------------------------------------------------------------------

async function selfCheck() {
  const { loadImmer, makeRng, emit } = await import("./lib.mjs")
  const seeds = Number(process.argv[2] ?? 20)
  const steps = Number(process.argv[3] ?? 500)
  const first = Number(process.argv[4] ?? 1)
  let failures = 0
  for (const [name, arrayMethods] of [["immer", false], ["immer", true], ["immer9", false]]) {
    const { immer } = loadImmer(name, { arrayMethods })
    const counts = {}
    let patchCount = 0
    for (let seed = first; seed < first + seeds; seed++) {
      for (const batch of immerBatches(immer, makeRng, seed, steps, { arrayMethods })) {
        if (!batch.check) {
          failures++
          emit({ type: "immer_inconsistent", package: name, arrayMethods, seed, ...batch })
          break
        }
        for (const d of batch.description) counts[d] = (counts[d] ?? 0) + 1
        patchCount += batch.patches.length
      }
    }
    emit({ type: "selfcheck", package: name, arrayMethods, seeds, steps, patches: patchCount, operations: counts })
  }
  process.exit(failures ? 1 : 0)
}

if (import.meta.url === `file://${process.argv[1]}`) await selfCheck()
