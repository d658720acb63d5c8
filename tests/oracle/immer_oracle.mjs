// Real Immer as an oracle for the server (protocol 1, format immer).
//
//   node immer_oracle.mjs --url http://127.0.0.1:8000 [--package immer|immer9] [--array-methods]
//                         [--seeds 1,2,3] [--steps 300] [--doc-prefix oracle] [--timeout-ms 10000]
//
// For every seed, on a fresh document `{prefix}-{package}-{seed}`:
//   * a writer connects to /ws/{doc}, sets the first state with the root replace Immer produces
//     when a recipe returns a new value, then sends `steps` non-empty batches produced by
//     `produceWithPatches` with random recipes (see mutations.mjs), one at a time, each
//     `{"type":"patch","id":n,"patches":[...]}` without a base, waiting for its ack (a
//     `rate_limited` reject is honoured: wait `retry_after`, send again);
//   * after every ack it GETs /docs/{doc}/state and compares it (and its ETag) with
//     JSON.parse(JSON.stringify(immerState));
//   * an observer connected to the same document applies every `patch` message it receives to
//     its own copy of the snapshot with Immer's applyPatches, and its state at each version is
//     compared with what the writer expected at that version (the server's outgoing patches
//     must be applicable by real Immer and lead to the same document).
// A seed stops at its first failure. Every failure is one JSON line on stdout (type mismatch,
// reject, observer_mismatch, observer_format, observer_apply, protocol, immer_inconsistent,
// error) carrying the seed, step, the patches and the states needed to reproduce it; the last
// line is the summary. Exit status 0 when there was no failure, 1 otherwise.

import { emit, firstDifference, jsonEqual, loadImmer, loadPackage, makeRng, parseArgs, Peer, wire } from "./lib.mjs"
import { countFeatures, immerBatches } from "./mutations.mjs"

const args = parseArgs(process.argv.slice(2), {
  url: "",
  package: "immer",
  "array-methods": false,
  seeds: "1,2,3",
  steps: "300",
  "doc-prefix": "oracle",
  "timeout-ms": "10000",
})
if (!args.url) {
  process.stderr.write("--url http://host:port is required\n")
  process.exit(2)
}
const HTTP = args.url.replace(/\/$/, "")
const WS = HTTP.replace(/^http/, "ws")
const SEEDS = args.seeds.split(",").map(Number)
const STEPS = Number(args.steps)
const TIMEOUT = Number(args["timeout-ms"])
const { immer, version: immerVersion } = loadImmer(args.package, { arrayMethods: args["array-methods"] })
const WebSocket = loadPackage("ws")
const TAG = `${args.package}${args["array-methods"] ? "-am" : ""}`

class SeedFailure extends Error {
  constructor(record) {
    super(record.type)
    this.record = record
  }
}

/**
 * The reverse direction: a second client that applies the server's patch messages with Immer.
 * `expect(version, state)` registers what the writer knows the document is at `version`;
 * each version is compared once both sides are known.
 */
class Observer {
  constructor(doc, seed) {
    this.seed = seed
    this.state = undefined
    this.version = null
    this.failure = null
    this.synced = false
    this.observed = new Map() // version -> wire state
    this.expected = new Map() // version -> { state, step }
    this.checked = 0
    this.waiters = []
    this.peer = new Peer(WebSocket, `${WS}/ws/${doc}?format=immer`, { onItem: m => this.#onMessage(m) })
  }

  #fail(record) {
    if (!this.failure) this.failure = { seed: this.seed, ...record }
    this.#wake()
  }

  #onMessage(msg) {
    if (this.failure) return
    if (msg.type === "snapshot") {
      this.state = msg.state
      this.version = msg.version
    } else if (msg.type === "synced") {
      this.synced = true
    } else if (msg.type === "patch") {
      if (this.version === null || msg.version !== this.version + 1) {
        return this.#fail({ type: "protocol", who: "observer", message: `patch version ${msg.version} after version ${this.version}`, received: msg })
      }
      let state = this.state
      for (let i = 0; i < msg.patches.length; i++) {
        const patch = msg.patches[i]
        const problem = checkOutgoingPatch(state, patch)
        if (problem) {
          return this.#fail({ type: "observer_format", version: msg.version, index: i, problem, patch, before: wire(this.state), patches: msg.patches })
        }
        try {
          state = immer.applyPatches(state, [patch])
        } catch (err) {
          return this.#fail({ type: "observer_apply", version: msg.version, index: i, error: String(err), before: wire(this.state), patches: msg.patches })
        }
      }
      this.state = state
      this.version = msg.version
      this.observed.set(msg.version, wire(state))
      this.#compare(msg.version)
    } else {
      return this.#fail({ type: "protocol", who: "observer", message: `unexpected message type ${msg.type}`, received: msg })
    }
    this.#wake()
  }

