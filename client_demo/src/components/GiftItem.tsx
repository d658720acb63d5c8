import { memo, useState } from "react"
import type { Gift } from "../gifts"
import { userColor } from "../presence"
import type { DemoPeer } from "../presence"
import { userName } from "../users"
import { Avatar } from "./Avatar"

interface Props {
  readonly gift: Gift
  readonly userId: number
  readonly onToggle: (giftId: string) => void
  readonly onRemove: (giftId: string) => void
  /** Presence: I point at this gift (id), or at none (null). */
  readonly onPoint?: (giftId: string | null) => void
  /** The others pointing at this gift. */
  readonly pointers?: readonly DemoPeer[] | undefined
}

export const GiftItem = memo(function GiftItem({ gift, userId, onToggle, onRemove, onPoint, pointers = [] }: Props) {
  const reservedBy = gift.reservedBy ?? undefined // null (over HTTP) is free too
  const mine = reservedBy === userId
  const takenByOther = reservedBy !== undefined && !mine
  const reservation =
    reservedBy === undefined ? "Still available" : `Reserved by ${mine ? "you" : userName(reservedBy)}`
  return (
    <li
      className={`gift${reservedBy !== undefined ? " reserved" : ""}${mine ? " mine" : ""}${pointers.length ? " pointed" : ""}`}
      data-testid="gift"
      data-gift-id={gift.id}
      data-reserved-by={reservedBy ?? ""}
      data-pointed-by={pointers.map((peer) => peer.state.userId ?? "").join(",")}
      style={pointers.length ? { outlineColor: userColor(pointers[0]!.state.userId) } : undefined}
      onMouseEnter={() => onPoint?.(gift.id)}
      onMouseLeave={() => onPoint?.(null)}
      onFocus={() => onPoint?.(gift.id)}
      onBlur={() => onPoint?.(null)}
    >
      <GiftImage src={gift.image} />
      <div className="description">
        <h2>{gift.description}</h2>
        <p>{reservation}</p>
      </div>
      {pointers.length > 0 && (
        <div className="pointers" aria-label="Looking at this gift">
          {pointers.map((peer) => (
            <Avatar key={peer.conn} userId={peer.state.userId} small />
          ))}
        </div>
      )}
      <button
        data-testid="toggle-reservation"
        className={mine ? "secondary" : ""}
        disabled={takenByOther}
        onClick={() => onToggle(gift.id)}
      >
        {mine ? "Unreserve" : takenByOther ? userName(reservedBy) : "Reserve"}
      </button>
      <button
        data-testid="remove-gift"
        className="remove"
        aria-label={`Remove ${gift.description}`}
        title="Remove"
        onClick={() => onRemove(gift.id)}
      >
        ✕
      </button>
    </li>
  )
})

/** The gift's picture, or a placeholder when there is none or it does not load. */
function GiftImage({ src }: { readonly src: string }) {
  const [failed, setFailed] = useState<string>()
  if (src === "" || failed === src) {
    return (
      <div className="picture placeholder-picture" aria-hidden="true">
        🎁
      </div>
    )
  }
  return <img className="picture" src={src} alt="" onError={() => setFailed(src)} />
}
