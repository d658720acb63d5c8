/**
 * The shared gift list (the Immer course's immer-gifts data model) and the recipes that change it.
 * Recipes are pure: ids and other inputs are made by the caller, so a re-run does the same thing.
 */
import initialState from "../initial-state.json"
import type { Recipe } from "./lib/syncClient"

export interface Gift {
  readonly id: string
  readonly description: string
  /** Image URL; empty for none. */
  readonly image: string
  /** Id of the user who reserved it; absent (or null, as a gift added over HTTP may have) when free. */
  readonly reservedBy?: number | null
}

/** The shared document. `gifts` is absent on a server started without an initial state. */
export interface GiftList {
  readonly gifts?: readonly Gift[]
}

export const initialGifts: readonly Gift[] = initialState.gifts

export function addGift(gift: Gift): Recipe<GiftList> {
  return (draft) => {
    ;(draft.gifts ??= []).push({ ...gift })
  }
}

/** Reserves a free gift for `userId`, or frees it if `userId` holds it; others' stay untouched. */
export function toggleReservation(giftId: string, userId: number): Recipe<GiftList> {
  return (draft) => {
    const gift = draft.gifts?.find((candidate) => candidate.id === giftId)
    if (!gift) return
    if (gift.reservedBy == null) gift.reservedBy = userId
    else if (gift.reservedBy === userId) delete gift.reservedBy
  }
}

/** Removes the gift with id `giftId`, wherever it is by then (a no-op if it is already gone). */
export function removeGift(giftId: string): Recipe<GiftList> {
  return (draft) => {
    const index = draft.gifts?.findIndex((candidate) => candidate.id === giftId) ?? -1
    if (index >= 0) draft.gifts?.splice(index, 1)
  }
}

export const resetGifts: Recipe<GiftList> = (draft) => {
  draft.gifts = initialGifts.map((gift) => ({ ...gift }))
}