  expect(version, state, step) {
    this.expected.set(version, { state, step })
    this.#compare(version)
  }

  #compare(version) {
    if (!this.observed.has(version) || !this.expected.has(version)) return
    const actual = this.observed.get(version)
    const { state: expected, step } = this.expected.get(version)
    this.observed.delete(version)
    this.expected.delete(version)
    this.checked++
    if (!jsonEqual(expected, actual)) {
      this.#fail({ type: "observer_mismatch", step, version, difference: firstDifference(expected, actual), expected, actual })
    }
  }

  #wake() {
    for (const w of this.waiters.splice(0)) w()
  }

  /** Resolve once the observer is synced and at `version` (or failed); reject on timeout. */
  reach(version, what) {
    return new Promise((ok, fail) => {
      const timer = setTimeout(() => fail(new Error(`observer: timed out waiting for ${what}; at version ${this.version}`)), TIMEOUT)
      const check = () => {
        if (this.failure || this.peer.closed || (this.synced && this.version !== null && this.version >= version)) {
          clearTimeout(timer)
          ok()
        } else this.waiters.push(check)
      }
      check()
    })
  }
}

/** Outgoing Immer patches: add/remove/replace, integer indexes in range, string keys. */
function checkOutgoingPatch(state, patch) {
  if (!["add", "remove", "replace"].includes(patch.op)) return `op ${JSON.stringify(patch.op)}`
  if (!Array.isArray(patch.path)) return "path is not an array"
  let node = state
  for (let i = 0; i < patch.path.length; i++) {
    const seg = patch.path[i]
    const last = i === patch.path.length - 1
    if (Array.isArray(node)) {
      if (!Number.isInteger(seg)) return `segment ${JSON.stringify(seg)} addresses an array but is not an integer`
      const max = last && patch.op === "add" ? node.length : node.length - 1
      if (seg < 0 || seg > max) return `index ${seg} out of range for an array of length ${node.length}`
    } else if (node !== null && typeof node === "object") {
      if (typeof seg !== "string") return `segment ${JSON.stringify(seg)} addresses an object but is not a string`
      if (!last && !Object.prototype.hasOwnProperty.call(node, seg)) return `missing member ${JSON.stringify(seg)}`
    } else {
      return `segment ${JSON.stringify(seg)} goes through a non-container`
    }
    if (!last) node = node[seg]
  }
  return null
}

async function fetchState(doc) {
  const res = await fetch(`${HTTP}/docs/${doc}/state`, { signal: AbortSignal.timeout(TIMEOUT) })
  const text = await res.text()
  let body
  try {
    body = JSON.parse(text)
  } catch {
    body = text
  }
  return { status: res.status, etag: res.headers.get("etag"), body }
}

async function nextReply(peer, id) {
  const msg = await peer.next(TIMEOUT, `the ack of batch ${id}`)
  if ((msg.type === "ack" || msg.type === "reject") && msg.id === id) return msg
  throw new SeedFailure({ type: "protocol", who: "writer", step: id, message: `expected ack or reject of batch ${id}`, received: msg })
}

