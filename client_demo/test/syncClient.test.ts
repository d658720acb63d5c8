import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import type { SyncError } from "../src/lib/errors"
import { SyncClient } from "../src/lib/syncClient"
import type { Recipe, SyncClientOptions } from "../src/lib/syncClient"
import { FakeSocket } from "./fakeSocket"

interface Doc {
  items: string[]
  counter: number
  owner?: string
}

const START: Doc = { items: ["a", "b"], counter: 0 }
const LONGEST_DELAY = 10_000

const increment: Recipe<Doc> = (draft) => {
  draft.counter += 1
}
const toggleOwner: Recipe<Doc> = (draft) => {
  if (draft.owner === undefined) draft.owner = "me"
  else delete draft.owner
}
const push =
  (item: string): Recipe<Doc> =>
  (draft) => {
    draft.items.push(item)
  }

function setup(options: Partial<SyncClientOptions> = {}) {
  const sockets: FakeSocket[] = []
  const client = new SyncClient<Doc>({
    url: "ws://server/",
    doc: "gifts",
    createSocket: (url) => {
      const socket = new FakeSocket(url)
      sockets.push(socket)
      return socket
    },
    ...options,
  })
  const errors: SyncError[] = []
  client.onError((error) => errors.push(error))
  const last = () => {
    const socket = sockets[sockets.length - 1]
    if (!socket) throw new Error("no socket was created")
    return socket
  }
  return { client, sockets, errors, last }
}

type Harness = ReturnType<typeof setup>

/** The snapshot without the undo flags (see undo.test.ts for those). */
function view(h: Harness) {
  const { state, version, status } = h.client.getSnapshot()
  return { state, version, status }
}

/** Connects and plays a fresh connection: snapshot at `version`, then synced. */
function connectSynced(h: Harness, state: Doc = START, version = 3, epoch = "e1"): FakeSocket {
  h.client.connect()
  const socket = h.last()
  socket.accept()
  socket.deliver({ type: "snapshot", doc: "gifts", version, epoch, state })
  socket.deliver({ type: "synced", version })
  return socket
}

/** Drops the connection and lets the client reconnect; returns the new, open socket. */
function reconnect(h: Harness): FakeSocket {
  h.last().drop()
  vi.advanceTimersByTime(LONGEST_DELAY)
  const socket = h.last()
  socket.accept()
  return socket
}

beforeEach(() => {
  vi.useFakeTimers()
})

afterEach(() => {
  vi.useRealTimers()
  vi.restoreAllMocks()
})

describe("connecting", () => {
  it("opens /ws/{doc} in immer format with a client id and no resume point", () => {
    const h = setup()
    h.client.connect()
    const url = new URL(h.last().url)
    expect(url.origin + url.pathname).toBe("ws://server/ws/gifts")
    expect(url.searchParams.get("format")).toBe("immer")
    expect(url.searchParams.get("client")).toBe(h.client.clientId)
    expect(url.searchParams.has("since")).toBe(false)
  })

  it("goes connecting -> syncing -> synced and shows the snapshot", () => {
    const h = setup()
    expect(h.client.status).toBe("offline")
    h.client.connect()
    expect(h.client.status).toBe("connecting")
    h.last().accept()
    expect(h.client.status).toBe("syncing")
    h.last().deliver({ type: "snapshot", doc: "gifts", version: 3, epoch: "e1", state: START })
    expect(h.client.status).toBe("syncing")
    expect(h.client.state).toEqual(START)
    h.last().deliver({ type: "synced", version: 3 })
    expect(h.client.status).toBe("synced")
    expect(h.client.version).toBe(3)
  })

  it("rejects invalid document ids", () => {
    expect(() => setup({ doc: "no/slashes" })).toThrow(TypeError)
  })

  it("refuses update() before the first snapshot", () => {
    const h = setup()
    h.client.connect()
    expect(() => h.client.update(increment)).toThrow(/first snapshot/)
  })

  it("keeps the snapshot object until something changes", () => {
    const h = setup()
    connectSynced(h)
    const listener = vi.fn()
    h.client.subscribe(listener)
    const before = h.client.getSnapshot()
    h.client.update(() => {}) // changes nothing
    h.last().deliver({ type: "pong" }) // unknown types are skipped
    expect(h.client.getSnapshot()).toBe(before)
    expect(listener).not.toHaveBeenCalled()
    h.client.update(increment)
    expect(h.client.getSnapshot()).not.toBe(before)
    expect(listener).toHaveBeenCalledTimes(1)
  })
})

