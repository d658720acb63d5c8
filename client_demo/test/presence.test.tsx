// @vitest-environment jsdom
import { act, cleanup, render, screen } from "@testing-library/react"
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import type { SyncError } from "../src/lib/errors"
import { useMyPresence, useOthers } from "../src/lib/react"
import { SyncClient } from "../src/lib/syncClient"
import { FakeSocket } from "./fakeSocket"

const LONGEST_DELAY = 10_000

function setup() {
  const sockets: FakeSocket[] = []
  const client = new SyncClient<{ n: number }>({
    url: "ws://server",
    doc: "gifts",
    createSocket: (url) => {
      const socket = new FakeSocket(url)
      sockets.push(socket)
      return socket
    },
  })
  const errors: SyncError[] = []
  client.onError((error) => errors.push(error))
  const last = () => sockets[sockets.length - 1]!
  return { client, sockets, errors, last }
}

function synced(socket: FakeSocket, version = 1): void {
  socket.accept()
  socket.deliver({ type: "snapshot", doc: "gifts", version, epoch: "e", state: { n: 0 } })
  socket.deliver({ type: "synced", version })
}

function presenceSent(socket: FakeSocket): unknown[] {
  return socket.frames.map((f) => JSON.parse(f) as { type: string }).filter((m) => m.type === "presence")
}

const ann = { conn: "n.1", user: "ann", state: { gift: "g1" } }
const bob = { conn: "n.2", user: null, state: {} }

beforeEach(() => {
  vi.useFakeTimers()
})

afterEach(() => {
  cleanup()
  vi.useRealTimers()
  vi.unstubAllGlobals()
})

