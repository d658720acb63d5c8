import * as immer11 from "immer"
import * as immer9 from "immer9"
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import type { SyncError } from "../src/lib/errors"
import { SyncClient } from "../src/lib/syncClient"
import type { Recipe } from "../src/lib/syncClient"
import { UndoHistory, deepEqual, revertRecipe } from "../src/lib/undo"
import type { Edit, RevertCount } from "../src/lib/undo"
import { FakeSocket } from "./fakeSocket"

interface Gift {
  id: string
  name: string
  reservedBy?: number
}

interface Doc {
  title: string
  gifts: Gift[]
  tags: string[]
}

const START: Doc = {
  title: "list",
  gifts: [
    { id: "a", name: "A" },
    { id: "b", name: "B" },
    { id: "c", name: "C" },
    { id: "d", name: "D" },
  ],
  tags: ["x", "y", "z"],
}

/** The part of Immer the tests use, the same in both versions. */
interface ImmerLike {
  enablePatches(): void
  produce(base: unknown, recipe: (draft: any) => any): unknown
  produceWithPatches(base: unknown, recipe: (draft: any) => any): [unknown, immer11.Patch[], immer11.Patch[]]
  applyPatches(base: unknown, patches: readonly immer11.Patch[]): unknown
  freeze<T>(value: T, deep?: boolean): T
}

const IMMERS: [string, ImmerLike][] = [
  ["immer 11", immer11 as unknown as ImmerLike],
  ["immer 9.0.21", immer9 as unknown as ImmerLike],
]