describe("remote patches", () => {
  it("applies patch messages in version order", () => {
    const h = setup()
    const socket = connectSynced(h)
    socket.deliver({ type: "patch", version: 4, patches: [{ op: "add", path: ["items", 2], value: "c" }] })
    socket.deliver({ type: "patch", version: 5, patches: [{ op: "replace", path: ["counter"], value: 7 }] })
    expect(h.client.state).toEqual({ items: ["a", "b", "c"], counter: 7 })
    expect(h.client.version).toBe(5)
  })

  it("accepts a frame holding an array of messages", () => {
    const h = setup()
    h.client.connect()
    h.last().accept()
    h.last().deliver(
      { type: "snapshot", doc: "gifts", version: 3, epoch: "e1", state: START },
      { type: "patch", version: 4, patches: [{ op: "replace", path: ["counter"], value: 1 }] },
      { type: "patch", version: 5, patches: [{ op: "add", path: ["owner"], value: "x" }] },
      { type: "synced", version: 5 },
    )
    expect(view(h)).toEqual({
      state: { items: ["a", "b"], counter: 1, owner: "x" },
      version: 5,
      status: "synced",
    })
  })

  it("detects a version gap and resyncs from a fresh snapshot", () => {
    const h = setup()
    const socket = connectSynced(h)
    socket.deliver({ type: "patch", version: 5, patches: [{ op: "replace", path: ["counter"], value: 9 }] })
    expect(socket.readyState).toBe(FakeSocket.CLOSED)
    expect(h.client.state).toEqual(START) // the out-of-order batch was not applied
    expect(h.client.status).toBe("offline")
    vi.advanceTimersByTime(LONGEST_DELAY)
    expect(h.sockets).toHaveLength(2)
    expect(h.last().params.has("since")).toBe(false)
    h.last().accept()
    h.last().deliver({ type: "snapshot", doc: "gifts", version: 5, epoch: "e1", state: { ...START, counter: 9 } })
    h.last().deliver({ type: "synced", version: 5 })
    expect(h.client.getSnapshot()).toMatchObject({ version: 5, status: "synced", state: { counter: 9 } })
  })

  it("resyncs when `synced` names a version it does not hold", () => {
    const h = setup()
    h.client.connect()
    h.last().accept()
    h.last().deliver({ type: "snapshot", doc: "gifts", version: 3, epoch: "e1", state: START })
    h.last().deliver({ type: "synced", version: 4 })
    expect(h.last().readyState).toBe(FakeSocket.CLOSED)
  })

  it("reports a malformed frame and resyncs", () => {
    const h = setup()
    const socket = connectSynced(h)
    socket.deliverRaw("{not json")
    expect(h.errors.map((error) => error.code)).toEqual(["protocol"])
    expect(socket.readyState).toBe(FakeSocket.CLOSED)
  })

  it("reports `error` messages without dropping the connection", () => {
    const h = setup()
    const socket = connectSynced(h)
    socket.deliver({ type: "error", error: { code: "invalid", message: "bad frame" } })
    expect(h.errors.map((error) => [error.code, error.message])).toEqual([["invalid", "bad frame"]])
    expect(socket.readyState).toBe(FakeSocket.OPEN)
  })
})

describe("local changes", () => {
  it("shows a change at once and sends its patches with an id and the confirmed base", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update(increment)
    expect(h.client.state).toEqual({ ...START, counter: 1 })
    expect(h.client.status).toBe("syncing")
    expect(socket.sent).toEqual([
      { type: "patch", id: "1", base: 3, patches: [{ op: "replace", path: ["counter"], value: 1 }] },
    ])
  })

  it("moves an acknowledged change into the confirmed state without a new state object", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update(increment)
    const shown = h.client.state
    socket.deliver({ type: "ack", id: "1", version: 4 })
    expect(view(h)).toEqual({ state: { ...START, counter: 1 }, version: 4, status: "synced" })
    expect(h.client.state).toBe(shown)
  })

  it("does not send changes that change nothing", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update((draft) => {
      draft.counter = 0
    })
    expect(socket.sent).toEqual([])
    expect(h.client.status).toBe("synced")
  })

  it("lets a throwing recipe throw to the caller and records nothing", () => {
    const h = setup()
    const socket = connectSynced(h)
    expect(() =>
      h.client.update(() => {
        throw new Error("boom")
      }),
    ).toThrow("boom")
    expect(socket.sent).toEqual([])
    expect(h.client.status).toBe("synced")
  })

  it("sends one change at a time, each against the version it was made on", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update(increment)
    h.client.update(push("c"))
    expect(socket.sent.map((message) => message.id)).toEqual(["1"])
    socket.deliver({ type: "ack", id: "1", version: 4 })
    expect(socket.sent[1]).toEqual({
      type: "patch",
      id: "2",
      base: 4,
      patches: [{ op: "add", path: ["items", 2], value: "c" }],
    })
    socket.deliver({ type: "ack", id: "2", version: 5 })
    expect(view(h)).toEqual({
      state: { items: ["a", "b", "c"], counter: 1 },
      version: 5,
      status: "synced",
    })
  })

  it("re-runs pending recipes on top of remote patches", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update(push("mine"))
    socket.deliver({ type: "patch", version: 4, patches: [{ op: "add", path: ["items", 2], value: "theirs" }] })
    expect(h.client.state?.items).toEqual(["a", "b", "theirs", "mine"])
    expect(h.client.version).toBe(4)
  })

  it("confirms exactly what the server applied when its ack follows a remote patch", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update(increment)
    socket.deliver({ type: "patch", version: 4, patches: [{ op: "add", path: ["owner"], value: "x" }] })
    socket.deliver({ type: "ack", id: "1", version: 5 })
    expect(view(h)).toEqual({
      state: { items: ["a", "b"], counter: 1, owner: "x" },
      version: 5,
      status: "synced",
    })
  })

  it("drops a pending change whose recipe fails on newer state, and reports it", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update(increment)
    h.client.update((draft) => {
      if (!draft.items.includes("b")) throw new Error("b is gone")
      draft.owner = "me"
    })
    socket.deliver({ type: "patch", version: 4, patches: [{ op: "remove", path: ["items", 1] }] })
    expect(h.errors.map((error) => error.code)).toEqual(["recipe_failed"])
    socket.deliver({ type: "ack", id: "1", version: 5 })
    expect(socket.sent).toHaveLength(1)
    expect(view(h)).toEqual({ state: { items: ["a"], counter: 1 }, version: 5, status: "synced" })
  })

  it("resyncs on an ack for a version it cannot account for", () => {
    const h = setup()
    const socket = connectSynced(h)
    socket.deliver({ type: "ack", id: "99", version: 4 })
    expect(socket.readyState).toBe(FakeSocket.CLOSED)
  })
})

