import { memo, useState } from "react"
import type { Gift } from "../gifts"
import { userName } from "../users"

interface Props {
  readonly gift: Gift
  readonly userId: number
  readonly onToggle: (giftId: string) => void
  readonly onRemove: (giftId: string) => void
}

export const GiftItem = memo(function GiftItem({ gift, userId, onToggle, onRemove }: Props) {
  const reservedBy = gift.reservedBy ?? undefined // null (over HTTP) is free too
  const mine = reservedBy === userId
  const takenByOther = reservedBy !== undefined && !mine
  const reservation =
    reservedBy === undefined ? "Still available" : `Reserved by ${mine ? "you" : userName(reservedBy)}`
  return (
    <li
      className={`gift${reservedBy !== undefined ? " reserved" : ""}${mine ? " mine" : ""}`}
      data-testid="gift"
      data-gift-id={gift.id}
      data-reserved-by={reservedBy ?? ""}
    >
      <GiftImage src={gift.image} />
      <div className="description">
        <h2>{gift.description}</h2>
        <p>{reservation}</p>
      </div>
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
