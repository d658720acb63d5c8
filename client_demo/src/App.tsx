import { useCallback, useState } from "react"
import { AddGiftForm } from "./components/AddGiftForm"
import { ConnectionBadge } from "./components/ConnectionBadge"
import { GiftItem } from "./components/GiftItem"
import { UserSelect } from "./components/UserSelect"
import { addGift, removeGift, resetGifts, toggleReservation } from "./gifts"
import type { GiftList } from "./gifts"
import { useSharedState } from "./lib/react"
import { randomId } from "./lib/randomId"
import { useCurrentUser } from "./users"

export function App() {
  const [error, setError] = useState<string>()
  const [list, update, status, version] = useSharedState<GiftList>("default", {
    onError: (failure) => setError(`${failure.code}: ${failure.message}`),
  })
  const [userId, setUserId] = useCurrentUser()

  const handleToggle = useCallback(
    (giftId: string) => update(toggleReservation(giftId, userId)),
    [update, userId],
  )
  const handleRemove = useCallback((giftId: string) => update(removeGift(giftId)), [update])
  const handleAdd = (description: string, image: string) =>
    update(addGift({ id: randomId(), description, image }))

  return (
    <main className="app">
      <header className="header">
        <h1>🎁 Gift list</h1>
        <UserSelect userId={userId} onChange={setUserId} />
        <ConnectionBadge status={status} version={version} />
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
                onRemove={handleRemove}
              />
            ))}
          </ul>
          {!list.gifts?.length && <p className="placeholder">No gifts yet: add one!</p>}
        </>
      )}
    </main>
  )
}