describe("rejects", () => {
  it("drops a rejected change, reports it and sends the next one rebased", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update(increment)
    h.client.update(push("c"))
    socket.deliver({
      type: "reject",
      id: "1",
      version: 3,
      error: { code: "forbidden", message: "read-only" },
    })
    expect(h.errors.map((error) => [error.code, error.message])).toEqual([["forbidden", "read-only"]])
    expect(h.client.state).toEqual({ items: ["a", "b", "c"], counter: 0 })
    expect(socket.sent[1]).toMatchObject({ id: "2", base: 3 })
    socket.deliver({ type: "ack", id: "2", version: 4 })
    expect(view(h)).toEqual({
      state: { items: ["a", "b", "c"], counter: 0 },
      version: 4,
      status: "synced",
    })
  })

  it("re-runs a conflicting change on the new state and resends it with a new id and base", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update(increment)
    socket.deliver({ type: "patch", version: 4, patches: [{ op: "replace", path: ["counter"], value: 10 }] })
    socket.deliver({ type: "reject", id: "1", version: 4, error: { code: "conflict", message: "stale" } })
    expect(socket.sent[1]).toEqual({
      type: "patch",
      id: "2",
      base: 4,
      patches: [{ op: "replace", path: ["counter"], value: 11 }],
    })
    socket.deliver({ type: "ack", id: "2", version: 5 })
    expect(view(h)).toEqual({ state: { ...START, counter: 11 }, version: 5, status: "synced" })
    expect(h.errors).toEqual([])
  })

  it("retries conflicts without a cap, waiting a growing, jittered delay from the second in a row", () => {
    vi.spyOn(Math, "random").mockReturnValue(0.999) // the longest waits: just under each ceiling
    const h = setup()
    const socket = connectSynced(h)
    h.client.update(increment)
    const conflict = () => {
      const { id } = socket.sent[socket.sent.length - 1]!
      socket.deliver({ type: "reject", id, version: 3, error: { code: "conflict", message: "stale" } })
    }
    conflict() // the first conflict: resent at once
    expect(socket.sent).toHaveLength(2)
    const ceilings = [50, 100, 200, 400, 800, 1600, 2000, 2000, 2000, 2000, 2000]
    for (const [index, ceiling] of ceilings.entries()) {
      conflict()
      expect(socket.sent).toHaveLength(index + 2)
      vi.advanceTimersByTime(Math.floor(ceiling * 0.999) - 1)
      expect(socket.sent).toHaveLength(index + 2)
      expect(h.client.status).toBe("syncing")
      vi.advanceTimersByTime(1)
      expect(socket.sent).toHaveLength(index + 3)
    }
    const last = socket.sent[socket.sent.length - 1]!
    expect(last).toEqual({
      type: "patch",
      id: String(socket.sent.length),
      base: 3,
      patches: [{ op: "replace", path: ["counter"], value: 1 }],
    })
    socket.deliver({ type: "ack", id: last.id, version: 4 })
    expect(view(h)).toEqual({ state: { ...START, counter: 1 }, version: 4, status: "synced" })
    expect(h.errors).toEqual([])
  })

  it("keeps the changes queued behind a waiting retry, rebases them on what arrives meanwhile and squashes them", () => {
    vi.spyOn(Math, "random").mockReturnValue(0.5)
    const h = setup({ conflictBackoff: { initialMs: 1000, maxMs: 1000 } })
    const socket = connectSynced(h)
    h.client.update(increment)
    for (const id of ["1", "2"]) {
      socket.deliver({ type: "reject", id, version: 3, error: { code: "conflict", message: "stale" } })
    }
    h.client.update(push("c"))
    socket.deliver({ type: "patch", version: 4, patches: [{ op: "replace", path: ["counter"], value: 10 }] })
    vi.advanceTimersByTime(499)
    expect(socket.sent).toHaveLength(2)
    vi.advanceTimersByTime(1)
    expect(socket.sent[2]).toEqual({
      type: "patch",
      id: "3",
      base: 4,
      patches: [
        { op: "replace", path: ["counter"], value: 11 },
        { op: "add", path: ["items", 2], value: "c" },
      ],
    })
    socket.deliver({ type: "ack", id: "3", version: 5 })
    expect(socket.sent).toHaveLength(3)
    expect(view(h)).toEqual({ state: { ...START, counter: 11, items: [...START.items, "c"] }, version: 5, status: "synced" })
  })

  it("forgets a waiting retry when the connection drops, and resends after the catch-up", () => {
    vi.spyOn(Math, "random").mockReturnValue(0.5)
    const h = setup({ conflictBackoff: { initialMs: 60_000, maxMs: 60_000 } })
    connectSynced(h)
    h.client.update(increment)
    for (const id of ["1", "2"]) {
      h.last().deliver({ type: "reject", id, version: 3, error: { code: "conflict", message: "stale" } })
    }
    const socket = reconnect(h)
    socket.deliver({ type: "synced", version: 3 })
    expect(socket.sent).toEqual([
      { type: "patch", id: "3", base: 3, patches: [{ op: "replace", path: ["counter"], value: 1 }] },
    ])
  })

  it("drops a conflicting change that no longer changes anything, and reports it as superseded", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update((draft) => {
      draft.owner ??= "me"
    })
    socket.deliver({ type: "patch", version: 4, patches: [{ op: "add", path: ["owner"], value: "them" }] })
    socket.deliver({ type: "reject", id: "1", version: 4, error: { code: "conflict", message: "stale" } })
    expect(socket.sent).toHaveLength(1)
    expect(h.errors.map((error) => error.code)).toEqual(["superseded"])
    expect(view(h)).toEqual({ state: { ...START, owner: "them" }, version: 4, status: "synced" })
  })

  it("drops a queued change that a remote change made moot, and reports it as superseded", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update(increment)
    h.client.update((draft) => {
      draft.owner ??= "me"
    })
    socket.deliver({ type: "patch", version: 4, patches: [{ op: "add", path: ["owner"], value: "them" }] })
    expect(h.errors.map((error) => error.code)).toEqual(["superseded"])
    socket.deliver({ type: "ack", id: "1", version: 5 })
    expect(socket.sent).toHaveLength(1)
    expect(view(h)).toEqual({
      state: { ...START, counter: 1, owner: "them" },
      version: 5,
      status: "synced",
    })
  })

  it.each(["invalid", "forbidden", "too_large", "rate_limited", "unavailable"])(
    "drops a change rejected as %s and reports it with that code",
    (code) => {
      const h = setup()
      const socket = connectSynced(h)
      h.client.update(increment)
      socket.deliver({ type: "reject", id: "1", version: 3, error: { code, message: "no" } })
      expect(h.errors.map((error) => [error.code, error.message])).toEqual([[code, "no"]])
      expect(socket.sent).toHaveLength(1)
      expect(view(h)).toEqual({ state: START, version: 3, status: "synced" })
    },
  )

  it("never drops a change without a report", () => {
    // Random interleavings of local changes, remote changes and answers of every kind: each
    // change made ends up acknowledged or reported, exactly once.
    vi.spyOn(Math, "random").mockReturnValue(0.5)
    let seed = 7
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31
      return seed / 2 ** 31
    }
    const seen = { acked: 0, superseded: 0, invalid: 0 }
    for (let round = 0; round < 30; round++) {
      const h = setup()
      const socket = connectSynced(h, { items: [], counter: 0 })
      let version = 3
      let made = 0
      let acked = 0
      for (let step = 0; step < 60; step++) {
        const roll = random()
        if (roll < 0.3) {
          const item = `x${made}`
          const before = h.client.state
          h.client.update((draft) => {
            if (!draft.items.includes("stop")) draft.items.push(item)
          })
          if (h.client.state !== before) made += 1
        } else if (roll < 0.4) {
          version += 1
          socket.deliver({ type: "patch", version, patches: [{ op: "add", path: ["items", "-"], value: "stop" }] })
          version += 1
          socket.deliver({ type: "patch", version, patches: [{ op: "replace", path: ["items"], value: [] }] })
        } else if (roll < 0.55) {
          version += 1
          socket.deliver({ type: "patch", version, patches: [{ op: "replace", path: ["counter"], value: version }] })
        } else {
          vi.advanceTimersByTime(2000)
          const waiting = socket.sent.length
          const head = socket.sent[waiting - 1]
          if (!head || h.client.status === "synced") continue
          const answer = random()
          if (answer < 0.4) {
            version += 1
            socket.deliver({ type: "ack", id: head.id, version })
            acked += head.patches.length // one push per change; a squashed batch settles them all
          } else if (answer < 0.8) {
            socket.deliver({ type: "reject", id: head.id, version, error: { code: "conflict", message: "" } })
          } else {
            socket.deliver({ type: "reject", id: head.id, version, error: { code: "invalid", message: "" } })
          }
        }
      }
      for (let drain = 0; drain < 100 && h.client.status !== "synced"; drain++) {
        vi.advanceTimersByTime(2000)
        const head = socket.sent[socket.sent.length - 1]!
        version += 1
        socket.deliver({ type: "ack", id: head.id, version })
        acked += head.patches.length
      }
      expect(h.client.status).toBe("synced")
      expect(h.errors.every((error) => ["superseded", "invalid"].includes(error.code))).toBe(true)
      expect(acked + h.errors.length).toBe(made)
      seen.acked += acked
      for (const error of h.errors) seen[error.code as "superseded" | "invalid"] += 1
    }
    expect(Math.min(seen.acked, seen.superseded, seen.invalid)).toBeGreaterThan(10)
  })
})