describe.each(IMMERS)("revertRecipe with %s", (_, immer) => {
  immer.enablePatches()
  const produce = <T,>(state: T, recipe: Recipe<T>): T => immer.produce(state, recipe) as T
  /** My edit on `start`, then someone else's on top, then my undo: the state it leaves. */
  function undoAfter(mine: Recipe<Doc>, theirs: Recipe<Doc>, idField = "id") {
    const before = immer.freeze(structuredClone(START), true)
    const after = produce(before, mine)
    const now = produce(after, theirs)
    const count: RevertCount = { applied: 0, skipped: 0 }
    const edit: Edit<Doc> = { before, after }
    const [undone, patches] = immer.produceWithPatches(now, revertRecipe([edit], idField, count))
    // what the recipe emits applies to the state it ran on like any change (it is sent as one)
    expect(immer.applyPatches(now, patches)).toEqual(undone)
    return { undone: undone as Doc, now, count }
  }
  const nothing: Recipe<Doc> = () => {}

  it("restores an object member that still holds what my change wrote", () => {
    const { undone, count } = undoAfter(
      (d) => {
        d.title = "mine"
        d.gifts[1]!.reservedBy = 1
      },
      (d) => {
        d.gifts[2]!.reservedBy = 2
      },
    )
    expect(undone.title).toBe("list")
    expect(undone.gifts.map((gift) => gift.reservedBy)).toEqual([undefined, undefined, 2, undefined])
    expect(count).toEqual({ applied: 2, skipped: 0 })
  })

  it("keeps a collaborator's newer value, applying the rest", () => {
    const { undone, count } = undoAfter(
      (d) => {
        d.title = "mine"
        d.gifts[1]!.reservedBy = 1
      },
      (d) => {
        d.gifts[1]!.reservedBy = 2
      },
    )
    expect(undone.title).toBe("list")
    expect(undone.gifts[1]).toEqual({ id: "b", name: "B", reservedBy: 2 })
    expect(count).toEqual({ applied: 1, skipped: 1 })
  })

  it("changes nothing when every value was changed since", () => {
    const { undone, now, count } = undoAfter(
      (d) => {
        d.title = "mine"
      },
      (d) => {
        d.title = "theirs"
      },
    )
    expect(undone).toBe(now)
    expect(count).toEqual({ applied: 0, skipped: 1 })
  })

  it("finds an element I edited by id after others moved it", () => {
    const { undone } = undoAfter(
      (d) => {
        d.gifts[2]!.reservedBy = 1
      },
      (d) => {
        d.gifts.splice(0, 1)
        d.gifts.push({ id: "e", name: "E", reservedBy: 1 })
      },
    )
    expect(undone.gifts).toEqual([
      { id: "b", name: "B" },
      { id: "c", name: "C" },
      { id: "d", name: "D" },
      { id: "e", name: "E", reservedBy: 1 },
    ])
  })

  it("undoes an append by position while earlier elements changed", () => {
    const { undone } = undoAfter(
      (d) => {
        d.gifts.push({ id: "e", name: "E" })
      },
      (d) => {
        d.gifts[0]!.reservedBy = 2
      },
    )
    expect(undone.gifts.map((gift) => gift.id)).toEqual(["a", "b", "c", "d"])
    expect(undone.gifts[0]!.reservedBy).toBe(2)
  })

  it("puts a removed element back at its place by id while a later one was edited", () => {
    const { undone, count } = undoAfter(
      (d) => {
        d.gifts.splice(1, 1)
      },
      (d) => {
        d.gifts[2]!.reservedBy = 2 // "d", shifted down by my removal
      },
    )
    expect(undone.gifts).toEqual([
      { id: "a", name: "A" },
      { id: "b", name: "B" },
      { id: "c", name: "C" },
      { id: "d", name: "D", reservedBy: 2 },
    ])
    expect(count.skipped).toBe(0)
  })

  it("removes an element I inserted by id after others inserted before it", () => {
    const { undone } = undoAfter(
      (d) => {
        d.gifts.splice(2, 0, { id: "mine", name: "Mine" })
      },
      (d) => {
        d.gifts.unshift({ id: "theirs", name: "Theirs" })
      },
    )
    expect(undone.gifts.map((gift) => gift.id)).toEqual(["theirs", "a", "b", "c", "d"])
  })

  it("keeps an element I inserted when someone edited it since", () => {
    const { undone, count } = undoAfter(
      (d) => {
        d.gifts.unshift({ id: "mine", name: "Mine" })
      },
      (d) => {
        d.gifts[0]!.reservedBy = 2
      },
    )
    expect(undone.gifts.map((gift) => gift.id)).toEqual(["mine", "a", "b", "c", "d"])
    expect(count).toEqual({ applied: 0, skipped: 1 })
  })

  it("never applies part of a shift in an array without ids", () => {
    const { undone, now, count } = undoAfter(
      (d) => {
        d.tags.splice(0, 1) // ["y", "z"]
      },
      (d) => {
        d.tags[1] = "Z" // a later element changed: the shift cannot be undone by position
      },
    )
    expect(undone).toBe(now)
    expect(undone.tags).toEqual(["y", "Z"])
    expect(count).toEqual({ applied: 0, skipped: 1 })
  })

  it("undoes a shift in an array without ids by position while it is as I left it", () => {
    const mine: Recipe<Doc> = (d) => {
      d.tags.splice(1, 1, "p", "q") // ["x", "p", "q", "z"]
    }
    expect(undoAfter(mine, nothing).undone.tags).toEqual(["x", "y", "z"])
    const { undone } = undoAfter(mine, (d) => {
      d.tags[0] = "X" // before my change: not part of the unit
    })
    expect(undone.tags).toEqual(["X", "y", "z"])
    // a concurrent insert before it shifted everything: skipped, not misapplied
    expect(undoAfter(mine, (d) => void d.tags.unshift("w")).undone.tags).toEqual(["w", "x", "p", "q", "z"])
  })

  it("undoes my append by position after someone else appended too", () => {
    const { undone } = undoAfter(
      (d) => void d.tags.push("mine"),
      (d) => void d.tags.push("theirs"),
    )
    expect(undone.tags).toEqual(["x", "y", "z", "theirs"])
    // but not after someone removed an element before it: the shift is not as I left it
    const shifted = undoAfter(
      (d) => void d.tags.push("mine"),
      (d) => void d.tags.shift(),
    )
    expect(shifted.undone.tags).toEqual(["y", "z", "mine"])
  })

  it("uses the configured id field, and skips a reorder it cannot undo by id", () => {
    const mine: Recipe<Doc> = (d) => {
      d.gifts.reverse()
    }
    expect(undoAfter(mine, nothing).undone).toEqual(START) // as I left it: by position
    const { undone, count } = undoAfter(mine, (d) => {
      d.gifts[3]!.reservedBy = 2
    })
    expect(undone.gifts.map((gift) => gift.id)).toEqual(["d", "c", "b", "a"])
    expect(count.skipped).toBe(1)
    // elements found by `name` instead of `id`
    const byName = undoAfter(
      (d) => {
        d.gifts.splice(0, 1)
      },
      (d) => {
        d.gifts[2]!.reservedBy = 3
      },
      "name",
    )
    expect(byName.undone.gifts.map((gift) => [gift.name, gift.reservedBy])).toEqual([
      ["A", undefined],
      ["B", undefined],
      ["C", undefined],
      ["D", 3],
    ])
  })

  it("restores a member my change deleted, and deletes one it added", () => {
    const { undone } = undoAfter(
      (d) => {
        d.gifts[0]!.reservedBy = 1
        delete (d as Partial<Doc>).tags
      },
      nothing,
    )
    expect(undone).toEqual(START)
  })
})

