// Concurrent edits by real Immer recipes, for the rebase property (tests/test_rebase.py). No server.
//
//   node concurrent_recipes.mjs [--package immer|immer9] [--seed 1] [--scenarios 200]
//
// Each scenario is a list of gifts that carry ids, and several users who each run one recipe with
// `produceWithPatches` on the SAME base state, as users who edit at the same moment do: add a
// gift (push, unshift or splice into the middle), remove a gift (splice, or filter by
// assignment), set a field of a gift, all found BY ID inside the recipe, one to three steps per
// recipe. Prints one JSON line per scenario:
//   {"type": "scenario", "base": [...gifts], "users": [{"patches": [...], "intents": [...]}]}
// where an intent is ["insert", id, prev_id|null, next_id|null], ["remove", id] or
// ["set", id, field, value], in the order the recipe made them.

import { chance, emit, int, loadImmer, makeRng, parseArgs, pick, wire } from "./lib.mjs"

const args = parseArgs(process.argv.slice(2), { package: "immer", seed: "1", scenarios: "200" })
const { immer } = loadImmer(args.package)
const rng = makeRng(Number(args.seed))
let nextId = 1

const gift = () => ({ id: `g${nextId++}`, name: "gift", reservedBy: null, note: "" })
const FIELDS = ["reservedBy", "note"]

function recipeFor(user, base) {
  const steps = []
  let ids = base.map((g) => g.id)
  for (let k = 0, n = 1 + int(rng, 3); k < n; k++) {
    const kind = pick(rng, ids.length ? ["push", "unshift", "insert", "remove", "filter", "set"] : ["push", "unshift"])
    if (kind === "remove" || kind === "filter" || kind === "set") {
      const id = pick(rng, ids)
      if (kind === "set") steps.push({ kind, id, field: pick(rng, FIELDS), value: `u${user}-${nextId++}` })
      else {
        steps.push({ kind, id })
        ids = ids.filter((x) => x !== id)
      }
    } else {
      const g = gift()
      const at = kind === "push" ? ids.length : kind === "unshift" ? 0 : int(rng, ids.length + 1)
      steps.push({ kind, gift: g, at })
      ids = [...ids.slice(0, at), g.id, ...ids.slice(at)]
    }
  }
  const intents = []
  const recipe = (draft) => {
    for (const step of steps) {
      const list = draft.gifts
      if (step.kind === "set") {
        list.find((g) => g.id === step.id)[step.field] = step.value
        intents.push(["set", step.id, step.field, step.value])
      } else if (step.kind === "remove") {
        list.splice(list.findIndex((g) => g.id === step.id), 1)
        intents.push(["remove", step.id])
      } else if (step.kind === "filter") {
        draft.gifts = list.filter((g) => g.id !== step.id)
        intents.push(["remove", step.id])
      } else {
        const prev = step.at > 0 ? list[step.at - 1].id : null
        const next = step.at < list.length ? list[step.at].id : null
        if (step.kind === "push") list.push(step.gift)
        else if (step.kind === "unshift") list.unshift(step.gift)
        else list.splice(step.at, 0, step.gift)
        intents.push(["insert", step.gift.id, prev, next])
      }
    }
  }
  return { recipe, intents }
}

for (let s = 0; s < Number(args.scenarios); s++) {
  const gifts = Array.from({ length: int(rng, 8) }, gift)
  const base = immer.freeze({ gifts }, true)
  const users = []
  for (let u = 0, n = 2 + int(rng, 4); u < n; u++) {
    const { recipe, intents } = recipeFor(u, gifts)
    const [, patches] = immer.produceWithPatches(base, recipe)
    users.push({ patches: wire(patches), intents })
  }
  emit({ type: "scenario", base: wire(gifts), users, filterByAssignment: chance(rng, 0) })
}
