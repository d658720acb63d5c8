/**
 * Browser sync client for one document of the server (protocol 1, format `immer`).
 *
 * It keeps an optimistic replica (see `replica.ts`) in step with the server over a WebSocket,
 * sends local changes one batch at a time (one change, or after a conflict the queued changes
 * squashed into one batch), and reconnects with backoff, resuming from the version it holds. A
 * change rejected as `conflict` is re-run and resent until it applies (with a growing,
 * jittered wait from its second conflict in a row); it is dropped only when its re-run no longer
 * changes anything (`superseded`) or the server refuses it for another reason, and every drop is
 * reported through `onError`. Framework-agnostic: `subscribe` + `getSnapshot` fit React's `useSyncExternalStore`.
 *
 *     const client = new SyncClient<Gifts>({ url: "ws://127.0.0.1:8000", doc: "default" })
 *     client.subscribe(() => render(client.state, client.status))
 *     client.connect()
 *     client.update((draft) => { draft.gifts.push(gift) })   // from an event handler
 *     client.setPresence({ pointing: gift.id })                // who is here: `client.others`
 */
import { CONFLICT_BACKOFF, DEFAULT_BACKOFF, backoffDelay, conflictDelay } from "./backoff"
import type { BackoffOptions } from "./backoff"
import { SyncError } from "./errors"
import { Presence } from "./presence"
import type { Peer, PresenceSnapshot, PresenceState } from "./presence"
import { encodePatch, parseFrame } from "./protocol"
import type { ServerMessage } from "./protocol"
import { randomId } from "./randomId"
import { Replica } from "./replica"
import type { Outcome, Recipe } from "./replica"
import { DEFAULT_UNDO, UndoHistory, inverted, revertRecipe } from "./undo"
import type { RevertCount, UndoEntry, UndoOptions } from "./undo"

export type { Recipe } from "./replica"
export type { UndoOptions } from "./undo"
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
  /** Whether `undo()` / `redo()` have a step to try. */
  readonly canUndo: boolean
  readonly canRedo: boolean
}

export interface UpdateOptions {
  /** False: the change is not recorded for undo (and does not clear the redo stack). Default true. */
  readonly undoable?: boolean
}

/** The part of the browser's WebSocket the client uses. */
export type SocketLike = Pick<WebSocket, "onopen" | "onmessage" | "onclose" | "send" | "close">

export interface SyncClientOptions {
  /** Base WebSocket URL of the server, e.g. `ws://127.0.0.1:8000` (no path). */
  readonly url: string
  /** Document id, 1-128 characters of `[A-Za-z0-9._-]`. Default `default`. */
  readonly doc?: string
  /** Reconnect delays. Default: ceilings from 250 ms doubling to 10 s, half of each random. */
  readonly backoff?: BackoffOptions
  /**
   * Waits before resending a change after its second and later conflicts in a row. Default:
   * a random delay under a ceiling from 50 ms doubling to 2 s. A conflict is retried without limit.
   */
  readonly conflictBackoff?: BackoffOptions
  /** Undo grouping, depth and the id member of array elements (defaults 500 ms, 100, `id`). */
  readonly undo?: UndoOptions
  /**
   * Asks the app for an access token (e.g. a short-lived JWT from its backend), called before
   * every connection and reconnection; sent as the WebSocket subprotocol `bearer.TOKEN`. A token
   * that expires makes the server close the connection: the client reconnects with a fresh one and
   * resends what was not acknowledged. If it throws, the error is reported and the client retries
   * with backoff.
   */
  readonly getToken?: () => string | Promise<string>
  readonly createSocket?: (url: string, protocols?: string[]) => SocketLike
  /** Presence is sent at most once per this many milliseconds (last value wins). Default 80. */
  readonly presenceThrottleMs?: number
}

const DOC_ID = /^[A-Za-z0-9._-]{1,128}$/

export class SyncClient<T> {
  /** Sent as `client=`: the server deduplicates resent changes per (client, id). */
  readonly clientId = randomId()
  readonly doc: string
  private readonly url: string
  private readonly backoff: BackoffOptions
  private readonly conflictBackoff: BackoffOptions
  private readonly history: UndoHistory<T>
  private readonly idField: string
  private readonly createSocket: (url: string, protocols?: string[]) => SocketLike
  private readonly getToken: (() => string | Promise<string>) | undefined
  /** Counts connection attempts, so a token that arrives late for an abandoned one is dropped. */
  private opening = 0

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
  /** Set while the head change waits out its conflict backoff before being resent. */
  private retryTimer: ReturnType<typeof setTimeout> | undefined
  private lastChangeId = 0
  private snapshot: SyncSnapshot<T> = {
    state: undefined,
    version: undefined,
    status: "offline",
    canUndo: false,
    canRedo: false,
  }
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
    this.backoff = options.backoff ?? DEFAULT_BACKOFF
    this.conflictBackoff = options.conflictBackoff ?? CONFLICT_BACKOFF
    this.history = new UndoHistory<T>(options.undo)
    this.idField = options.undo?.idField ?? DEFAULT_UNDO.idField
    this.createSocket = options.createSocket ?? ((url, protocols) => new WebSocket(url, protocols))
    this.getToken = options.getToken
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