describe("acks carrying the applied patches", () => {
  it("confirms what the server applied instead of what was sent", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update(push("mine"))
    h.client.update(increment)
    expect(socket.sent[0]!.patches).toEqual([{ op: "add", path: ["items", 2], value: "mine" }])
    // The server rebased the stale batch over an insert it had committed first: ours landed after it.
    socket.deliver({ type: "patch", version: 4, patches: [{ op: "add", path: ["items", 0], value: "first" }] })
    socket.deliver({
      type: "ack",
      id: "1",
      version: 5,
      patches: [{ op: "add", path: ["items", 1], value: "mine" }],
    })
    expect(h.client.state).toEqual({ items: ["first", "mine", "a", "b"], counter: 1 })
    expect(h.client.version).toBe(5)
    // The next change was rebased on the server's state: it goes out against version 5.
    expect(socket.sent[1]).toEqual({
      type: "patch",
      id: "2",
      base: 5,
      patches: [{ op: "replace", path: ["counter"], value: 1 }],
    })
    socket.deliver({ type: "ack", id: "2", version: 6 })
    expect(view(h)).toEqual({
      state: { items: ["first", "mine", "a", "b"], counter: 1 },
      version: 6,
      status: "synced",
    })
  })

  it("takes the server's patches even when nothing arrived in between (normalisation)", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update((draft) => {
      draft.items[1] = "B"
    })
    socket.deliver({
      type: "ack",
      id: "1",
      version: 4,
      patches: [{ op: "replace", path: ["items", 1], value: "normalised" }],
    })
    expect(view(h)).toEqual({
      state: { items: ["a", "normalised"], counter: 0 },
      version: 4,
      status: "synced",
    })
  })

  it("resyncs when the server's patches do not apply to its confirmed state", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update(increment)
    socket.deliver({ type: "ack", id: "1", version: 4, patches: [{ op: "add", path: ["missing", "x"], value: 1 }] })
    expect(socket.readyState).toBe(FakeSocket.CLOSED)
  })

  it("ignores the patches of an ack for a version it already holds", () => {
    const h = setup()
    connectSynced(h)
    h.client.update(increment)
    const socket = reconnect(h)
    socket.deliver({ type: "patch", version: 4, patches: [{ op: "replace", path: ["counter"], value: 1 }] })
    socket.deliver({ type: "synced", version: 4 })
    socket.deliver({ type: "ack", id: "1", version: 4, patches: [{ op: "replace", path: ["counter"], value: 1 }] })
    expect(view(h)).toEqual({ state: { ...START, counter: 1 }, version: 4, status: "synced" })
  })
})

