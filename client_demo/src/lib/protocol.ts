/**
 * Wire messages of protocol 1 (format `immer`) and their parsing. No sockets here.
 *
 * A server frame is one message object or an array of them; `parseFrame` returns the messages it
 * knows, in order, skips message types it does not know (forward compatibility) and throws a
 * `SyncError` with code `protocol` for anything malformed.
 */
import type { Patch } from "immer"
import { SyncError } from "./errors"

/** Identifies the server's history of a document; a new epoch means older versions are gone. */
export type Epoch = string | number

export interface ErrorBody {
  readonly code: string
  readonly message: string
}

export type ServerMessage =
  | { readonly type: "snapshot"; readonly version: number; readonly state: unknown; readonly epoch: Epoch }
  | { readonly type: "patch"; readonly version: number; readonly patches: Patch[] }
  | { readonly type: "synced"; readonly version: number }
  | {
      readonly type: "ack"
      readonly id: string
      readonly version: number
      /** What the server applied, when it differs from what was sent (a rebased or normalised batch). */
      readonly patches?: Patch[]
    }
  | { readonly type: "reject"; readonly id: string; readonly version: number; readonly error: ErrorBody }
  | { readonly type: "error"; readonly error: ErrorBody }

/** A local change as sent to the server. */
export interface OutgoingPatch {
  readonly id: string
  readonly base: number
  readonly patches: readonly Patch[]
}

export function encodePatch({ id, base, patches }: OutgoingPatch): string {
  return JSON.stringify({ type: "patch", id, base, patches })
}

export function parseFrame(data: unknown): ServerMessage[] {
  if (typeof data !== "string") throw malformed("a non-text frame")
  let decoded: unknown
  try {
    decoded = JSON.parse(data)
  } catch (cause) {
    throw malformed("a frame that is not JSON", cause)
  }
  const items = Array.isArray(decoded) ? decoded : [decoded]
  return items.flatMap((item) => {
    const message = parseMessage(item)
    return message ? [message] : []
  })
}

function parseMessage(item: unknown): ServerMessage | undefined {
  if (!isRecord(item) || typeof item.type !== "string") throw malformed("a message without a type")
  switch (item.type) {
    case "snapshot":
      if (!("state" in item) || !isEpoch(item.epoch)) throw malformed("a bad snapshot")
      return { type: "snapshot", version: version(item), state: item.state, epoch: item.epoch }
    case "patch":
      return { type: "patch", version: version(item), patches: patches(item) }
    case "synced":
      return { type: "synced", version: version(item) }
    case "ack": {
      const ack = { type: "ack", id: changeId(item), version: version(item) } as const
      if (item.patches === undefined) return ack
      return { ...ack, patches: patches(item) }
    }
    case "reject":
      return { type: "reject", id: changeId(item), version: version(item), error: errorBody(item) }
    case "error":
      return { type: "error", error: errorBody(item) }
    default:
      return undefined
  }
}

function version(item: Record<string, unknown>): number {
  const value = item.version
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw malformed(`a ${String(item.type)} message with a bad version`)
  }
  return value
}

function patches(item: Record<string, unknown>): Patch[] {
  const value = item.patches
  if (!Array.isArray(value) || !value.every(isPatch)) throw malformed(`a ${String(item.type)} message with bad patches`)
  return value
}

/** Ids are sent as strings; a server that echoes them as numbers is accepted too. */
function changeId(item: Record<string, unknown>): string {
  if (typeof item.id !== "string" && typeof item.id !== "number") {
    throw malformed(`a ${String(item.type)} message without an id`)
  }
  return String(item.id)
}

function errorBody(item: Record<string, unknown>): ErrorBody {
  const error = item.error
  if (!isRecord(error) || typeof error.code !== "string") throw malformed("a bad error body")
  return { code: error.code, message: typeof error.message === "string" ? error.message : "" }
}

function isPatch(value: unknown): value is Patch {
  return (
    isRecord(value) &&
    (value.op === "add" || value.op === "replace" || value.op === "remove") &&
    Array.isArray(value.path) &&
    value.path.every((segment) => typeof segment === "string" || typeof segment === "number")
  )
}

function isEpoch(value: unknown): value is Epoch {
  return typeof value === "string" || typeof value === "number"
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value)
}

function malformed(what: string, cause?: unknown): SyncError {
  return new SyncError("protocol", `the server sent ${what}`, { cause })
}
