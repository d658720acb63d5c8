/**
 * Presence of one document: my state (merged locally, sent throttled) and the others' (from the
 * server). No sockets here: `SyncClient` gives it a `send` and feeds it the server's messages.
 *
 * - `set(partial)` merges into my state and sends it at most once per `throttleMs`, the latest
 *   value winning (the first change after a quiet period goes out at once).
 * - The server sends a full list after `synced`, then deltas; an entry with `state: null` is gone.
 * - When the connection drops, the others are kept for `keepMs` (1 s): a quick reconnect replaces
 *   them with the new full list instead of making them flash off and on.
 * - `leave()` (on `pagehide`) tells the server at once that I am gone.
 */

/** A presence state: any JSON object of at most 2 KB serialized. */
export type PresenceState = Record<string, unknown>

/** Another connection in the document. `user` is the identity the server authenticated. */
export interface Peer<P extends PresenceState = PresenceState> {
  readonly conn: string
  readonly user: string | null
  readonly state: P
  /** The document version the state refers to, when its sender named one. */
  readonly version?: number
}

/** `{"type":"presence"}` from the server: a full list (with `self`) or a delta. */
export interface PresenceMessage {
  readonly type: "presence"
  readonly self?: string
  readonly peers: readonly { conn: string; user: string | null; state: PresenceState | null; version?: number }[]
  /** How many connections are present in all, when more than the server lists (100). */
  readonly count?: number
}

/** Presence as a view needs it; a new object only when something in it changes. */
export interface PresenceSnapshot<P extends PresenceState = PresenceState> {
  /** My state, as last set. */
  readonly me: Readonly<Partial<P>>
  /** The other connections, in the server's order. */
  readonly others: readonly Peer<P>[]
  /** How many connections are present in all, when the server lists only some (over 100). */
  readonly count: number | undefined
}

export const DEFAULT_PRESENCE_THROTTLE_MS = 80
export const PRESENCE_KEEP_MS = 1000

export function encodePresence(state: PresenceState | null, version?: number): string {
  return JSON.stringify(version === undefined ? { type: "presence", state } : { type: "presence", state, version })
}

export class Presence<P extends PresenceState = PresenceState> {
  snapshot: PresenceSnapshot<P> = { me: {} as Partial<P>, others: [], count: undefined }
  private me: Partial<P> = {}
  private count: number | undefined
  /** My connection id on the current connection. */
  self: string | undefined
  private readonly peers = new Map<string, Peer<P>>()
  private connected = false
  private lastSent = -Infinity
  private timer: ReturnType<typeof setTimeout> | undefined
  private keepTimer: ReturnType<typeof setTimeout> | undefined
  private dirty = false
  private readonly send: (frame: string) => void
  private readonly changed: () => void
  private readonly throttleMs: number
  private readonly keepMs: number

  constructor(
    send: (frame: string) => void,
    changed: () => void,
    throttleMs = DEFAULT_PRESENCE_THROTTLE_MS,
    keepMs = PRESENCE_KEEP_MS,
  ) {
    this.send = send
    this.changed = changed
    this.throttleMs = throttleMs
    this.keepMs = keepMs
  }

  /** Merges `partial` into my state (an `undefined` value removes that key) and sends it soon. */
  set(partial: Partial<P>): void {
    const next: Record<string, unknown> = { ...this.me }
    for (const [key, value] of Object.entries(partial)) {
      if (value === undefined) delete next[key]
      else next[key] = value
    }
    this.me = next as Partial<P>
    this.dirty = true
    this.schedule()
    this.snapshot = { ...this.snapshot, me: this.me }
    this.changed()
  }

  /** The connection is synced: the server takes presence now. Sends my state if I have one. */
  open(): void {
    this.connected = true
    if (Object.keys(this.me).length > 0) this.dirty = true
    this.schedule()
  }

  /** The connection dropped: keep the others a moment in case it comes back at once. */
  close(): void {
    this.connected = false
    clearTimeout(this.timer)
    this.timer = undefined
    this.self = undefined
    if (this.keepTimer === undefined && this.peers.size > 0) {
      this.keepTimer = setTimeout(() => {
        this.keepTimer = undefined
        this.replace([])
      }, this.keepMs)
    }
  }

  /** I am leaving (the page is being hidden or unloaded): say so now, unthrottled. */
  leave(): void {
    if (!this.connected) return
    clearTimeout(this.timer)
    this.timer = undefined
    this.send(encodePresence(null))
    this.dirty = Object.keys(this.me).length > 0 // sent again if the page comes back
  }

  /** The page came back (bfcache): show myself again. */
  resume(): void {
    if (this.dirty) this.schedule()
  }

  receive(message: PresenceMessage): void {
    if (message.self !== undefined) {
      clearTimeout(this.keepTimer)
      this.keepTimer = undefined
      this.self = message.self
      this.peers.clear()
    }
    for (const peer of message.peers) {
      if (peer.conn === this.self) continue
      if (peer.state === null) this.peers.delete(peer.conn)
      else this.peers.set(peer.conn, toPeer<P>(peer))
    }
    if (message.count !== undefined || message.self !== undefined) this.count = message.count
    this.publish()
  }

  dispose(): void {
    clearTimeout(this.timer)
    clearTimeout(this.keepTimer)
    this.timer = this.keepTimer = undefined
  }

  private replace(peers: Peer<P>[]): void {
    this.peers.clear()
    for (const peer of peers) this.peers.set(peer.conn, peer)
    this.count = undefined
    this.publish()
  }

  private publish(): void {
    this.snapshot = { me: this.me, others: [...this.peers.values()], count: this.count }
    this.changed()
  }

  private schedule(): void {
    if (!this.connected || !this.dirty || this.timer !== undefined) return
    const wait = this.lastSent + this.throttleMs - Date.now()
    if (wait <= 0) {
      this.flush()
      return
    }
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.flush()
    }, wait)
  }

  private flush(): void {
    if (!this.connected || !this.dirty) return
    this.dirty = false
    this.lastSent = Date.now()
    this.send(encodePresence(this.me as PresenceState))
  }
}

/** Checks a decoded `presence` message; undefined if it is malformed. */
export function parsePresenceMessage(item: Record<string, unknown>): PresenceMessage | undefined {
  const { self, peers, count } = item
  if (self !== undefined && typeof self !== "string") return undefined
  if (count !== undefined && (typeof count !== "number" || !Number.isSafeInteger(count))) return undefined
  if (!Array.isArray(peers)) return undefined
  const checked: PresenceMessage["peers"][number][] = []
  for (const peer of peers as unknown[]) {
    if (typeof peer !== "object" || peer === null) return undefined
    const { conn, user, state, version } = peer as Record<string, unknown>
    if (typeof conn !== "string") return undefined
    if (user !== null && typeof user !== "string") return undefined
    if (state !== null && (typeof state !== "object" || Array.isArray(state))) return undefined
    if (version !== undefined && typeof version !== "number") return undefined
    checked.push({ conn, user, state: state as PresenceState | null, ...(version !== undefined && { version }) })
  }
  return {
    type: "presence",
    peers: checked,
    ...(self !== undefined && { self }),
    ...(count !== undefined && { count }),
  }
}

function toPeer<P extends PresenceState>(peer: PresenceMessage["peers"][number]): Peer<P> {
  const base = { conn: peer.conn, user: peer.user, state: peer.state as P }
  return peer.version === undefined ? base : { ...base, version: peer.version }
}
