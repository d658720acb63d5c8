/**
 * Random array-heavy recipes for the compaction tests, deterministic from a seed, and the check
 * every batch must pass: the compacted patches (and the compacted inverse patches) lead where
 * Immer's own lead, with real Immer applying them.
 */
import type { Patch } from "immer"
import { expect } from "vitest"
import { compactPatches } from "../src/lib/compact"

/** What the tests need of an Immer build (immer 11 and the immer9 alias differ in their types). */
export interface ImmerApi {
  produceWithPatches<T>(base: T, recipe: (draft: T) => void): readonly [T, Patch[], Patch[]]
  applyPatches<T>(base: T, patches: readonly Patch[]): T
}

export interface Gift {
  id: number
  name: string
  tags: (string | number)[]
}

export interface State {
  gifts: Gift[]
  numbers: number[]
  nested: { lists: Gift[][]; matrix: number[][] }
}

/** mulberry32: a tiny seeded PRNG returning floats in [0, 1). */
export function makeRng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export class Cases {
  private nextId = 1000
  private readonly rng: () => number

  constructor(seed: number) {
    this.rng = makeRng(seed)
  }

  int(n: number): number {
    return Math.floor(this.rng() * n)
  }

  chance(p: number): boolean {
    return this.rng() < p
  }

  gift(): Gift {
    return { id: this.nextId++, name: `gift ${this.int(100)}`, tags: this.chance(0.3) ? ["a", this.int(3)] : [] }
  }

  state(): State {
    const gifts = (n: number) => Array.from({ length: n }, () => this.gift())
    const numbers = (n: number) => Array.from({ length: n }, () => this.int(4)) // duplicates
    return {
      gifts: gifts(this.chance(0.3) ? 30 + this.int(30) : this.int(12)),
      numbers: numbers(this.int(8)),
      nested: { lists: [gifts(this.int(5)), gifts(this.int(3))], matrix: [numbers(this.int(5)), numbers(this.int(5))] },
    }
  }

  /** A recipe of 1-3 array mutations; `description` fills in as it runs. */
  recipe(description: string[]): (draft: State) => void {
    const count = 1 + this.int(3)
    return draft => {
      for (let n = 0; n < count; n++) {
        const r = this.int(6)
        if (r === 0) this.mutate(draft.numbers, () => this.int(9), description)
        else if (r === 1) this.mutate(draft.nested.matrix[this.int(2)] ?? [], () => this.int(9), description)
        else if (r === 2) this.mutate(draft.nested.lists[this.int(2)] ?? [], () => this.gift(), description)
        else if (r === 3 && draft.nested.matrix.length > 1) {
          draft.nested.matrix.reverse() // an array of arrays moved around
          description.push("reverse-matrix")
        } else this.mutate(draft.gifts, () => this.gift(), description)
      }
    }
  }

  private mutate<T>(arr: T[], fresh: () => T, description: string[]): void {
    const len = arr.length
    const i = len ? this.int(len) : 0
    const kind = this.int(14)
    description.push(String(kind))
    switch (kind) {
      case 0: arr.push(fresh()); break
      case 1: arr.pop(); break
      case 2: arr.shift(); break
      case 3: arr.unshift(fresh(), ...(this.chance(0.3) ? [fresh()] : [])); break
      case 4:
      case 5: arr.splice(i, this.int(4), ...Array.from({ length: this.int(4) }, fresh)); break
      case 6: { // filter by assignment: keep some, then cut the length
        let w = 0
        for (let r = 0; r < arr.length; r++) if (this.chance(0.7)) arr[w++] = arr[r]!
        arr.length = w
        break
      }
      case 7: arr.sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1)); break
      case 8: arr.reverse(); break
      case 9: { // move one element elsewhere
        if (len < 2) break
        const [item] = arr.splice(i, 1)
        arr.splice(this.int(arr.length + 1), 0, item!)
        break
      }
      case 10: { // edit an element, then shift the array under it
        const item = arr[i]
        if (item !== null && typeof item === "object") {
          const gift = item as unknown as Gift
          gift.name = `edited ${this.int(100)}`
          if (this.chance(0.5)) gift.tags.push("t")
        }
        if (this.chance(0.5)) arr.shift()
        else arr.splice(this.int(i + 1), 0, fresh())
        break
      }
      case 11: if (len) arr[i] = fresh(); break
      case 12: arr.splice(i, 0, ...Array.from({ length: 1 + this.int(3) }, fresh)); break
      default: arr.splice(0, 1 + this.int(2)) // the head removed
    }
  }
}

const wire = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T

export interface Totals {
  batches: number
  patches: number
  compacted: number
  inverse: number
  compactedInverse: number
}

/** Run `count` random recipes with `immer`; every batch must compact to an equivalent one. */
export function checkRandomRecipes(immer: ImmerApi, seed: number, count: number): Totals {
  const cases = new Cases(seed)
  const totals: Totals = { batches: 0, patches: 0, compacted: 0, inverse: 0, compactedInverse: 0 }
  let state = cases.state()
  for (let n = 0; n < count; n++) {
    if (JSON.stringify(state).length > 12_000 || cases.chance(0.1)) state = cases.state()
    const description: string[] = []
    const [after, patches, inverse] = immer.produceWithPatches(state, cases.recipe(description))
    const where = `seed ${seed}, batch ${n}: ${description.join(",")}`
    const compacted = compactPatches(state, patches)
    expect(compacted.length, where).toBeLessThanOrEqual(patches.length)
    expect(immer.applyPatches(state, compacted), where).toEqual(after)
    // what the server receives: the same patches over JSON
    expect(immer.applyPatches(wire(state), wire(compacted)), where).toEqual(wire(after))
    const undo = compactPatches(after, inverse)
    expect(undo.length, where).toBeLessThanOrEqual(inverse.length)
    expect(immer.applyPatches(after, undo), where).toEqual(state)
    totals.batches++
    totals.patches += patches.length
    totals.compacted += compacted.length
    totals.inverse += inverse.length
    totals.compactedInverse += undo.length
    state = after
  }
  return totals
}
