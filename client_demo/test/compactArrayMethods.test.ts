// enableArrayMethods is global to the immer module, so it gets its own file (vitest isolates files)
import * as immer11 from "immer"
import { describe, expect, it } from "vitest"
import { compactPatches } from "../src/lib/compact"
import { checkRandomRecipes } from "./compactCases"
import type { ImmerApi } from "./compactCases"

immer11.enablePatches()
immer11.enableArrayMethods()
const immer = immer11 as unknown as ImmerApi

describe("compactPatches with immer 11 and enableArrayMethods", () => {
  it("turns deleting the first of 10,000 gifts into one remove", () => {
    const base = { gifts: Array.from({ length: 10_000 }, (_, id) => ({ id })) }
    const [after, patches, inverse] = immer.produceWithPatches(base, d => void d.gifts.splice(0, 1))
    expect(patches.length).toBe(10_000)
    expect(compactPatches(base, patches)).toEqual([{ op: "remove", path: ["gifts", 0] }])
    expect(compactPatches(after, inverse)).toEqual([{ op: "add", path: ["gifts", 0], value: base.gifts[0] }])
  })

  it("compacts random recipes to equivalent patches, inverse patches included", () => {
    const totals = checkRandomRecipes(immer, 2, 400)
    expect(totals.compacted).toBeLessThan(totals.patches / 2)
    expect(totals.compactedInverse).toBeLessThan(totals.inverse / 2)
  })
})
