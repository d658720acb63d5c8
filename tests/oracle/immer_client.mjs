// A protocol-1 client that keeps its copy of the document with real Immer: the snapshot's state,
// then every `patch` message applied with `applyPatches`.
//
//   node immer_client.mjs --url ws://127.0.0.1:8000/ws/default?format=immer [--package immer]
//
// Commands (stdin, one JSON object per line): send {id, patches[, base]}, state, close.
// Events (stdout): open, message {msg, state, version[, error]} for every message received
// (frames holding an array of messages give one event each), sent {id}, state {state,
// version}, close {code}, error {message}.

import { commandLoop, emit, loadImmer, loadPackage, parseArgs, wire } from "./lib.mjs"

const args = parseArgs(process.argv.slice(2), { url: "", package: "immer" })
const { immer } = loadImmer(args.package)
const WebSocket = loadPackage("ws")

let state
let version = null
const socket = new WebSocket(args.url)

socket.on("open", () => emit({ event: "open" }))
socket.on("close", code => {
  emit({ event: "close", code })
  process.exit(0)
})
socket.on("error", err => emit({ event: "error", message: String(err) }))
socket.on("message", data => {
  const parsed = JSON.parse(data.toString("utf8"))
  for (const msg of Array.isArray(parsed) ? parsed : [parsed]) {
    let error
    if (msg.type === "snapshot") {
      state = msg.state
      version = msg.version
    } else if (msg.type === "patch") {
      try {
        if (msg.version !== version + 1) throw new Error(`patch ${msg.version} after version ${version}`)
        state = immer.applyPatches(state, msg.patches)
        version = msg.version
      } catch (err) {
        error = String(err)
      }
    } else if (msg.type === "ack") {
      // our own batch: its effect is not sent back, apply it as the local edit it was
      const mine = pending.get(msg.id)
      pending.delete(msg.id)
      if (mine && msg.version !== version) {
        state = immer.applyPatches(state, mine)
        version = msg.version
      }
    } else if (msg.type === "reject") {
      pending.delete(msg.id)
    }
    emit({ event: "message", msg, state: wire(state), version, ...(error ? { error } : {}) })
  }
})

const pending = new Map() // id -> patches sent and not yet acknowledged

await commandLoop({
  send: ({ id, patches, base }) => {
    pending.set(id, patches)
    socket.send(JSON.stringify({ type: "patch", id, patches, ...(base === undefined ? {} : { base }) }))
    emit({ event: "sent", id })
  },
  state: () => emit({ event: "state", state: wire(state), version }),
  close: () => socket.close(),
})