describe("deepEqual", () => {
  it("compares JSON values, ignoring key order", () => {
    expect(deepEqual({ a: [1, { b: 2 }], c: null }, { c: null, a: [1, { b: 2 }] })).toBe(true)
    expect(deepEqual({ a: 1 }, { a: 1, b: 2 })).toBe(false)
    expect(deepEqual([1, 2], [1, 2, 3])).toBe(false)
    expect(deepEqual({ a: [] }, { a: {} })).toBe(false)
    expect(deepEqual(null, {})).toBe(false)
  })
})

describe("UndoHistory", () => {
  const edit = (name: string): Edit<string> => ({ before: `${name}-before`, after: name })
  it("groups changes closer than the capture timeout, and stops at stopCapturing()", () => {
    let now = 0
    const history = new UndoHistory<string>({ captureTimeoutMs: 500 }, () => now)
    history.capture(edit("1"))
    now = 499
    history.capture(edit("2"))
    now = 998 // 499 after the previous one: the window slides
    history.capture(edit("3"))
    now = 1498
    history.capture(edit("4"))
    history.stopCapturing()
    history.capture(edit("5"))
    const steps = () => {
      const names: string[][] = []
      for (let entry = history.popUndo(); entry; entry = history.popUndo()) {
        names.unshift(entry.edits.map((e) => e.after))
      }
      return names
    }
    expect(steps()).toEqual([["1", "2", "3"], ["4"], ["5"]])
  })

  it("makes one step of a batch, however long it takes", () => {
    let now = 0
    const history = new UndoHistory<string>({}, () => now)
    history.capture(edit("before"))
    history.batch(() => {
      history.capture(edit("1"))
      now += 10_000
      history.batch(() => history.capture(edit("2")))
      history.capture(edit("3"))
    })
    history.capture(edit("after"))
    expect(history.popUndo()?.edits.map((e) => e.after)).toEqual(["after"])
    expect(history.popUndo()?.edits.map((e) => e.after)).toEqual(["1", "2", "3"])
  })

  it("keeps at most `depth` steps, and a capture clears the redo stack", () => {
    const history = new UndoHistory<string>({ depth: 2, captureTimeoutMs: 0 })
    for (const name of ["1", "2", "3"]) history.capture(edit(name))
    history.pushRedo({ edits: [edit("r")] })
    expect(history.canRedo).toBe(true)
    history.capture(edit("4"))
    expect(history.canRedo).toBe(false)
    expect(history.popUndo()?.edits[0]?.after).toBe("4")
    expect(history.popUndo()?.edits[0]?.after).toBe("3")
    expect(history.popUndo()).toBeUndefined()
    expect(history.canUndo).toBe(false)
  })
})

