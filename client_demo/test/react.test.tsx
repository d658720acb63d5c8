// @vitest-environment jsdom
import { act, cleanup, fireEvent, render, renderHook, screen } from "@testing-library/react"
import { StrictMode } from "react"
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import type { SyncError } from "../src/lib/errors"
import { useSharedState, useSocket, useUndo } from "../src/lib/react"
import { FakeSocket } from "./fakeSocket"

interface Doc {
  count: number
}

let serverCount = 0
/** A URL of its own for each test: clients are shared per (url, doc) for the whole page. */
const freshUrl = () => `ws://server-${++serverCount}`

function Counter({ url, onError }: { url: string; onError?: (error: SyncError) => void }) {
  const [state, update, status, version] = useSharedState<Doc>("doc", { url, ...(onError && { onError }) })
  return (
    <div>
      <output>{`${status} v${version ?? "-"} count=${state?.count ?? "-"}`}</output>
      <button
        onClick={() =>
          update((draft) => {
            draft.count += 1
          })
        }
      >
        increment
      </button>
    </div>
  )
}

function only(): FakeSocket {
  expect(FakeSocket.created).toHaveLength(1)
  return FakeSocket.created[0]!
}

function serve(socket: FakeSocket, count = 0) {
  act(() => {
    socket.accept()
    socket.deliver({ type: "snapshot", doc: "doc", version: 1, epoch: "e", state: { count } })
    socket.deliver({ type: "synced", version: 1 })
  })
}

beforeEach(() => {
  FakeSocket.created.length = 0
  vi.stubGlobal("WebSocket", FakeSocket)
})

afterEach(() => {
  cleanup()
  vi.useRealTimers()
  vi.unstubAllGlobals()
})

describe("useSharedState", () => {
  it("connects once and sends one patch per click under StrictMode", () => {
    render(
      <StrictMode>
        <Counter url={freshUrl()} />
      </StrictMode>,
    )
    expect(screen.getByRole("status").textContent).toBe("connecting v- count=-")
    const socket = only()
    expect(new URL(socket.url).pathname).toBe("/ws/doc")
    serve(socket)
    expect(screen.getByRole("status").textContent).toBe("synced v1 count=0")

    fireEvent.click(screen.getByText("increment"))
    expect(screen.getByRole("status").textContent).toBe("syncing v1 count=1")
    expect(socket.sent).toEqual([
      { type: "patch", id: "1", base: 1, patches: [{ op: "replace", path: ["count"], value: 1 }] },
    ])
    act(() => socket.deliver({ type: "ack", id: "1", version: 2 }))
    expect(screen.getByRole("status").textContent).toBe("synced v2 count=1")
    expect(only()).toBe(socket)
  })

  it("shares one client between the components of a document", () => {
    render(
      <StrictMode>
        <Counter url={freshUrl()} />
        <Counter url={`ws://server-${serverCount}`} />
      </StrictMode>,
    )
    const socket = only()
    serve(socket, 5)
    fireEvent.click(screen.getAllByText("increment")[0]!)
    expect(screen.getAllByRole("status").map((output) => output.textContent)).toEqual([
      "syncing v1 count=6",
      "syncing v1 count=6",
    ])
    expect(socket.sent).toHaveLength(1)
  })

  it("keeps the connection over a quick remount and closes it after the last unmount", () => {
    vi.useFakeTimers()
    const url = freshUrl()
    const first = render(<Counter url={url} />)
    const socket = only()
    serve(socket)
    first.unmount()
    vi.advanceTimersByTime(500)
    render(<Counter url={url} />)
    expect(screen.getByRole("status").textContent).toBe("synced v1 count=0")
    cleanup()
    vi.advanceTimersByTime(999)
    expect(socket.readyState).toBe(FakeSocket.OPEN)
    vi.advanceTimersByTime(1)
    expect(socket.readyState).toBe(FakeSocket.CLOSED)
    expect(only()).toBe(socket)
  })

  it("passes rejected changes to onError", () => {
    const onError = vi.fn()
    render(<Counter url={freshUrl()} onError={onError} />)
    const socket = only()
    serve(socket)
    fireEvent.click(screen.getByText("increment"))
    act(() =>
      socket.deliver({ type: "reject", id: "1", version: 1, error: { code: "too_large", message: "no" } }),
    )
    expect(onError).toHaveBeenCalledWith(expect.objectContaining({ code: "too_large" }))
    expect(screen.getByRole("status").textContent).toBe("synced v1 count=0")
  })
})

