/**
 * Browser sync client for one document of the server (protocol 1, format `immer`).
 *
 * It keeps an optimistic replica (see `replica.ts`) in step with the server over a WebSocket,
 * sends local changes one at a time, and reconnects with backoff, resuming from the version it
 * holds. Framework-agnostic: `subscribe` + `getSnapshot` fit React's `useSyncExternalStore`.
 *
 *     const client = new SyncClient<Gifts>({ url: "ws://127.0.0.1:8000", doc: "default" })
 *     client.subscribe(() => render(client.state, client.status))
 *     client.connect()
 *     client.update((draft) => { draft.gifts.push(gift) })   // from an event handler
 *     client.setPresence({ pointing: gift.id })                // who is here: `client.others`
 */
import { DEFAULT_BACKOFF, backoffDelay } from "./backoff"
import type { BackoffOptions } from "./backoff"
import { SyncError } from "./errors"
import { Presence } from "./presence"
import type { Peer, PresenceSnapshot, PresenceState } from "./presence"
import { encodePatch, parseFrame } from "./protocol"
import type { ServerMessage } from "./protocol"
import { randomId } from "./randomId"
import { Replica } from "./replica"
import type { Outcome, Recipe } from "./replica"

export type { Recipe } from "./replica"
export type { Peer, PresenceSnapshot, PresenceState } from "./presence"

/**
 * - `connecting`: no state yet, waiting for the first connection;
 * - `syncing`: connected, catching up with the server or waiting for local changes to be committed;
 * - `synced`: connected, caught up, nothing pending: the shown state is the server's;
 * - `offline`: not connected (reconnecting, or `disconnect()`ed); local changes are kept and sent later.
 */
export type Status = "connecting" | "syncing" | "synced" | "offline"

/** Everything a view needs; a new object only when one of its fields changes. */
export interface SyncSnapshot<T> {
  /** The shown state: the server's plus pending local changes; undefined before the first snapshot. */
  readonly state: T | undefined
  /** The latest server version the client holds; undefined before the first snapshot. */
  readonly version: number | undefined
  readonly status: Status
}

/** The part of the browser's WebSocket the client uses. */
export type SocketLike = Pick<WebSocket, "onopen" | "onmessage" | "onclose" | "send" | "close">

export interface SyncClientOptions {
  /** Base WebSocket URL of the server, e.g. `ws://127.0.0.1:8000` (no path). */
  readonly url: string
  /** Document id, 1-128 characters of `[A-Za-z0-9._-]`. Default `default`. */
  readonly doc?: string
  /** How many times a change rejected as `conflict` is re-run and resent before it is dropped. */
  readonly maxConflictRetries?: number
  readonly backoff?: BackoffOptions
  readonly createSocket?: (url: string) => SocketLike
  /** Presence is sent at most once per this many milliseconds (last value wins). Default 80. */
  readonly presenceThrottleMs?: number
}

const DOC_ID = /^[A-Za-z0-9._-]{1,128}$/
const DEFAULT_CONFLICT_RETRIES = 5

export class SyncClient<T> {
  /** Sent as `client=`: the server deduplicates resent changes per (client, id). */
  readonly clientId = randomId()
  readonly doc: string
  private readonly url: string
  private readonly maxConflictRetries: number
  private readonly backoff: BackoffOptions
  private readonly createSocket: (url: string) => SocketLike

  private replica: Replica<T> | undefined
  private socket: SocketLike | undefined
  private wanted = false
  private open = false
  private caughtUp = false
  private inFlight = false
  /** Ask for a full snapshot next time instead of resuming (after a protocol problem). */
  private fresh = false
  private attempt = 0
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined
  private lastChangeId = 0
  private snapshot: SyncSnapshot<T> = { state: undefined, version: undefined, status: "offline" }
  private readonly presenceState: Presence
  private readonly onPageHide = () => this.presenceState.leave()
  private readonly onPageShow = () => this.presenceState.resume()
  private readonly listeners = new Set<() => void>()
  private readonly errorListeners = new Set<(error: SyncError) => void>()

