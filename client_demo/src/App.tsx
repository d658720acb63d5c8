import { useCallback, useEffect, useMemo, useState } from "react"
import { AddGiftForm } from "./components/AddGiftForm"
import { ConnectionBadge } from "./components/ConnectionBadge"
import { GiftItem } from "./components/GiftItem"
import { OnlineUsers } from "./components/OnlineUsers"
import { UserSelect } from "./components/UserSelect"
import { addGift, resetGifts, toggleReservation } from "./gifts"
import type { GiftList } from "./gifts"
import { useMyPresence, useOthers, useSharedState } from "./lib/react"
import { randomId } from "./lib/randomId"
import { pointers } from "./presence"
import type { DemoPresence } from "./presence"
import { useCurrentUser } from "./users"

export function App() {
  const [error, setError] = useState<string>()
  const [list, update, status, version] = useSharedState<GiftList>("default", {
    onError: (failure) => setError(`${failure.code}: ${failure.message}`),
  })
  const [userId, setUserId] = useCurrentUser()
  const [, setMe] = useMyPresence<DemoPresence>("default")
  const others = useOthers<DemoPresence>("default")
  useEffect(() => setMe({ userId }), [setMe, userId])
  const pointedAt = useMemo(() => pointers(others), [others])
  const handlePoint = useCallback((giftId: string | null) => setMe({ gift: giftId }), [setMe])

  const handleToggle = useCallback(
    (giftId: string) => update(toggleReservation(giftId, userId)),
    [update, userId],
  )
  const handleAdd = (description: string, image: string) =>
    update(addGift({ id: randomId(), description, image }))

  return (
    <main className="app">
      <header className="header">
        <h1>🎁 Gift list</h1>
        <UserSelect userId={userId} onChange={setUserId} />
        <ConnectionBadge status={status} version={version} />
        <OnlineUsers userId={userId} others={others} />
      </header>
      {error && (
        <p className="error" role="alert">
          {error} <button onClick={() => setError(undefined)}>Dismiss</button>
        </p>
      )}
      {list === undefined ? (
        <p className="placeholder">Connecting to the server…</p>
      ) : (
        <>
          <section className="toolbar">
            <AddGiftForm onAdd={handleAdd} />
            <button className="secondary" data-testid="reset" onClick={() => update(resetGifts)}>
              Reset list
            </button>
          </section>
          <ul className="gifts">
            {(list.gifts ?? []).map((gift) => (
              <GiftItem
                key={gift.id}
                gift={gift}
                userId={userId}
                onToggle={handleToggle}
                onPoint={handlePoint}
                pointers={pointedAt.get(gift.id)}
              />
            ))}
          </ul>
          {!list.gifts?.length && <p className="placeholder">No gifts yet: add one!</p>}
        </>
      )}
    </main>
  )
}