function UndoButtons({ url }: { url: string }) {
  const { undo, redo, canUndo, canRedo } = useUndo("doc", { url })
  return (
    <>
      <button disabled={!canUndo} onClick={undo}>
        undo
      </button>
      <button disabled={!canRedo} onClick={redo}>
        redo
      </button>
    </>
  )
}

describe("useUndo", () => {
  it("undoes and redoes the page's changes on the shared client and re-renders the buttons", () => {
    const url = freshUrl()
    render(
      <StrictMode>
        <Counter url={url} />
        <UndoButtons url={url} />
      </StrictMode>,
    )
    const socket = only()
    serve(socket)
    const button = (name: string) => screen.getByText(name) as HTMLButtonElement
    expect([button("undo").disabled, button("redo").disabled]).toEqual([true, true])
    fireEvent.click(screen.getByText("increment"))
    expect(button("undo").disabled).toBe(false)
    fireEvent.click(button("undo")) // the change is in flight: reverted by a new change
    expect(screen.getByRole("status").textContent).toBe("syncing v1 count=0")
    expect([button("undo").disabled, button("redo").disabled]).toEqual([true, false])
    act(() => socket.deliver({ type: "ack", id: "1", version: 2 }))
    expect(socket.sent.map((sent) => sent.id)).toEqual(["1", "2"])
    fireEvent.click(button("redo"))
    expect(screen.getByRole("status").textContent).toBe("syncing v2 count=1")
    expect([button("undo").disabled, button("redo").disabled]).toEqual([false, true])
  })
})

describe("useSocket", () => {
  it("passes parsed frames to the latest handler and sends JSON once open", () => {
    const first = vi.fn()
    const second = vi.fn()
    const { result, rerender } = renderHook(({ onMessage }) => useSocket("ws://lesson/", onMessage), {
      initialProps: { onMessage: first },
      wrapper: StrictMode,
    })
    const socket = FakeSocket.created[FakeSocket.created.length - 1]!
    // StrictMode mounted, unmounted and mounted again: only the last socket is left open.
    expect(FakeSocket.created.slice(0, -1).every((stale) => stale.readyState === FakeSocket.CLOSED)).toBe(true)
    expect(result.current([{ op: "add", path: ["x"], value: 1 }])).toBe(false)

    act(() => socket.accept())
    expect(result.current([{ op: "add", path: ["x"], value: 1 }])).toBe(true)
    expect(socket.frames).toEqual(['[{"op":"add","path":["x"],"value":1}]'])

    act(() => socket.deliver([{ op: "replace", path: ["gifts"], value: [] }]))
    expect(first).toHaveBeenCalledWith([{ op: "replace", path: ["gifts"], value: [] }])
    rerender({ onMessage: second })
    act(() => socket.deliver([]))
    expect(second).toHaveBeenCalledWith([])
    expect(first).toHaveBeenCalledTimes(1)
  })

  it("reconnects after the connection drops and closes on unmount", () => {
    vi.useFakeTimers()
    const { unmount } = renderHook(() => useSocket("ws://lesson/", () => {}))
    const socket = only()
    act(() => socket.accept())
    act(() => socket.drop())
    act(() => vi.advanceTimersByTime(10_000))
    expect(FakeSocket.created).toHaveLength(2)
    const second = FakeSocket.created[1]!
    unmount()
    expect(second.readyState).toBe(FakeSocket.CLOSED)
    act(() => vi.advanceTimersByTime(10_000))
    expect(FakeSocket.created).toHaveLength(2)
  })
})