  constructor(options: SyncClientOptions) {
    const doc = options.doc ?? "default"
    if (!DOC_ID.test(doc)) throw new TypeError(`invalid document id: ${JSON.stringify(doc)}`)
    this.doc = doc
    this.url = options.url.replace(/\/+$/, "")
    this.maxConflictRetries = options.maxConflictRetries ?? DEFAULT_CONFLICT_RETRIES
    this.backoff = options.backoff ?? DEFAULT_BACKOFF
    this.createSocket = options.createSocket ?? ((url) => new WebSocket(url))
    const sendPresence = (frame: string) => {
      if (this.socket && this.open) this.socket.send(frame)
    }
    const presenceChanged = () => {
      for (const listener of [...this.listeners]) listener()
    }
    this.presenceState = new Presence(sendPresence, presenceChanged, options.presenceThrottleMs)
  }

  get state(): T | undefined {
    return this.snapshot.state
  }

  get version(): number | undefined {
    return this.snapshot.version
  }

  get status(): Status {
    return this.snapshot.status
  }

  /** The other connections in the document, with their presence state. */
  get others(): readonly Peer[] {
    return this.presenceState.snapshot.others
  }

  /** My presence state, as last set. */
  get presence(): Readonly<PresenceState> {
    return this.presenceState.snapshot.me
  }

  /**
   * `{me, others, count}`: a new object only when presence changes, for `useSyncExternalStore`
   * with `subscribe`. Kept apart from `getSnapshot()` so that views of the document do not
   * re-render on every cursor move of every peer.
   */
  readonly getPresenceSnapshot = (): PresenceSnapshot => this.presenceState.snapshot

  /**
   * Merges `partial` into my presence (`undefined` removes a key) and sends it to the others, at
   * most once per `presenceThrottleMs`, the latest value winning. Presence is never stored; it is
   * sent again after a reconnect, and `null` (gone) when the page is hidden (`pagehide`).
   */
  setPresence(partial: PresenceState): void {
    this.presenceState.set(partial)
  }

  readonly getSnapshot = (): SyncSnapshot<T> => this.snapshot