describe("reconnecting", () => {
  it("resumes with since, epoch and the same client id", () => {
    const h = setup()
    connectSynced(h, START, 3, "e1")
    h.last().drop()
    expect(h.client.status).toBe("offline")
    vi.advanceTimersByTime(LONGEST_DELAY)
    const params = h.last().params
    expect([params.get("since"), params.get("epoch"), params.get("client")]).toEqual(["3", "e1", h.client.clientId])
  })

  it("backs off exponentially with jitter and starts over once synced", () => {
    vi.spyOn(Math, "random").mockReturnValue(0) // the smallest delays: half of each ceiling
    const h = setup({ backoff: { initialMs: 100, maxMs: 1000 } })
    h.client.connect()
    const waitFor = (ms: number) => {
      const count = h.sockets.length
      h.last().drop()
      vi.advanceTimersByTime(ms - 1)
      expect(h.sockets).toHaveLength(count)
      vi.advanceTimersByTime(1)
      expect(h.sockets).toHaveLength(count + 1)
    }
    waitFor(50)
    waitFor(100)
    waitFor(200)
    h.last().accept()
    h.last().deliver({ type: "snapshot", doc: "gifts", version: 3, epoch: "e1", state: START })
    h.last().deliver({ type: "synced", version: 3 })
    waitFor(50)
  })

  it("never sends while disconnected or catching up, then resends with the original id", () => {
    const h = setup()
    connectSynced(h)
    h.client.update(toggleOwner)
    h.last().drop()
    h.client.update(increment) // made offline
    expect(h.client.state).toEqual({ ...START, owner: "me", counter: 1 })
    vi.advanceTimersByTime(LONGEST_DELAY)
    const socket = h.last()
    expect(socket.readyState).toBe(FakeSocket.CONNECTING) // FakeSocket.send throws if used now
    socket.accept()
    expect(socket.sent).toEqual([])
    socket.deliver({ type: "synced", version: 3 }) // the server had not received the change
    expect(socket.sent).toEqual([
      { type: "patch", id: "1", base: 3, patches: [{ op: "add", path: ["owner"], value: "me" }] },
    ])
    socket.deliver({ type: "ack", id: "1", version: 4 })
    expect(socket.sent[1]).toMatchObject({ id: "2", base: 4 })
    socket.deliver({ type: "ack", id: "2", version: 5 })
    expect(view(h)).toEqual({ state: { ...START, owner: "me", counter: 1 }, version: 5, status: "synced" })
  })

  it("lets the server deduplicate a change that was committed before the connection died", () => {
    const h = setup()
    connectSynced(h)
    h.client.update(toggleOwner) // not idempotent: re-running it on top of itself undoes it
    const socket = reconnect(h)
    // The catch-up contains our own change (its ack was lost with the old connection).
    socket.deliver({ type: "patch", version: 4, patches: [{ op: "add", path: ["owner"], value: "me" }] })
    socket.deliver({ type: "synced", version: 4 })
    expect(socket.sent).toEqual([
      { type: "patch", id: "1", base: 4, patches: [{ op: "remove", path: ["owner"] }] },
    ])
    // The server recognises (client, "1") and answers with the original ack instead of applying it.
    socket.deliver({ type: "ack", id: "1", version: 4 })
    expect(view(h)).toEqual({ state: { ...START, owner: "me" }, version: 4, status: "synced" })
    expect(socket.sent).toHaveLength(1)
  })

  it("settles a change acknowledged during the catch-up without resending it", () => {
    const h = setup()
    connectSynced(h)
    h.client.update(increment)
    const socket = reconnect(h)
    socket.deliver({ type: "ack", id: "1", version: 4 }, { type: "synced", version: 4 })
    expect(socket.sent).toEqual([])
    expect(view(h)).toEqual({ state: { ...START, counter: 1 }, version: 4, status: "synced" })
  })

  it("keeps the original ids after a snapshot of the same epoch", () => {
    const h = setup()
    connectSynced(h)
    h.client.update(toggleOwner)
    const socket = reconnect(h)
    socket.deliver({ type: "snapshot", doc: "gifts", version: 10, epoch: "e1", state: { ...START, counter: 5 } })
    socket.deliver({ type: "synced", version: 10 })
    expect(socket.sent).toEqual([
      { type: "patch", id: "1", base: 10, patches: [{ op: "add", path: ["owner"], value: "me" }] },
    ])
    expect(h.client.state).toEqual({ ...START, counter: 5, owner: "me" })
  })

  it("re-runs pending changes as new ones after a snapshot of another epoch", () => {
    const h = setup()
    connectSynced(h)
    h.client.update(push("mine"))
    h.client.update(increment)
    const socket = reconnect(h)
    socket.deliver({ type: "snapshot", doc: "gifts", version: 2, epoch: "e2", state: { items: ["x"], counter: 40 } })
    socket.deliver({ type: "synced", version: 2 })
    expect(h.client.state).toEqual({ items: ["x", "mine"], counter: 41 })
    expect(socket.sent).toEqual([
      { type: "patch", id: "3", base: 2, patches: [{ op: "add", path: ["items", 1], value: "mine" }] },
    ])
    socket.deliver({ type: "ack", id: "3", version: 3 })
    expect(socket.sent[1]).toEqual({
      type: "patch",
      id: "4",
      base: 3,
      patches: [{ op: "replace", path: ["counter"], value: 41 }],
    })
    socket.deliver({ type: "ack", id: "4", version: 4 })
    expect(view(h)).toEqual({ state: { items: ["x", "mine"], counter: 41 }, version: 4, status: "synced" })
  })

  it("stops reconnecting on disconnect() and resumes on connect()", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update(increment)
    h.client.disconnect()
    expect(socket.readyState).toBe(FakeSocket.CLOSED)
    vi.advanceTimersByTime(LONGEST_DELAY)
    expect(h.sockets).toHaveLength(1)
    expect(view(h)).toEqual({ state: { ...START, counter: 1 }, version: 3, status: "offline" })
    h.client.connect()
    expect(h.last().params.get("since")).toBe("3")
    h.last().accept()
    h.last().deliver({ type: "synced", version: 3 })
    expect(h.last().sent).toEqual([
      { type: "patch", id: "1", base: 3, patches: [{ op: "replace", path: ["counter"], value: 1 }] },
    ])
  })
})

