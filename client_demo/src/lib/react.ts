/**
 * React bindings: `useSharedState` over the sync client, `useUndo` for its undo and redo, and
 * `useSocket`, a drop-in for the
 * hand-rolled hook of the Immer course (immer-gifts, lesson 15) for apps that migrate step by step.
 */
import { useCallback, useEffect, useRef, useSyncExternalStore } from "react"
import type { RefObject } from "react"
import { backoffDelay } from "./backoff"
import type { SyncError } from "./errors"
import { retainSharedClient, sharedClient } from "./sharedClients"
import type { Recipe, Status, UpdateOptions } from "./syncClient"

export interface SharedStateOptions {
  /** Base WebSocket URL of the server. Default: the page's own origin, `ws(s)://{location.host}`. */
  readonly url?: string
  /** Rejected or dropped changes and protocol problems (logged to the console if not given). */
  readonly onError?: (error: SyncError) => void
}

export type SharedState<T> = readonly [
  state: T | undefined,
  update: (recipe: Recipe<T>, options?: UpdateOptions) => void,
  status: Status,
  version: number | undefined,
]

/**
 * The shared document `doc`: `[state, update, status, version]`. `state` is undefined until the
 * first snapshot (status `connecting`). Every component using the same (url, doc) shares one
 * client and one WebSocket. Call `update` from event handlers, with a pure recipe.
 */
export function useSharedState<T>(doc = "default", options: SharedStateOptions = {}): SharedState<T> {
  const url = options.url ?? pageServerUrl()
  const client = sharedClient<T>(url, doc)
  useEffect(() => retainSharedClient(url, doc), [url, doc])

  const onError = useLatest(options.onError)
  const listensForErrors = options.onError !== undefined
  useEffect(() => {
    if (!listensForErrors) return undefined
    return client.onError((error) => onError.current?.(error))
  }, [client, listensForErrors, onError])

  const snapshot = useSyncExternalStore(client.subscribe, client.getSnapshot)
  const update = useCallback(
    (recipe: Recipe<T>, options?: UpdateOptions) => client.update(recipe, options),
    [client],
  )
  return [snapshot.state, update, snapshot.status, snapshot.version]
}

export interface Undo {
  /** Undoes this page's latest undo step (see `SyncClient.undo`); true if one was undone. */
  readonly undo: () => boolean
  readonly redo: () => boolean
  readonly canUndo: boolean
  readonly canRedo: boolean
  /** Every change made inside `fn` forms one undo step. */
  readonly batch: <R>(fn: () => R) => R
  /** The next change starts a new undo step. */
  readonly stopCapturing: () => void
}

/**
 * Undo and redo of this page's own changes to the shared document `doc` (the same client as
 * `useSharedState(doc, { url })`); re-renders when `canUndo` or `canRedo` change. Skipped steps
 * are reported to the `onError` of `useSharedState` with code `undo_skipped` / `redo_skipped`.
 */
export function useUndo(doc = "default", options: Pick<SharedStateOptions, "url"> = {}): Undo {
  const url = options.url ?? pageServerUrl()
  const client = sharedClient<unknown>(url, doc)
  useEffect(() => retainSharedClient(url, doc), [url, doc])
  const canUndo = useSyncExternalStore(client.subscribe, () => client.getSnapshot().canUndo)
  const canRedo = useSyncExternalStore(client.subscribe, () => client.getSnapshot().canRedo)
  const undo = useCallback(() => client.undo(), [client])
  const redo = useCallback(() => client.redo(), [client])
  const batch = useCallback(<R,>(fn: () => R): R => client.batch(fn), [client])
  const stopCapturing = useCallback(() => client.stopCapturing(), [client])
  return { undo, redo, canUndo, canRedo, batch, stopCapturing }
}

/**
 * The lesson's `useSocket(url, onMessage)`: one WebSocket to `url` while mounted; each text frame
 * is JSON-parsed and passed to the latest `onMessage`; the returned `send` JSON-encodes a value.
 * Unlike the lesson's hook it reconnects with backoff, and `send` returns false (sending nothing)
 * while the socket is not open instead of throwing. It has no acknowledgements or resends: use
 * `useSharedState` for changes that must not be lost.
 */
export function useSocket<Incoming = unknown, Outgoing = unknown>(
  url: string,
  onMessage: (data: Incoming) => void,
): (data: Outgoing) => boolean {
  const handler = useLatest(onMessage)
  const current = useRef<WebSocket | null>(null)

  useEffect(() => {
    let attempt = 0
    let timer: ReturnType<typeof setTimeout> | undefined
    const open = () => {
      const socket = new WebSocket(url)
      current.current = socket
      socket.onopen = () => {
        attempt = 0
      }
      socket.onmessage = (event: MessageEvent<string>) => handler.current(JSON.parse(event.data) as Incoming)
      socket.onclose = () => {
        timer = setTimeout(open, backoffDelay(attempt++))
      }
    }
    open()
    return () => {
      clearTimeout(timer)
      const socket = current.current
      current.current = null
      if (socket) {
        socket.onclose = null
        socket.close()
      }
    }
  }, [url, handler])

  return useCallback((data: Outgoing) => {
    const socket = current.current
    if (socket?.readyState !== WebSocket.OPEN) return false
    socket.send(JSON.stringify(data))
    return true
  }, [])
}

/** `ws(s)://` plus the page's host: the server serves the demo and the WebSocket on one origin. */
function pageServerUrl(): string {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}`
}

/** A ref that always holds the latest `value`, for callbacks that outlive a render. */
function useLatest<V>(value: V): RefObject<V> {
  const ref = useRef(value)
  useEffect(() => {
    ref.current = value
  })
  return ref
}
