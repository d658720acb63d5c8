import { describe, expect, it } from "vitest"
import { encodePatch, parseFrame } from "../src/lib/protocol"

describe("parseFrame", () => {
  it("reads one message or an array of them, in order", () => {
    expect(parseFrame('{"type":"synced","version":2}')).toEqual([{ type: "synced", version: 2 }])
    expect(
      parseFrame(
        JSON.stringify([
          { type: "patch", version: 3, patches: [{ op: "remove", path: ["a", 0] }] },
          { type: "ack", id: "7", version: 4 },
          { type: "reject", id: 8, version: 4, error: { code: "conflict", message: "stale" } },
        ]),
      ),
    ).toEqual([
      { type: "patch", version: 3, patches: [{ op: "remove", path: ["a", 0] }] },
      { type: "ack", id: "7", version: 4 },
      { type: "reject", id: "8", version: 4, error: { code: "conflict", message: "stale" } },
    ])
  })

  it("reads the applied patches of an ack when the server sends them", () => {
    const patches = [{ op: "add", path: ["items", 1], value: "x" }]
    expect(parseFrame(JSON.stringify({ type: "ack", id: "4", version: 9, patches }))).toEqual([
      { type: "ack", id: "4", version: 9, patches },
    ])
    expect(parseFrame('{"type":"ack","id":"4","version":9}')[0]).not.toHaveProperty("patches")
  })

  it("keeps a snapshot's state and epoch as sent", () => {
    expect(parseFrame('{"type":"snapshot","doc":"d","version":0,"epoch":"x1","state":null}')).toEqual([
      { type: "snapshot", version: 0, epoch: "x1", state: null },
    ])
  })

  it("skips message types it does not know", () => {
    expect(parseFrame('[{"type":"hello"},{"type":"synced","version":1}]')).toEqual([{ type: "synced", version: 1 }])
  })

  it.each([
    ["not JSON", "{"],
    ["a binary frame", new ArrayBuffer(2)],
    ["no type", "{}"],
    ["a negative version", '{"type":"synced","version":-1}'],
    ["a fractional version", '{"type":"synced","version":1.5}'],
    ["an ack without id", '{"type":"ack","version":1}'],
    ["a bad op", '{"type":"patch","version":1,"patches":[{"op":"move","path":[]}]}'],
    ["a bad path", '{"type":"patch","version":1,"patches":[{"op":"add","path":"/a","value":1}]}'],
    ["an ack with bad patches", '{"type":"ack","id":"1","version":1,"patches":[{"op":"test","path":[]}]}'],
    ["an ack with patches that are not a list", '{"type":"ack","id":"1","version":1,"patches":{}}'],
    ["a snapshot without state", '{"type":"snapshot","version":1,"epoch":"e"}'],
    ["an error without code", '{"type":"error","error":{"message":"?"}}'],
  ])("rejects %s with a protocol error", (_, frame) => {
    expect(() => parseFrame(frame)).toThrow(expect.objectContaining({ name: "SyncError", code: "protocol" }))
  })
})

describe("encodePatch", () => {
  it("writes a protocol-1 patch message", () => {
    expect(JSON.parse(encodePatch({ id: "3", base: 9, patches: [{ op: "add", path: ["x"], value: 1 }] }))).toEqual({
      type: "patch",
      id: "3",
      base: 9,
      patches: [{ op: "add", path: ["x"], value: 1 }],
    })
  })
})