describe("squashing under contention", () => {
  const conflict = (id: string, version = 3) => ({
    type: "reject",
    id,
    version,
    error: { code: "conflict", message: "stale" },
  })

  /** Three changes queued behind a head that met a conflict: the next send is one batch. */
  function contended(h: Harness) {
    const socket = connectSynced(h)
    h.client.update(increment) // id 1
    h.client.update(push("c")) // id 2
    h.client.update(toggleOwner) // id 3
    socket.deliver(conflict("1")) // head re-run, new id 4; first conflict: no wait
    return socket
  }

  const squashed = {
    type: "patch",
    id: "4",
    base: 3,
    patches: [
      { op: "replace", path: ["counter"], value: 1 },
      { op: "add", path: ["items", 2], value: "c" },
      { op: "add", path: ["owner"], value: "me" },
    ],
  }

  it("sends changes one by one until the head meets a conflict, then the whole queue as one batch", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update(increment)
    h.client.update(push("c"))
    expect(socket.sent).toEqual([
      { type: "patch", id: "1", base: 3, patches: [{ op: "replace", path: ["counter"], value: 1 }] },
    ])
    socket.deliver({ type: "ack", id: "1", version: 4 })
    expect(socket.sent[1]).toEqual({
      type: "patch",
      id: "2",
      base: 4,
      patches: [{ op: "add", path: ["items", 2], value: "c" }],
    })
    socket.deliver({ type: "ack", id: "2", version: 5 })

    const h2 = setup()
    const contendedSocket = contended(h2)
    expect(contendedSocket.sent).toHaveLength(2)
    expect(contendedSocket.sent[1]).toEqual(squashed)
  })

  it("settles every change of the batch with its ack", () => {
    const h = setup()
    const socket = contended(h)
    const shown = h.client.state
    socket.deliver({ type: "ack", id: "4", version: 4 })
    expect(view(h)).toEqual({
      state: { items: ["a", "b", "c"], counter: 1, owner: "me" },
      version: 4,
      status: "synced",
    })
    expect(h.client.state).toBe(shown) // nothing arrived in between: the shown state is the server's
    expect(socket.sent).toHaveLength(2)
    expect(h.errors).toEqual([])
  })

  it("confirms what the server applied for a batch, and re-runs the changes queued behind it", () => {
    const h = setup()
    const socket = contended(h)
    h.client.update(push("d")) // queued behind the batch
    socket.deliver({ type: "patch", version: 4, patches: [{ op: "replace", path: ["counter"], value: 10 }] })
    const applied = [
      { op: "replace", path: ["counter"], value: 11 },
      { op: "add", path: ["items", 2], value: "c" },
      { op: "add", path: ["owner"], value: "me" },
    ]
    socket.deliver({ type: "ack", id: "4", version: 5, patches: applied })
    expect(socket.sent[2]).toEqual({
      type: "patch",
      id: "5",
      base: 5,
      patches: [{ op: "add", path: ["items", 3], value: "d" }],
    })
    socket.deliver({ type: "ack", id: "5", version: 6 })
    expect(view(h)).toEqual({
      state: { items: ["a", "b", "c", "d"], counter: 11, owner: "me" },
      version: 6,
      status: "synced",
    })
  })

  it("resends the same batch under the same id after a reconnect, without the changes queued since", () => {
    const h = setup()
    contended(h)
    h.client.update(push("d")) // queued after the batch was sent
    const socket = reconnect(h)
    socket.deliver({ type: "synced", version: 3 })
    expect(socket.sent).toEqual([squashed])
    socket.deliver({ type: "ack", id: "4", version: 4 })
    expect(socket.sent[1]).toEqual({
      type: "patch",
      id: "5",
      base: 4,
      patches: [{ op: "add", path: ["items", 3], value: "d" }],
    })
  })

  it("resends the same changes under the same id even when some of them became no-ops", () => {
    const h = setup()
    connectSynced(h)
    h.client.update(increment)
    h.client.update((draft) => {
      draft.owner ??= "me"
    })
    h.last().deliver(conflict("1"))
    expect(h.last().sent[1]).toMatchObject({ id: "3", base: 3 })
    h.client.update(push("d"))
    const socket = reconnect(h)
    socket.deliver({ type: "patch", version: 4, patches: [{ op: "add", path: ["owner"], value: "them" }] })
    socket.deliver({ type: "synced", version: 4 })
    expect(socket.sent).toEqual([
      { type: "patch", id: "3", base: 4, patches: [{ op: "replace", path: ["counter"], value: 1 }] },
    ])
    socket.deliver({ type: "ack", id: "3", version: 5 })
    expect(socket.sent[1]).toEqual({
      type: "patch",
      id: "4",
      base: 5,
      patches: [{ op: "add", path: ["items", 2], value: "d" }],
    })
    socket.deliver({ type: "ack", id: "4", version: 6 })
    expect(view(h)).toEqual({
      state: { items: ["a", "b", "d"], counter: 1, owner: "them" },
      version: 6,
      status: "synced",
    })
  })

  it("reports a change of a refused batch that became a no-op, and sends the others alone", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update(increment)
    h.client.update((draft) => {
      draft.owner ??= "me"
    })
    socket.deliver(conflict("1"))
    socket.deliver({ type: "patch", version: 4, patches: [{ op: "add", path: ["owner"], value: "them" }] })
    socket.deliver({ type: "reject", id: "3", version: 4, error: { code: "too_large", message: "no" } })
    expect(h.errors.map((error) => error.code)).toEqual(["superseded"])
    expect(socket.sent[2]).toEqual({
      type: "patch",
      id: "4",
      base: 4,
      patches: [{ op: "replace", path: ["counter"], value: 1 }],
    })
  })

  it("settles a batch the server deduplicates after a reconnect", () => {
    const h = setup()
    contended(h)
    const socket = reconnect(h)
    // The catch-up holds our own batch (its ack was lost with the old connection).
    socket.deliver({ type: "patch", version: 4, patches: squashed.patches })
    socket.deliver({ type: "synced", version: 4 })
    expect(socket.sent[0]).toMatchObject({ id: "4", base: 4 })
    socket.deliver({ type: "ack", id: "4", version: 4 })
    expect(view(h)).toEqual({
      state: { items: ["a", "b", "c"], counter: 1, owner: "me" },
      version: 4,
      status: "synced",
    })
    expect(socket.sent).toHaveLength(1)
  })

  it("re-runs a conflicting batch and squashes it again, with what was queued since, under a new id", () => {
    vi.spyOn(Math, "random").mockReturnValue(0.5)
    const h = setup({ conflictBackoff: { initialMs: 1000, maxMs: 1000 } })
    const socket = contended(h)
    h.client.update(push("d"))
    socket.deliver({ type: "patch", version: 4, patches: [{ op: "replace", path: ["counter"], value: 10 }] })
    socket.deliver(conflict("4", 4))
    expect(socket.sent).toHaveLength(2)
    vi.advanceTimersByTime(500) // second conflict in a row: half of the 1 s ceiling
    expect(socket.sent[2]).toEqual({
      type: "patch",
      id: "6",
      base: 4,
      patches: [
        { op: "replace", path: ["counter"], value: 11 },
        { op: "add", path: ["items", 2], value: "c" },
        { op: "add", path: ["owner"], value: "me" },
        { op: "add", path: ["items", 3], value: "d" },
      ],
    })
    socket.deliver({ type: "ack", id: "6", version: 5 })
    expect(view(h)).toEqual({
      state: { items: ["a", "b", "c", "d"], counter: 11, owner: "me" },
      version: 5,
      status: "synced",
    })
    expect(h.errors).toEqual([])
  })

  it("drops the changes of a conflicting batch that no longer change anything, and reports each", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update(increment)
    h.client.update((draft) => {
      draft.owner ??= "me"
    })
    socket.deliver(conflict("1"))
    expect(socket.sent[1]).toMatchObject({ id: "3" })
    socket.deliver({ type: "patch", version: 4, patches: [{ op: "add", path: ["owner"], value: "them" }] })
    socket.deliver(conflict("3", 4))
    expect(h.errors.map((error) => error.code)).toEqual(["superseded"])
    vi.advanceTimersByTime(LONGEST_DELAY)
    expect(socket.sent[2]).toEqual({
      type: "patch",
      id: "4",
      base: 4,
      patches: [{ op: "replace", path: ["counter"], value: 1 }],
    })
  })

  it("after another reject of a batch, sends its changes alone: only the refused one is dropped", () => {
    const h = setup()
    const socket = contended(h)
    socket.deliver({ type: "reject", id: "4", version: 3, error: { code: "invalid", message: "bad" } })
    expect(h.errors).toEqual([])
    expect(view(h).state).toEqual({ items: ["a", "b", "c"], counter: 1, owner: "me" })
    expect(socket.sent[2]).toEqual({
      type: "patch",
      id: "5",
      base: 3,
      patches: [{ op: "replace", path: ["counter"], value: 1 }],
    })
    socket.deliver({ type: "ack", id: "5", version: 4 })
    expect(socket.sent[3]).toEqual({
      type: "patch",
      id: "2",
      base: 4,
      patches: [{ op: "add", path: ["items", 2], value: "c" }],
    })
    socket.deliver({ type: "reject", id: "2", version: 4, error: { code: "invalid", message: "bad" } })
    expect(h.errors.map((error) => [error.code, error.message])).toEqual([["invalid", "bad"]])
    expect(socket.sent[4]).toEqual({
      type: "patch",
      id: "3",
      base: 4,
      patches: [{ op: "add", path: ["owner"], value: "me" }],
    })
    socket.deliver({ type: "ack", id: "3", version: 5 })
    expect(view(h)).toEqual({ state: { items: ["a", "b"], counter: 1, owner: "me" }, version: 5, status: "synced" })
    expect(h.errors).toHaveLength(1)
  })

  it("keeps each change of a squashed batch its own undo step", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update(increment)
    h.client.stopCapturing()
    h.client.update(push("c"))
    h.client.stopCapturing()
    h.client.update(toggleOwner)
    socket.deliver(conflict("1"))
    expect(socket.sent[1]).toEqual(squashed)
    socket.deliver({ type: "ack", id: "4", version: 4 })
    expect(h.client.undo()).toBe(true) // the owner
    expect(socket.sent[2]).toEqual({ type: "patch", id: "5", base: 4, patches: [{ op: "remove", path: ["owner"] }] })
    socket.deliver({ type: "ack", id: "5", version: 5 })
    expect(h.client.undo()).toBe(true) // "c"
    expect(socket.sent[3]).toMatchObject({ id: "6", base: 5 })
    socket.deliver({ type: "ack", id: "6", version: 6 })
    expect(view(h)).toEqual({ state: { items: ["a", "b"], counter: 1 }, version: 6, status: "synced" })
    expect(h.client.redo()).toBe(true)
    socket.deliver({ type: "ack", id: "7", version: 7 })
    expect(view(h)).toEqual({ state: { items: ["a", "b", "c"], counter: 1 }, version: 7, status: "synced" })
    expect(h.errors).toEqual([])
  })

  it("undoes a change of a batch the server rebased, where its value still holds", () => {
    const h = setup()
    const socket = connectSynced(h)
    h.client.update(increment)
    h.client.stopCapturing()
    h.client.update(push("c"))
    socket.deliver(conflict("1"))
    socket.deliver({ type: "patch", version: 4, patches: [{ op: "add", path: ["items", 0], value: "z" }] })
    socket.deliver({
      type: "ack",
      id: "3",
      version: 5,
      patches: [
        { op: "replace", path: ["counter"], value: 1 },
        { op: "add", path: ["items", 3], value: "c" },
      ],
    })
    expect(view(h)).toEqual({ state: { items: ["z", "a", "b", "c"], counter: 1 }, version: 5, status: "synced" })
    expect(h.client.undo()).toBe(true)
    expect(h.client.state).toEqual({ items: ["z", "a", "b"], counter: 1 })
    expect(h.client.undo()).toBe(true)
    expect(h.client.state).toEqual({ items: ["z", "a", "b"], counter: 0 })
  })
})
