import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import type { SyncError } from "../src/lib/errors"
import { SyncClient } from "../src/lib/syncClient"
import { FakeSocket } from "./fakeSocket"

interface Doc {
  counter: number
}

const LONGEST_DELAY = 10_000

function setup(getToken: () => string | Promise<string>) {
  const sockets: { socket: FakeSocket; protocols: string[] | undefined }[] = []
  const client = new SyncClient<Doc>({
    url: "ws://server/",
    doc: "gifts",
    getToken,
    createSocket: (url, protocols) => {
      const socket = new FakeSocket(url)
      sockets.push({ socket, protocols })
      return socket
    },
  })
  const errors: SyncError[] = []
  client.onError((error) => errors.push(error))
  return { client, sockets, errors }
}

beforeEach(() => {
  vi.useFakeTimers()
})

afterEach(() => {
  vi.useRealTimers()
})

describe("getToken", () => {
  it("asks for a token before every connection and sends it as the bearer subprotocol", async () => {
    let issued = 0
    const h = setup(async () => `t${++issued}`)
    h.client.connect()
    expect(h.sockets).toHaveLength(0) // no socket before the token
    await vi.advanceTimersByTimeAsync(0)
    expect(h.sockets.map((s) => s.protocols)).toEqual([["bearer.t1"]])
    const first = h.sockets[0]!.socket
    first.accept()
    first.deliver({ type: "snapshot", doc: "gifts", version: 3, epoch: "e1", state: { counter: 0 } })
    first.deliver({ type: "synced", version: 3 })
    h.client.update((draft) => {
      draft.counter += 1
    })
    expect(first.sent).toHaveLength(1)
    // the token expired: the server closes the connection without applying the change
    first.drop()
    await vi.advanceTimersByTimeAsync(LONGEST_DELAY)
    expect(h.sockets.map((s) => s.protocols)).toEqual([["bearer.t1"], ["bearer.t2"]])
    const second = h.sockets[1]!.socket
    const params = second.params
    expect([params.get("since"), params.get("epoch"), params.get("client")]).toEqual(["3", "e1", h.client.clientId])
    second.accept()
    second.deliver({ type: "synced", version: 3 })
    expect(second.sent).toEqual([first.sent[0]]) // resent under its original id
    second.deliver({ type: "ack", id: first.sent[0]!.id, version: 4 })
    expect(h.client.getSnapshot()).toMatchObject({ state: { counter: 1 }, version: 4, status: "synced" })
  })

  it("reports a failing getToken and retries with backoff", async () => {
    let calls = 0
    const h = setup(() => {
      calls += 1
      if (calls === 1) throw new Error("signed out")
      return "fresh"
    })
    h.client.connect()
    await vi.advanceTimersByTimeAsync(0)
    expect(h.sockets).toHaveLength(0)
    expect(h.errors.map((e) => e.code)).toEqual(["unauthorized"])
    expect(h.client.status).toBe("connecting")
    await vi.advanceTimersByTimeAsync(LONGEST_DELAY)
    expect(calls).toBe(2)
    expect(h.sockets.map((s) => s.protocols)).toEqual([["bearer.fresh"]])
  })

  it("opens nothing when disconnected while the token is on its way", async () => {
    let resolve: (token: string) => void = () => {}
    const h = setup(() => new Promise<string>((r) => (resolve = r)))
    h.client.connect()
    await vi.advanceTimersByTimeAsync(0)
    h.client.disconnect()
    resolve("late")
    await vi.advanceTimersByTimeAsync(LONGEST_DELAY)
    expect(h.sockets).toHaveLength(0)
    expect(h.client.status).toBe("offline")
  })
})
