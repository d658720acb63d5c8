/**
 * An in-memory stand-in for the browser WebSocket: the test plays the server through `accept`,
 * `deliver` and `drop`, and reads what the client sent from `sent`.
 */
import type { Patch } from "immer"

export interface SentPatch {
  readonly type: "patch"
  readonly id: string
  readonly base: number
  readonly patches: Patch[]
}

export class FakeSocket {
  static readonly CONNECTING = 0
  static readonly OPEN = 1
  static readonly CLOSING = 2
  static readonly CLOSED = 3
  /** Every socket made through the constructor, e.g. by code that calls `new WebSocket(url)`. */
  static readonly created: FakeSocket[] = []

  onopen: ((event: Event) => void) | null = null
  onmessage: ((event: MessageEvent) => void) | null = null
  onclose: ((event: CloseEvent) => void) | null = null
  readyState = FakeSocket.CONNECTING
  readonly frames: string[] = []
  readonly url: string

  constructor(url: string) {
    this.url = url
    FakeSocket.created.push(this)
  }

  get params(): URLSearchParams {
    return new URL(this.url).searchParams
  }

  get sent(): SentPatch[] {
    return this.frames.map((frame) => JSON.parse(frame) as SentPatch)
  }

  send(data: string): void {
    if (this.readyState !== FakeSocket.OPEN) throw new Error(`send() while readyState=${this.readyState}`)
    this.frames.push(data)
  }

  close(): void {
    this.readyState = FakeSocket.CLOSED
  }

  accept(): void {
    this.readyState = FakeSocket.OPEN
    this.onopen?.(new Event("open"))
  }

  /** One frame: the message itself, or an array if several are given. */
  deliver(...messages: unknown[]): void {
    this.deliverRaw(JSON.stringify(messages.length === 1 ? messages[0] : messages))
  }

  deliverRaw(data: unknown): void {
    if (this.readyState !== FakeSocket.OPEN) throw new Error("deliver() on a socket that is not open")
    this.onmessage?.({ data } as MessageEvent)
  }

  /** The connection dies (server restart, network). */
  drop(): void {
    this.readyState = FakeSocket.CLOSED
    this.onclose?.({ code: 1006 } as CloseEvent)
  }
}
