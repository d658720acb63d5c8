import { useCallback, useEffect, useState } from "react"
import { AddGiftForm } from "./components/AddGiftForm"
import { ConnectionBadge } from "./components/ConnectionBadge"
import { GiftItem } from "./components/GiftItem"
import { UserSelect } from "./components/UserSelect"
import { addGift, removeGift, resetGifts, toggleReservation } from "./gifts"
import type { GiftList } from "./gifts"
import { useSharedState, useUndo } from "./lib/react"
import { randomId } from "./lib/randomId"
import { useCurrentUser } from "./users"

export function App() {
  const [error, setError] = useState<string>()
  const [list, update, status, version] = useSharedState<GiftList>("default", {
    onError: (failure) => setError(`${failure.code}: ${failure.message}`),
  })
  const { undo, redo, canUndo, canRedo } = useUndo("default")
  const [userId, setUserId] = useCurrentUser()
  useUndoShortcuts(undo, redo)

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
            <div className="history">
              <button className="secondary" data-testid="undo" disabled={!canUndo} onClick={undo} title="Ctrl/⌘+Z">
                Undo
              </button>
              <button
                className="secondary"
                data-testid="redo"
                disabled={!canRedo}
                onClick={redo}
                title="Ctrl/⌘+Shift+Z"
              >
                Redo
              </button>
            </div>
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

/**
 * Ctrl/Cmd+Z undoes, Ctrl/Cmd+Shift+Z (and Ctrl+Y) redoes, except in a text field, where the
 * browser's own text undo applies.
 */
function useUndoShortcuts(undo: () => void, redo: () => void): void {
  useEffect(() => {
    const onKeyDown = (event: KeyboardEvent) => {
      if (!(event.ctrlKey || event.metaKey) || event.altKey || isTextField(event.target)) return
      const key = event.key.toLowerCase()
      if (key === "z") (event.shiftKey ? redo : undo)()
      else if (key === "y" && !event.shiftKey) redo()
      else return
      event.preventDefault()
    }
    window.addEventListener("keydown", onKeyDown)
    return () => window.removeEventListener("keydown", onKeyDown)
  }, [undo, redo])
}

function isTextField(target: EventTarget | null): boolean {
  return (
    target instanceof HTMLElement &&
    (target.isContentEditable || target.tagName === "INPUT" || target.tagName === "TEXTAREA")
  )
}
