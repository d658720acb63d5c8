import { userColor } from "../presence"
import { userName } from "../users"

interface Props {
  readonly userId: number | undefined
  readonly label?: string
  readonly small?: boolean
}

/** A picker user as a coloured badge with its emoji. */
export function Avatar({ userId, label, small = false }: Props) {
  const name = userId === undefined ? "?" : userName(userId)
  return (
    <span
      className={`avatar${small ? " small" : ""}`}
      style={{ borderColor: userColor(userId) }}
      title={label ?? name}
      data-user={userId ?? ""}
    >
      {name}
    </span>
  )
}