describe("SyncClient undo and redo", () => {
  let sockets: FakeSocket[]
  let client: SyncClient<Doc>
  let errors: SyncError[]
  let socket: FakeSocket
  let version: number

  beforeEach(() => {
    vi.useFakeTimers()
    sockets = []
    errors = []
    client = new SyncClient<Doc>({
      url: "ws://server",
      createSocket: (url) => {
        const made = new FakeSocket(url)
        sockets.push(made)
        return made
      },
    })
    client.onError((error) => errors.push(error))
    client.connect()
    socket = sockets[0]!
    socket.accept()
    version = 1
    socket.deliver({ type: "snapshot", doc: "default", version, epoch: "e", state: START })
    socket.deliver({ type: "synced", version })
  })

  afterEach(() => {
    vi.useRealTimers()
  })

  /** The server acknowledges whatever is in flight. */
  const ackAll = () => {
    for (let guard = 0; guard < 20 && client.status !== "synced"; guard++) {
      const last = socket.sent[socket.sent.length - 1]!
      version += 1
      socket.deliver({ type: "ack", id: last.id, version })
    }
    expect(client.status).toBe("synced")
  }
  /** Someone else's batch. */
  const remote = (patches: immer11.Patch[]) => {
    version += 1
    socket.deliver({ type: "patch", version, patches })
  }
  const reserve = (giftId: string, user: number): Recipe<Doc> => (d) => {
    const gift = d.gifts.find((candidate) => candidate.id === giftId)
    if (gift) gift.reservedBy = user
  }
  const next = () => vi.advanceTimersByTime(1000) // past the capture timeout

  it("reverts an acknowledged change as a new change, leaving others' changes alone", () => {
    expect(client.getSnapshot()).toMatchObject({ canUndo: false, canRedo: false })
    client.update(reserve("b", 1))
    ackAll()
    remote([{ op: "add", path: ["gifts", 2, "reservedBy"], value: 2 }])
    const before = client.getSnapshot()
    expect(before.canUndo).toBe(true)
    expect(client.undo()).toBe(true)
    expect(client.getSnapshot()).not.toBe(before)
    expect(client.getSnapshot()).toMatchObject({ canUndo: false, canRedo: true })
    expect(socket.sent[socket.sent.length - 1]).toMatchObject({
      patches: [{ op: "remove", path: ["gifts", 1, "reservedBy"] }],
    })
    ackAll()
    expect(client.state?.gifts.map((gift) => gift.reservedBy)).toEqual([undefined, undefined, 2, undefined])
    expect(client.redo()).toBe(true)
    ackAll()
    expect(client.state?.gifts.map((gift) => gift.reservedBy)).toEqual([undefined, 1, 2, undefined])
    expect(client.getSnapshot()).toMatchObject({ canUndo: true, canRedo: false })
    expect(errors).toEqual([])
  })

  it("groups changes made within 500 ms into one step", () => {
    client.update(reserve("a", 1))
    vi.advanceTimersByTime(300)
    client.update(reserve("b", 1))
    next()
    client.update(reserve("c", 1))
    ackAll()
    client.undo()
    ackAll()
    expect(client.state?.gifts.map((gift) => gift.reservedBy)).toEqual([1, 1, undefined, undefined])
    client.undo()
    ackAll()
    expect(client.state).toEqual(START)
    expect(client.canUndo).toBe(false)
  })

  it("makes one step of client.batch() and splits at stopCapturing()", () => {
    client.batch(() => {
      client.update(reserve("a", 1))
      client.update(reserve("b", 1))
    })
    client.update(reserve("c", 1))
    client.stopCapturing()
    client.update(reserve("d", 1))
    ackAll()
    client.undo()
    client.undo()
    ackAll()
    expect(client.state?.gifts.map((gift) => gift.reservedBy)).toEqual([1, 1, undefined, undefined])
  })

  it("takes a change not sent yet out of the queue instead of sending its inverse", () => {
    client.update(reserve("a", 1)) // in flight
    next()
    client.update(reserve("b", 1)) // queued behind it
    expect(client.undo()).toBe(true)
    expect(client.state?.gifts.map((gift) => gift.reservedBy)).toEqual([1, undefined, undefined, undefined])
    ackAll()
    expect(socket.sent).toHaveLength(1)
    expect(client.redo()).toBe(true)
    ackAll()
    expect(socket.sent).toHaveLength(2)
    expect(client.state?.gifts.map((gift) => gift.reservedBy)).toEqual([1, 1, undefined, undefined])
  })

  it("skips a step whose values were all changed since, reports it, and undoes the one before", () => {
    client.update((d) => {
      d.title = "mine"
    })
    next()
    client.update(reserve("b", 1))
    ackAll()
    remote([{ op: "replace", path: ["gifts", 1, "reservedBy"], value: 2 }])
    expect(client.undo()).toBe(true)
    expect(errors.map((error) => error.code)).toEqual(["undo_skipped"])
    ackAll()
    expect(client.state?.title).toBe("list")
    expect(client.state?.gifts[1]?.reservedBy).toBe(2)
    expect(client.canUndo).toBe(false)
    expect(client.undo()).toBe(false)
  })

  it("returns false and reports when no step applies", () => {
    client.update(reserve("b", 1))
    ackAll()
    remote([{ op: "replace", path: ["gifts", 1, "reservedBy"], value: 2 }])
    const sent = socket.sent.length
    expect(client.undo()).toBe(false)
    expect(errors.map((error) => error.code)).toEqual(["undo_skipped"])
    expect(socket.sent).toHaveLength(sent)
    expect(client.getSnapshot()).toMatchObject({ canUndo: false, canRedo: false, status: "synced" })
  })

  it("clears the redo stack on a new local change, not on a remote one or an undoable: false one", () => {
    client.update(reserve("a", 1))
    ackAll()
    client.undo()
    ackAll()
    remote([{ op: "replace", path: ["title"], value: "theirs" }])
    client.update((d) => void d.tags.push("quiet"), { undoable: false })
    expect(client.canRedo).toBe(true)
    client.update(reserve("c", 1))
    expect(client.canRedo).toBe(false)
    expect(client.redo()).toBe(false)
  })

  it("never records remote changes or undoable: false changes", () => {
    remote([{ op: "replace", path: ["title"], value: "theirs" }])
    client.update((d) => void d.tags.push("quiet"), { undoable: false })
    expect(client.canUndo).toBe(false)
    expect(client.undo()).toBe(false)
  })

  it("undoes a change as last run: rebased over a remote insert, it reverts the right element", () => {
    client.update((d) => {
      d.tags[1] = "Y"
    })
    // before the ack: someone inserted at the front, the server rebased ours to index 2
    remote([{ op: "add", path: ["tags", 0], value: "w" }])
    version += 1
    socket.deliver({ type: "ack", id: "1", version, patches: [{ op: "replace", path: ["tags", 2], value: "Y" }] })
    expect(client.state?.tags).toEqual(["w", "x", "Y", "z"])
    client.undo()
    ackAll()
    expect(client.state?.tags).toEqual(["w", "x", "y", "z"])
  })

  it("undoes a removal from the middle while a later gift was edited: back at its place", () => {
    client.update((d) => {
      d.gifts.splice(1, 1)
    })
    ackAll()
    remote([{ op: "add", path: ["gifts", 2, "reservedBy"], value: 2 }]) // "d", now at 2
    client.undo()
    ackAll()
    expect(client.state?.gifts).toEqual([
      { id: "a", name: "A" },
      { id: "b", name: "B" },
      { id: "c", name: "C" },
      { id: "d", name: "D", reservedBy: 2 },
    ])
  })

  it("redoes only where the value is still what the undo produced", () => {
    client.update((d) => {
      d.title = "mine"
      d.gifts[0]!.reservedBy = 1
    })
    ackAll()
    client.undo()
    ackAll()
    remote([{ op: "replace", path: ["title"], value: "theirs" }])
    expect(client.redo()).toBe(true)
    ackAll()
    expect(client.state?.title).toBe("theirs")
    expect(client.state?.gifts[0]?.reservedBy).toBe(1)
    client.undo()
    ackAll()
    remote([{ op: "add", path: ["gifts", 0, "reservedBy"], value: 7 }])
    expect(client.redo()).toBe(false)
    expect(errors.map((error) => error.code)).toEqual(["redo_skipped"])
  })

  it("undoes a change as first sent when the server answers its resend as a duplicate", () => {
    client.update((d) => {
      d.title = d.title === "list" ? "mine" : "list" // not idempotent: a re-run on itself undoes it
    })
    socket.drop() // the ack is lost with the connection
    vi.advanceTimersByTime(10_000)
    socket = sockets[sockets.length - 1]!
    socket.accept()
    remote([{ op: "replace", path: ["title"], value: "mine" }]) // the catch-up holds our change
    socket.deliver({ type: "synced", version })
    expect(socket.sent).toEqual([
      { type: "patch", id: "1", base: 2, patches: [{ op: "replace", path: ["title"], value: "list" }] },
    ])
    socket.deliver({ type: "ack", id: "1", version: 2 }) // recognised: the original ack
    expect(client.state?.title).toBe("mine")
    client.undo()
    ackAll()
    expect(client.state?.title).toBe("list")
  })

  it("skips a step whose change was dropped: nothing of it happened", () => {
    client.update(reserve("a", 1))
    socket.deliver({ type: "reject", id: "1", version, error: { code: "forbidden", message: "no" } })
    expect(client.undo()).toBe(false) // nothing of it happened
    expect(errors.map((error) => error.code)).toEqual(["forbidden", "undo_skipped"])
  })
})