async function runSeed(seed) {
  const doc = `${args["doc-prefix"]}-${TAG}-${seed}`
  const observer = new Observer(doc, seed)
  const writer = new Peer(WebSocket, `${WS}/ws/${doc}?format=immer`)
  let acked = 0
  let versions = 0
  let step = 0
  try {
    await observer.peer.opened(TIMEOUT)
    await observer.reach(-1, "the observer's snapshot and synced")
    await writer.opened(TIMEOUT)
    const snapshot = await writer.next(TIMEOUT, "the snapshot")
    if (snapshot.type !== "snapshot") throw new SeedFailure({ type: "protocol", who: "writer", message: "first message is not a snapshot", received: snapshot })
    let state = snapshot.state
    let version = snapshot.version
    for (;;) { // the snapshot may come with a tail of patch messages, then synced
      const msg = await writer.next(TIMEOUT, "synced")
      if (msg.type === "synced" && msg.version === version) break
      if (msg.type !== "patch" || msg.version !== version + 1) throw new SeedFailure({ type: "protocol", who: "writer", message: `expected synced ${version} or patch ${version + 1}`, received: msg })
      state = immer.applyPatches(state, msg.patches)
      version = msg.version
    }

    const batches = immerBatches(immer, makeRng, seed, STEPS, { start: state, arrayMethods: args["array-methods"] })
    for (const { step: n, description, before, after: expected, patches, check, error } of batches) {
      step = n
      // the generator must stay within what Immer itself can replay over a JSON wire
      if (!check) throw new SeedFailure({ type: "immer_inconsistent", step, description, patches, before, expected, error })
      countFeatures(features, before, patches, (doc, patch) => wire(immer.applyPatches(doc, [patch])))
      let reply
      for (let tries = 0; ; tries++) {
        writer.send({ type: "patch", id: step, patches })
        reply = await nextReply(writer, step)
        if (reply.type !== "reject" || reply.error?.code !== "rate_limited" || tries >= 1000) break
        // the server asks the client to slow down: wait as long as it says, then resend
        rateLimited++
        await new Promise(ok => setTimeout(ok, Math.max(1, 1000 * (reply.error.retry_after ?? 0.01))))
      }
      if (reply.type === "reject") {
        throw new SeedFailure({ type: "reject", step, description, error: reply.error, patches, before })
      }
      // a batch that changes the JSON document makes exactly one new version; one that changes
      // nothing JSON can see (say `obj.gone = undefined`) may leave the version as it was
      const unchanged = jsonEqual(before, expected)
      if (reply.version !== version + 1 && !(unchanged && reply.version === version)) {
        const want = unchanged ? `${version} or ${version + 1}` : `${version + 1}`
        throw new SeedFailure({ type: "protocol", who: "writer", step, message: `ack version ${reply.version}, expected ${want}`, patches, before, received: reply })
      }
      acked++
      if (reply.version !== version) {
        versions++
        observer.expect(reply.version, expected, step)
      }
      version = reply.version
      const got = await fetchState(doc)
      // a gzipped body carries the weak form W/"N" of the same version
      if (got.status !== 200 || got.etag?.replace(/^W\//, "") !== `"${version}"` || !jsonEqual(expected, got.body)) {
        throw new SeedFailure({
          type: "mismatch", step, version, description, status: got.status, etag: got.etag,
          patches, before, expected, actual: got.body,
          difference: got.status === 200 ? firstDifference(expected, got.body) : null,
        })
      }
      if (observer.failure) throw new SeedFailure(observer.failure)
    }
    await observer.reach(version, `version ${version}`)
    if (observer.failure) throw new SeedFailure(observer.failure)
    if (observer.expected.size) {
      throw new SeedFailure({ type: "observer_mismatch", message: `observer never reached versions ${[...observer.expected.keys()].slice(0, 5)}`, at: observer.version })
    }
  } catch (err) {
    const record = err instanceof SeedFailure ? err.record : { type: "error", message: String(err?.stack ?? err) }
    emit({ seed, doc, package: args.package, arrayMethods: args["array-methods"], ...record, step: record.step ?? step })
    return { acked, versions, checked: observer.checked, failed: true }
  } finally {
    writer.close()
    observer.peer.close()
  }
  return { acked, versions, checked: observer.checked, failed: false }
}

const features = {}
let rateLimited = 0
const started = Date.now()
let acked = 0
let versions = 0
let checked = 0
let failures = 0
for (const seed of SEEDS) {
  const result = await runSeed(seed)
  acked += result.acked
  versions += result.versions
  checked += result.checked
  if (result.failed) failures++
}
emit({
  type: "summary", package: args.package, immerVersion, arrayMethods: args["array-methods"],
  seeds: SEEDS, steps: STEPS, acked, versions, observerChecked: checked, failures, elapsedMs: Date.now() - started, rateLimited, features,
})
process.exit(failures ? 1 : 0)
