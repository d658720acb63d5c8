// Real Immer batches for the array compaction tests (tests/test_compact.py), no server.
//
//   node compact_cases.mjs [--package immer|immer9] [--array-methods] [--seed 1] [--cases 400]
//
// Prints one JSON line per batch, `{"type": "case", before, patches, after, description}`
// (JSON-normalized, what a wire delivers): half from array-heavy recipes over lists of gifts
// (push, pop, shift, unshift, splice anywhere with any counts, in-place filter, sort, reverse,
// moves, edits inside elements that then move, nested arrays, several arrays in one recipe),
// half from the general random recipes of mutations.mjs. Then one `{"type": "big"}` line: the
// first of 10,000 gifts deleted. Only batches that Immer itself replays are printed.

import { chance, emit, int, jsonEqual, loadImmer, makeRng, parseArgs, pick, wire } from "./lib.mjs"
import { immerBatches } from "./mutations.mjs"

const args = parseArgs(process.argv.slice(2), { package: "immer", "array-methods": false, seed: "1", cases: "400" })
const { immer } = loadImmer(args.package, { arrayMethods: args["array-methods"] })
const rng = makeRng(Number(args.seed))
const CASES = Number(args.cases)
let nextId = 1000

const gift = () => ({ id: nextId++, name: `gift ${int(rng, 100)}`, tags: chance(rng, 0.3) ? ["a", int(rng, 3)] : [] })
const giftList = n => Array.from({ length: n }, gift)

function randomState() {
  return {
    gifts: giftList(int(rng, 12)),
    numbers: Array.from({ length: int(rng, 8) }, () => int(rng, 4)), // duplicates
    nested: { lists: [giftList(int(rng, 5)), Array.from({ length: int(rng, 5) }, () => int(rng, 9))] },
  }
}

function mutate(arr, description) {
  const len = arr.length
  const i = len ? int(rng, len) : 0
  const fresh = () => (typeof arr[0] === "number" ? int(rng, 9) : gift())
  switch (int(rng, 13)) {
    case 0: arr.push(fresh()); return description.push("push")
    case 1: arr.pop(); return description.push("pop")
    case 2: arr.shift(); return description.push("shift")
    case 3: arr.unshift(fresh(), ...(chance(rng, 0.3) ? [fresh()] : [])); return description.push("unshift")
    case 4:
    case 5: {
      const inserted = Array.from({ length: int(rng, 4) }, fresh)
      arr.splice(i, int(rng, 4), ...inserted)
      return description.push("splice")
    }
    case 6: { // filter in place: keep some, then cut the length
      let w = 0
      for (let r = 0; r < arr.length; r++) if (chance(rng, 0.7)) arr[w++] = arr[r]
      arr.length = w
      return description.push("filter-in-place")
    }
    case 7: arr.sort((a, b) => (typeof a === "number" ? a - b : a.name < b.name ? -1 : a.name > b.name ? 1 : 0)); return description.push("sort")
    case 8: arr.reverse(); return description.push("reverse")
    case 9: { // move one element elsewhere
      if (len < 2) return description.push("noop")
      const [item] = arr.splice(i, 1)
      arr.splice(int(rng, arr.length + 1), 0, item)
      return description.push("move")
    }
    case 10: { // edit an element, then shift the array under it
      if (len && typeof arr[i] === "object") {
        arr[i].name = `edited ${int(rng, 100)}`
        if (chance(rng, 0.5)) arr[i].tags.push("t")
        if (chance(rng, 0.5)) arr.shift()
        else arr.splice(int(rng, i + 1), 0, fresh())
        return description.push("edit-then-shift")
      }
      arr.splice(i, 1)
      return description.push("remove-one")
    }
    case 11: if (len) arr[i] = fresh(); return description.push("set-index")
    default: { // a larger list, its head removed
      if (len < 30) arr.push(...Array.from({ length: 40 }, fresh))
      arr.splice(0, 1 + int(rng, 2))
      return description.push("grow-and-shift")
    }
  }
}

function arrayRecipe() {
  const description = []
  const count = 1 + int(rng, 3)
  const recipe = draft => {
    for (let n = 0; n < count; n++) {
      const r = int(rng, 5)
      const arr = r === 0 ? draft.numbers : r === 1 ? pick(rng, draft.nested.lists) : draft.gifts
      mutate(arr, description)
    }
  }
  return { recipe, description }
}

let printed = 0
let state = randomState()
for (let attempt = 0; printed < Math.ceil(CASES / 2) && attempt < CASES * 10; attempt++) {
  if (JSON.stringify(state).length > 8000 || chance(rng, 0.1)) state = randomState()
  const { recipe, description } = arrayRecipe()
  const [next, patches] = immer.produceWithPatches(state, recipe)
  if (patches.length) {
    const before = wire(state)
    const after = wire(next)
    const sent = wire(patches)
    let replays = false
    try {
      replays = jsonEqual(wire(immer.applyPatches(before, sent)), after)
    } catch {}
    if (replays) {
      emit({ type: "case", description, before, patches: sent, after })
      printed++
    }
  }
  state = next
}
for (const batch of immerBatches(immer, makeRng, Number(args.seed), Math.floor(CASES / 2), { arrayMethods: args["array-methods"] })) {
  if (batch.check) emit({ type: "case", description: batch.description, before: batch.before, patches: batch.patches, after: batch.after })
}

const big = { gifts: Array.from({ length: 10_000 }, (_, i) => ({ id: i, name: `gift ${i}`, done: false })) }
const [after, patches] = immer.produceWithPatches(big, draft => void draft.gifts.splice(0, 1))
emit({ type: "big", before: big, patches: wire(patches), after: wire(after) })
