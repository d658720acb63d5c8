import type { DemoPeer } from "../presence"
import { Avatar } from "./Avatar"

interface Props {
  readonly userId: number
  readonly others: readonly DemoPeer[]
}

/** Who is online: me first, then every other connection (a user in two tabs shows twice). */
export function OnlineUsers({ userId, others }: Props) {
  return (
    <div className="online" data-testid="online" aria-label="Online">
      <Avatar userId={userId} label="You" />
      {others.map((peer) => (
        <span key={peer.conn} data-testid="peer" data-conn={peer.conn} data-user={peer.state.userId ?? ""}>
          <Avatar userId={peer.state.userId} {...(peer.user !== null && { label: peer.user })} />
        </span>
      ))}
    </div>
  )
}
