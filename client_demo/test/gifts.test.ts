import { enablePatches, produceWithPatches } from "immer"
import { describe, expect, it } from "vitest"
import { addGift, initialGifts, removeGift, resetGifts, toggleReservation } from "../src/gifts"
import type { GiftList } from "../src/gifts"
import type { Recipe } from "../src/lib/syncClient"

const list: GiftList = {
  gifts: [
    { id: "free", description: "Free", image: "" },
    { id: "mine", description: "Mine", image: "", reservedBy: 1 },
    { id: "theirs", description: "Theirs", image: "", reservedBy: 2 },
  ],
}

enablePatches()

const run = (state: GiftList, recipe: Recipe<GiftList>) => produceWithPatches(state, recipe)

describe("gift recipes", () => {
  it("reserves a free gift for me", () => {
    const [next, patches] = run(list, toggleReservation("free", 1))
    expect(next.gifts?.[0]?.reservedBy).toBe(1)
    expect(patches).toEqual([{ op: "add", path: ["gifts", 0, "reservedBy"], value: 1 }])
  })

  it("frees my reservation with a JSON-safe remove", () => {
    const [next, patches] = run(list, toggleReservation("mine", 1))
    expect(next.gifts?.[1]).not.toHaveProperty("reservedBy")
    expect(patches).toEqual([{ op: "remove", path: ["gifts", 1, "reservedBy"] }])
  })

  it("treats a null reservation (as a gift added over HTTP may have) as free", () => {
    const withNull: GiftList = { gifts: [{ id: "http", description: "Over HTTP", image: "", reservedBy: null }] }
    expect(run(withNull, toggleReservation("http", 3))[0].gifts?.[0]?.reservedBy).toBe(3)
  })

  it("leaves someone else's reservation and unknown gifts alone", () => {
    expect(run(list, toggleReservation("theirs", 1))[1]).toEqual([])
    expect(run(list, toggleReservation("gone", 1))[1]).toEqual([])
  })

  it("adds gifts, also to a document that has no list yet", () => {
    const gift = { id: "new", description: "New", image: "" }
    expect(run({}, addGift(gift))[0]).toEqual({ gifts: [gift] })
    expect(run(list, addGift(gift))[0].gifts).toHaveLength(4)
  })

  it("removes a gift by id wherever it is by then, and nothing when it is gone", () => {
    const recipe = removeGift("theirs")
    expect(run(list, recipe)[0].gifts?.map((gift) => gift.id)).toEqual(["free", "mine"])
    const moved: GiftList = { gifts: [list.gifts![2]!, list.gifts![0]!] } // re-run on newer state
    expect(run(moved, recipe)[0].gifts?.map((gift) => gift.id)).toEqual(["free"])
    expect(run({ gifts: [list.gifts![0]!] }, recipe)[1]).toEqual([])
    expect(run({}, recipe)[1]).toEqual([])
  })

  it("resets to the lesson's gifts", () => {
    expect(run(list, resetGifts)[0]).toEqual({ gifts: initialGifts })
    expect(initialGifts.map((gift) => gift.description)).toEqual([
      "Immer license",
      "Egghead.io subscription",
      "The Complete Circle Series",
    ])
  })
})
