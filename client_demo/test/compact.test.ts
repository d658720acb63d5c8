import * as immer11 from "immer"
import type { Patch } from "immer"
import * as immer9 from "immer9"
import { describe, expect, it } from "vitest"
import { compactPatches } from "../src/lib/compact"
import { Replica } from "../src/lib/replica"
import { checkRandomRecipes } from "./compactCases"
import type { ImmerApi } from "./compactCases"

immer11.enablePatches()
immer9.enablePatches()

const builds: [string, ImmerApi][] = [
  ["immer 11", immer11 as unknown as ImmerApi],
  ["immer 9.0.21", immer9 as unknown as ImmerApi],
]

interface Gift {
  id: number
  name: string
}
const gifts = (n: number): Gift[] => Array.from({ length: n }, (_, id) => ({ id, name: `gift ${id}` }))

describe.each(builds)("compactPatches with %s", (_, immer) => {
  const run = <T>(base: T, recipe: (draft: T) => void) => {
    const [after, patches, inverse] = immer.produceWithPatches(base, recipe)
    const compacted = compactPatches(base, patches)
    const undo = compactPatches(after, inverse)
    expect(immer.applyPatches(base, compacted)).toEqual(after)
    expect(immer.applyPatches(after, undo)).toEqual(base)
    return { patches, compacted, undo }
  }

  it("turns deleting the first of 10,000 gifts into one remove, and its undo into one add", () => {
    const base = { gifts: gifts(10_000) }
    const { patches, compacted, undo } = run(base, d => void d.gifts.splice(0, 1))
    expect(patches.length).toBe(10_000)
    expect(compacted).toEqual([{ op: "remove", path: ["gifts", 0] }])
    expect(JSON.stringify(compacted).length).toBeLessThan(100)
    expect(undo).toEqual([{ op: "add", path: ["gifts", 0], value: base.gifts[0] }])
  })

  it("turns an unshift into one add", () => {
    const base = { gifts: gifts(1000) }
    const fresh = { id: -1, name: "new" }
    const { compacted, undo } = run(base, d => void d.gifts.unshift(fresh))
    expect(compacted).toEqual([{ op: "add", path: ["gifts", 0], value: fresh }])
    expect(undo).toEqual([{ op: "remove", path: ["gifts", 0] }])
  })

  it("turns splice(5, 2, x) into a replace and a remove", () => {
    const base = gifts(10)
    const x = { id: -1, name: "x" }
    const { compacted, undo } = run(base, d => void d.splice(5, 2, x))
    expect(compacted).toEqual([
      { op: "replace", path: [5], value: x },
      { op: "remove", path: [6] },
    ])
    expect(undo).toEqual([
      { op: "replace", path: [5], value: base[5] },
      { op: "add", path: [6], value: base[6] },
    ])
  })

  it("removes scattered elements one by one", () => {
    const base = { list: gifts(20) }
    const { compacted } = run(base, d => {
      let w = 0
      for (const g of d.list) if (g.id % 7) d.list[w++] = g
      d.list.length = w
    })
    expect(compacted.map(p => `${p.op} ${p.path.join("/")}`)).toEqual(["remove list/0", "remove list/6", "remove list/12"])
  })

  it("leaves permutations and edited moved elements as Immer wrote them", () => {
    const base = { list: gifts(6) }
    const reversed = run(base, d => void d.list.reverse())
    expect(reversed.compacted).toBe(reversed.patches)
    const sorted = run(base, d => void d.list.sort((a, b) => b.id - a.id))
    expect(sorted.compacted.length).toBe(sorted.patches.length)
  })

  it("skips an array written earlier in the same batch", () => {
    const base = { list: gifts(5) }
    const patches: Patch[] = [
      { op: "replace", path: ["list", 1, "name"], value: "renamed" },
      ...[1, 2, 3, 4].map(k => ({ op: "replace" as const, path: ["list", k - 1], value: base.list[k] })),
      { op: "remove", path: ["list", 4] },
    ]
    expect(compactPatches(base, patches)).toBe(patches)
    // without the first patch the run compacts
    expect(compactPatches(base, patches.slice(1))).toEqual([{ op: "remove", path: ["list", 0] }])
  })

  it("compacts random recipes to equivalent patches, inverse patches included", () => {
    const totals = checkRandomRecipes(immer, 1, 400)
    expect(totals.compacted).toBeLessThan(totals.patches / 2)
    expect(totals.compactedInverse).toBeLessThan(totals.inverse / 2)
  })
})

describe("the replica", () => {
  it("sends compacted patches, also after a rebase", () => {
    let ids = 0
    const base = { gifts: gifts(100), other: 0 }
    const replica = new Replica(base, 1, "e", () => `c${++ids}`, () => undefined)
    replica.local(d => void d.gifts.splice(0, 1))
    expect(replica.nextToSend()?.patches).toEqual([{ op: "remove", path: ["gifts", 0] }])
    // a remote batch arrives before the ack: the pending change is re-run on top of it
    replica.local(d => void d.gifts.unshift({ id: -1, name: "new" }))
    expect(replica.remote(2, [{ op: "replace", path: ["other"], value: 1 }])).toBe(true)
    expect(replica.acknowledge("c1", 3)).toBe("settled")
    expect(replica.nextToSend()?.patches).toEqual([{ op: "add", path: ["gifts", 0], value: { id: -1, name: "new" } }])
  })
})