describe("SyncClient presence", () => {
  it("asks for presence and sends my merged state once synced", () => {
    const h = setup()
    h.client.setPresence({ gift: "g1" })
    h.client.setPresence({ cursor: 3 })
    h.client.connect()
    expect(h.last().params.get("presence")).toBe("1")
    h.last().accept()
    expect(presenceSent(h.last())).toEqual([]) // not before synced
    synced(h.last())
    expect(presenceSent(h.last())).toEqual([{ type: "presence", state: { gift: "g1", cursor: 3 } }])
    h.client.setPresence({ cursor: undefined })
    vi.advanceTimersByTime(100)
    expect(presenceSent(h.last()).at(-1)).toEqual({ type: "presence", state: { gift: "g1" } })
    expect(h.client.presence).toEqual({ gift: "g1" })
  })

  it("sends at most once per throttle period, the latest value winning", () => {
    const h = setup()
    h.client.connect()
    synced(h.last())
    for (let x = 0; x < 20; x++) {
      h.client.setPresence({ x })
      vi.advanceTimersByTime(10)
    }
    // 200 ms of changes every 10 ms: the first at once, then one per 80 ms
    vi.advanceTimersByTime(200)
    const sent = presenceSent(h.last()) as { state: { x: number } }[]
    expect(sent.length).toBeGreaterThanOrEqual(3)
    expect(sent.length).toBeLessThanOrEqual(4)
    expect(sent[0]!.state.x).toBe(0)
    expect(sent.at(-1)!.state.x).toBe(19)
  })

  it("shows the others from the full list and the deltas, never itself", () => {
    const h = setup()
    h.client.connect()
    synced(h.last())
    const before = h.client.getSnapshot()
    h.last().deliver({ type: "presence", self: "n.9", peers: [ann, bob] })
    expect(h.client.others).toEqual([ann, bob])
    expect(h.client.getSnapshot()).toBe(before) // document views do not re-render
    const presence = h.client.getPresenceSnapshot()
    h.last().deliver({
      type: "presence",
      peers: [
        { conn: "n.1", user: "ann", state: null },
        { conn: "n.2", user: null, state: { gift: "g2" }, version: 1 },
        { conn: "n.9", user: null, state: { echo: true } },
      ],
    })
    expect(h.client.others).toEqual([{ conn: "n.2", user: null, state: { gift: "g2" }, version: 1 }])
    expect(h.client.getPresenceSnapshot()).not.toBe(presence)
  })

  it("keeps the others about a second across a reconnect, then replaces them", () => {
    const h = setup()
    h.client.connect()
    synced(h.last())
    h.last().deliver({ type: "presence", self: "n.9", peers: [ann, bob] })
    h.last().drop()
    expect(h.client.others).toHaveLength(2) // no flash
    vi.advanceTimersByTime(500)
    const socket = h.last()
    expect(socket).not.toBe(h.sockets[0])
    synced(socket)
    socket.deliver({ type: "presence", self: "n.10", peers: [bob] })
    expect(h.client.others).toEqual([bob])
    vi.advanceTimersByTime(2000)
    expect(h.client.others).toEqual([bob])
  })

  it("forgets the others when the connection stays away", () => {
    const h = setup()
    h.client.connect()
    synced(h.last())
    h.last().deliver({ type: "presence", self: "n.9", peers: [ann] })
    h.last().drop()
    vi.advanceTimersByTime(999)
    expect(h.client.others).toHaveLength(1)
    vi.advanceTimersByTime(2)
    expect(h.client.others).toEqual([])
  })

  it("sends my state again after a reconnect", () => {
    const h = setup()
    h.client.connect()
    synced(h.last())
    h.client.setPresence({ gift: "g1" })
    h.last().drop()
    vi.advanceTimersByTime(LONGEST_DELAY)
    synced(h.last())
    expect(presenceSent(h.last())).toEqual([{ type: "presence", state: { gift: "g1" } }])
  })

  it("says it is gone on pagehide, and comes back on pageshow", () => {
    const h = setup()
    h.client.connect()
    synced(h.last())
    h.client.setPresence({ gift: "g1" })
    window.dispatchEvent(new Event("pagehide"))
    expect(presenceSent(h.last()).at(-1)).toEqual({ type: "presence", state: null })
    vi.advanceTimersByTime(200)
    window.dispatchEvent(new Event("pageshow"))
    expect(presenceSent(h.last()).at(-1)).toEqual({ type: "presence", state: { gift: "g1" } })
    h.client.disconnect()
    const count = h.last().frames.length
    window.dispatchEvent(new Event("pagehide"))
    expect(h.last().frames.length).toBe(count)
  })

  it("treats a malformed presence message as a protocol error", () => {
    const h = setup()
    h.client.connect()
    synced(h.last())
    h.last().deliver({ type: "presence", peers: [{ conn: 1, user: null, state: {} }] })
    expect(h.errors.map((e) => e.code)).toEqual(["protocol"])
  })
})

function Room({ url }: { url: string }) {
  const [me, setMe] = useMyPresence<{ gift?: string }>("doc", { url })
  const others = useOthers<{ gift?: string }>("doc", { url })
  return (
    <div>
      <output>{`me=${me.gift ?? "-"} others=${others.map((o) => `${o.user ?? "?"}:${o.state.gift ?? "-"}`).join(",")}`}</output>
      <button onClick={() => setMe({ gift: "g7" })}>point</button>
    </div>
  )
}

describe("useMyPresence and useOthers", () => {
  beforeEach(() => {
    FakeSocket.created.length = 0
    vi.stubGlobal("WebSocket", FakeSocket)
  })

  it("set my presence and show the others", () => {
    render(<Room url="ws://presence-hooks" />)
    expect(FakeSocket.created).toHaveLength(1) // both hooks share one client
    const socket = FakeSocket.created[0]!
    act(() => synced(socket))
    act(() => socket.deliver({ type: "presence", self: "n.3", peers: [ann] }))
    expect(screen.getByRole("status").textContent).toBe("me=- others=ann:g1")
    act(() => screen.getByText("point").click())
    expect(screen.getByRole("status").textContent).toBe("me=g7 others=ann:g1")
    expect(presenceSent(socket)).toEqual([{ type: "presence", state: { gift: "g7" } }])
  })
})
