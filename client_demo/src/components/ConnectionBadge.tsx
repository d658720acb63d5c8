import type { Status } from "../lib/syncClient"

const LABELS: Record<Status, string> = {
  connecting: "Connecting",
  syncing: "Syncing",
  synced: "Synced",
  offline: "Offline",
}

interface Props {
  readonly status: Status
  readonly version: number | undefined
}

export function ConnectionBadge({ status, version }: Props) {
  return (
    <div className={`badge badge-${status}`} title={`${LABELS[status]}, server version ${version ?? "unknown"}`}>
      <span className="dot" aria-hidden="true" />
      <span data-testid="status" data-status={status}>
        {status}
      </span>
      <span className="version">
        v<span data-testid="version">{version ?? "–"}</span>
      </span>
    </div>
  )
}