  readonly subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener)
    return () => {
      this.listeners.delete(listener)
    }
  }

  /** Errors: rejected changes, dropped changes, protocol problems. Logged if nobody listens. */
  onError(listener: (error: SyncError) => void): () => void {
    this.errorListeners.add(listener)
    return () => {
      this.errorListeners.delete(listener)
    }
  }

  /** Starts connecting (and reconnecting until `disconnect()`). Idempotent. */
  connect(): void {
    if (this.wanted) return
    if (typeof window !== "undefined") {
      window.addEventListener("pagehide", this.onPageHide)
      window.addEventListener("pageshow", this.onPageShow)
    }
    this.openSocket()
    this.wanted = true
    this.emit()
  }

  /** Closes the connection and stops reconnecting; state and pending changes are kept. */
  disconnect(): void {
    if (!this.wanted) return
    this.wanted = false
    if (typeof window !== "undefined") {
      window.removeEventListener("pagehide", this.onPageHide)
      window.removeEventListener("pageshow", this.onPageShow)
    }
    clearTimeout(this.reconnectTimer)
    this.reconnectTimer = undefined
    this.dropSocket()
    this.emit()
  }

  /**
   * Applies `recipe` to the shown state at once and sends the resulting patches when the server
   * is ready for them. Call it from event handlers, never during render or inside a React state
   * updater. The recipe may be re-run later on newer server state, so it must be pure.
   * Throws before the first snapshot (status `connecting`), since there is nothing to change yet.
   */
  update(recipe: Recipe<T>): void {
    if (!this.replica) throw new Error("SyncClient.update() before the first snapshot arrived")
    if (!this.replica.local(recipe)) return
    this.flush()
    this.emit()
  }

  private openSocket(): void {
    const socket = this.createSocket(this.endpoint())
    this.socket = socket
    socket.onopen = () => {
      this.open = true
      this.emit()
    }
    socket.onmessage = (event) => this.receive(event.data)
    socket.onclose = () => {
      this.dropSocket()
      this.scheduleReconnect()
      this.emit()
    }
  }

  private endpoint(): string {
    const params = new URLSearchParams({ format: "immer", client: this.clientId, presence: "1" })
    if (this.replica && !this.fresh) {
      params.set("since", String(this.replica.version))
      params.set("epoch", String(this.replica.epoch))
    }
    return `${this.url}/ws/${this.doc}?${params}`
  }

  /** Forgets the current socket (its late events are ignored) and closes it. */
  private dropSocket(): void {
    const socket = this.socket
    this.socket = undefined
    this.open = false
    this.caughtUp = false
    this.inFlight = false // an unanswered change is resent, with the same id, after reconnecting
    this.presenceState.close()
    if (!socket) return
    socket.onopen = null
    socket.onmessage = null
    socket.onclose = null
    socket.close()
  }

  private scheduleReconnect(): void {
    if (!this.wanted || this.reconnectTimer !== undefined) return
    const delay = backoffDelay(this.attempt++, this.backoff)
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined
      this.openSocket()
    }, delay)
  }

  /** The replica lost step with the server: start over from a snapshot on a new connection. */
  private resync(): void {
    this.fresh = true
    this.dropSocket()
    this.scheduleReconnect()
  }

  private receive(data: unknown): void {
    try {
      for (const message of parseFrame(data)) {
        if (!this.handle(message)) {
          this.resync()
          break
        }
      }
    } catch (error) {
      if (!(error instanceof SyncError)) throw error
      this.fail(error)
      this.resync()
    }
    this.flush()
    this.emit()
  }

  /** Applies one server message; false if the replica can no longer follow the server. */
  private handle(message: ServerMessage): boolean {
    switch (message.type) {
      case "snapshot":
        if (this.replica) {
          this.replica.reset(message.state as T, message.version, message.epoch)
        } else {
          const nextId = () => String(++this.lastChangeId)
          const report = (error: SyncError) => this.fail(error)
          this.replica = new Replica(message.state as T, message.version, message.epoch, nextId, report)
        }
        this.fresh = false
        return true
      case "patch":
        return this.replica?.remote(message.version, message.patches) ?? false
      case "synced":
        if (this.replica?.version !== message.version) return false
        this.caughtUp = true
        this.attempt = 0
        this.presenceState.open()
        return true
      case "ack":
        return this.answered(this.replica?.acknowledge(message.id, message.version) ?? "gap")
      case "reject":
        return this.answered(this.replica?.reject(message.id, message.error, this.maxConflictRetries) ?? "gap")
      case "error":
        this.fail(new SyncError(message.error.code, message.error.message))
        return true
      case "presence":
        this.presenceState.receive(message)
        return true
    }
  }

  private answered(outcome: Outcome): boolean {
    if (outcome === "gap") return false
    if (outcome !== "ignored") this.inFlight = false
    return true
  }

  /** Sends the head change if the connection is caught up and nothing else is in flight. */
  private flush(): void {
    if (!this.socket || !this.open || !this.caughtUp || this.inFlight || !this.replica) return
    const next = this.replica.nextToSend()
    if (!next) return
    this.socket.send(encodePatch(next))
    this.inFlight = true
  }

  private fail(error: SyncError): void {
    if (this.errorListeners.size === 0) console.error(error)
    for (const listener of [...this.errorListeners]) listener(error)
  }

  private emit(): void {
    const state = this.replica?.shown
    const version = this.replica?.version
    const status = this.currentStatus()
    const previous = this.snapshot
    if (previous.state === state && previous.version === version && previous.status === status) return
    this.snapshot = { state, version, status }
    for (const listener of [...this.listeners]) listener()
  }

  private currentStatus(): Status {
    if (!this.open) return this.wanted && !this.replica ? "connecting" : "offline"
    return this.caughtUp && !this.replica?.hasPending ? "synced" : "syncing"
  }
}
