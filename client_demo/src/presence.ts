/**
 * What the demo shares as presence: who I am in the user picker and which gift I point at (by
 * id, so a pointer survives gifts being added or removed). `user` in a peer is the server's
 * authenticated identity (none without `--auth`); the picker's user travels in the state.
 */
import type { Peer } from "./lib/syncClient"

export interface DemoPresence {
  /** The picker's user id. */
  readonly userId?: number
  /** The gift under the pointer or keyboard focus; null when none. */
  readonly gift?: string | null
  [key: string]: unknown
}

export type DemoPeer = Peer<DemoPresence>

/** A stable colour per picker user. */
export function userColor(userId: number | undefined): string {
  if (userId === undefined) return "hsl(0 0% 55%)"
  return `hsl(${Math.round((userId * 137.508) % 360)} 70% 45%)`
}

/** The others pointing at each gift, by gift id. */
export function pointers(others: readonly DemoPeer[]): ReadonlyMap<string, readonly DemoPeer[]> {
  const byGift = new Map<string, DemoPeer[]>()
  for (const peer of others) {
    const gift = peer.state.gift
    if (typeof gift !== "string") continue
    const list = byGift.get(gift)
    if (list) list.push(peer)
    else byGift.set(gift, [peer])
  }
  return byGift
}