  /**
   * Errors: every dropped change (rejected for a reason other than `conflict`, `superseded`,
   * `recipe_failed`) and protocol problems. Logged to the console if nobody listens.
   */
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
    this.opening++
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
   * The change becomes (part of) an undo step unless `{ undoable: false }`.
   */
  update(recipe: Recipe<T>, options: UpdateOptions = {}): void {
    if (!this.replica) throw new Error("SyncClient.update() before the first snapshot arrived")
    const change = this.replica.local(recipe)
    if (!change) return
    if (options.undoable !== false) this.history.capture(change)
    this.flush()
    this.emit()
  }

  get canUndo(): boolean {
    return this.snapshot.canUndo
  }

  get canRedo(): boolean {
    return this.snapshot.canRedo
  }

  /**
   * Reverts this client's latest undo step as a new change, only where the document still holds
   * what that step wrote (a collaborator's newer value wins). A step not sent yet is taken out of
   * the queue instead. A step of which nothing applies any more is skipped, reported through
   * `onError` (code `undo_skipped`), and the next one is tried. True if a step was undone.
   */
  undo(): boolean {
    return this.step("undo")
  }

  /** Re-applies the latest undone step, where the document still holds what the undo produced (`redo_skipped`). */
  redo(): boolean {
    return this.step("redo")
  }

  /** Every change made inside `fn` forms one undo step. Returns what `fn` returns. */
  batch<R>(fn: () => R): R {
    return this.history.batch(fn)
  }

  /** The next change starts a new undo step, however soon it follows. */
  stopCapturing(): void {
    this.history.stopCapturing()
  }

  private step(direction: "undo" | "redo"): boolean {
    const replica = this.replica
    if (!replica) return false
    const history = this.history
    const take = () => (direction === "undo" ? history.popUndo() : history.popRedo())
    const give = (entry: UndoEntry<T>) => (direction === "undo" ? history.pushRedo(entry) : history.pushUndo(entry))
    let done = false
    for (let entry = take(); entry && !done; entry = done ? undefined : take()) {
      if (replica.withdraw(entry.edits)) {
        give({ edits: entry.edits.map(inverted).reverse() })
        done = true
        continue
      }
      const count: RevertCount = { applied: 0, skipped: 0 }
      const change = replica.local(revertRecipe(entry.edits, this.idField, count))
      if (change) {
        give({ edits: [change] })
        done = true
      } else {
        const why =
          count.skipped > 0
            ? "every value it would restore was changed by someone else since"
            : "nothing of it is left to restore"
        this.fail(new SyncError(`${direction}_skipped`, `${direction} skipped a step: ${why}`))
      }
    }
    this.flush()
    this.emit()
    return done
  }

  private openSocket(): void {
    const attempt = ++this.opening
    if (!this.getToken) {
      this.attach(this.createSocket(this.endpoint()))
      return
    }
    const getToken = this.getToken
    Promise.resolve()
      .then(getToken)
      .then(
        (token) => {
          if (attempt !== this.opening || !this.wanted) return
          this.attach(this.createSocket(this.endpoint(), [`bearer.${token}`]))
        },
        (error: unknown) => {
          if (attempt !== this.opening || !this.wanted) return
          this.fail(new SyncError("unauthorized", `getToken failed: ${String(error)}`, { cause: error }))
          this.scheduleReconnect()
          this.emit()
        },
      )
  }

  private attach(socket: SocketLike): void {
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
    clearTimeout(this.retryTimer) // the reconnect waits anyway
    this.retryTimer = undefined
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
        return this.answered(this.replica?.acknowledge(message.id, message.version, message.patches) ?? "gap")
      case "reject":
        return this.answered(this.replica?.reject(message.id, message.error) ?? "gap")
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
    if (outcome === "ignored") return true
    this.inFlight = false
    if (outcome === "retry") this.holdRetry()
    return true
  }

  /** After a conflict: holds the resend of the head change for its conflict backoff, if any. */
  private holdRetry(): void {
    const delay = conflictDelay(this.replica?.headConflicts ?? 0, this.conflictBackoff)
    if (delay <= 0) return
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined
      this.flush()
      this.emit()
    }, delay)
  }

  /** Sends the next batch if the connection is caught up and nothing else is in flight or waiting. */
  private flush(): void {
    if (!this.socket || !this.open || !this.caughtUp || this.inFlight || this.retryTimer !== undefined) return
    if (!this.replica) return
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
    const { canUndo, canRedo } = this.history
    const previous = this.snapshot
    if (
      previous.state === state &&
      previous.version === version &&
      previous.status === status &&
      previous.canUndo === canUndo &&
      previous.canRedo === canRedo
    ) {
      return
    }
    this.snapshot = { state, version, status, canUndo, canRedo }
    for (const listener of [...this.listeners]) listener()
  }

  private currentStatus(): Status {
    if (!this.open) return this.wanted && !this.replica ? "connecting" : "offline"
    return this.caughtUp && !this.replica?.hasPending ? "synced" : "syncing"
  }
}
