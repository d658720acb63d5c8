// Shared helpers for the Node test clients: package loading, a seeded PRNG, JSON comparison and
// a small promise-based WebSocket wrapper. No test logic lives here.
//
// The npm packages come from client_demo/node_modules (installed by the Makefile from
// client_demo/package.json); nothing is installed next to the tests.

import { createRequire } from "node:module"
import { existsSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"

const HERE = dirname(fileURLToPath(import.meta.url))
export const CLIENT_DEMO = resolve(process.env.CLIENT_DEMO_DIR ?? join(HERE, "..", "..", "client_demo"))
const requireFromDemo = createRequire(join(CLIENT_DEMO, "package.json"))

/** Load an npm package from client_demo/node_modules, or exit 3 with a message saying why. */
export function loadPackage(name) {
  if (!existsSync(join(CLIENT_DEMO, "node_modules", name))) {
    process.stderr.write(
      `missing npm package ${name} in ${CLIENT_DEMO}/node_modules (run the Makefile's npm install)\n`,
    )
    process.exit(3)
  }
  return requireFromDemo(name)
}

/** Load an Immer build by package name ("immer" or the alias "immer9") with patches enabled. */
export function loadImmer(name, { arrayMethods = false } = {}) {
  const immer = loadPackage(name)
  immer.enablePatches()
  if (arrayMethods) {
    if (typeof immer.enableArrayMethods !== "function") {
      process.stderr.write(`${name} has no enableArrayMethods plugin\n`)
      process.exit(2)
    }
    immer.enableArrayMethods()
  }
  const version = requireFromDemo(`${name}/package.json`).version
  return { immer, version }
}

// -- deterministic randomness ---------------------------------------------------------------

/** mulberry32: a tiny seeded PRNG returning floats in [0, 1). */
export function makeRng(seed) {
  let a = seed >>> 0
  return function rng() {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export const int = (rng, n) => Math.floor(rng() * n) // 0 <= int < n
export const pick = (rng, items) => items[int(rng, items.length)]
export const chance = (rng, p) => rng() < p

// -- JSON ------------------------------------------------------------------------------------

/** What a JSON wire (and so the server) makes of a JS value: undefined members vanish etc. */
export const wire = value => (value === undefined ? undefined : JSON.parse(JSON.stringify(value)))

/** Structural equality of two JSON values; object member order does not matter. */
export function jsonEqual(a, b) {
  if (a === b) return true
  if (typeof a !== typeof b || a === null || b === null || typeof a !== "object") return false
  if (Array.isArray(a) !== Array.isArray(b)) return false
  if (Array.isArray(a)) {
    if (a.length !== b.length) return false
    for (let i = 0; i < a.length; i++) if (!jsonEqual(a[i], b[i])) return false
    return true
  }
  const ka = Object.keys(a)
  if (ka.length !== Object.keys(b).length) return false
  for (const k of ka) {
    if (!Object.prototype.hasOwnProperty.call(b, k) || !jsonEqual(a[k], b[k])) return false
  }
  return true
}

/** The first JSON path at which two values differ (for failure messages), or null. */
export function firstDifference(a, b, path = []) {
  if (jsonEqual(a, b)) return null
  const bothObjects =
    a && b && typeof a === "object" && typeof b === "object" && Array.isArray(a) === Array.isArray(b)
  if (!bothObjects) return { path, expected: a, actual: b }
  const keys = new Set([...Object.keys(a), ...Object.keys(b)])
  for (const k of keys) {
    const seg = Array.isArray(a) ? Number(k) : k
    if (!(k in a) || !(k in b)) return { path: [...path, seg], expected: a[k], actual: b[k] }
    const diff = firstDifference(a[k], b[k], [...path, seg])
    if (diff) return diff
  }
  return { path, expected: a, actual: b } // array lengths differ
}

/** One JSON object per stdout line: the only channel to the pytest side. */
export function emit(record) {
  process.stdout.write(JSON.stringify(record) + "\n")
}

// -- CLI -------------------------------------------------------------------------------------

/** Parse `--name value` and `--flag` arguments into an object (values stay strings). */
export function parseArgs(argv, defaults) {
  const out = { ...defaults }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (!arg.startsWith("--")) throw new Error(`unexpected argument ${arg}`)
    const name = arg.slice(2)
    if (!(name in defaults)) throw new Error(`unknown option --${name}`)
    if (typeof defaults[name] === "boolean") out[name] = true
    else if (i + 1 < argv.length) out[name] = argv[++i]
    else throw new Error(`--${name} needs a value`)
  }
  return out
}

// -- WebSocket -------------------------------------------------------------------------------

/**
 * A WebSocket client with an inbox: `next(timeoutMs)` resolves with the next received item.
 * With `flatten` (protocol 1) a frame holding a JSON array is a list of messages and each
 * becomes one item; without it (lesson mode) each frame is one item, array or not.
 */
export class Peer {
  constructor(WebSocket, url, { flatten = true, onItem = null } = {}) {
    this.url = url
    this.flatten = flatten
    this.onItem = onItem
    this.inbox = []
    this.waiters = []
    this.closed = null
    this.ws = new WebSocket(url)
    this.ws.on("message", data => this.#receive(data.toString("utf8")))
    this.ws.on("close", (code, reason) => this.#close({ code, reason: reason.toString() }))
    this.ws.on("error", err => this.#close({ code: null, reason: String(err) }))
  }

  opened(timeoutMs = 10000) {
    if (this.ws.readyState === 1) return Promise.resolve()
    return new Promise((ok, fail) => {
      const timer = setTimeout(
        () => fail(new Error(`timed out after ${timeoutMs} ms connecting to ${this.url}`)),
        timeoutMs,
      )
      this.ws.once("open", () => {
        clearTimeout(timer)
        ok()
      })
      this.ws.once("close", code => {
        clearTimeout(timer)
        fail(new Error(`closed (${code}) while connecting to ${this.url}`))
      })
    })
  }

  send(value) {
    this.ws.send(typeof value === "string" ? value : JSON.stringify(value))
  }

  next(timeoutMs, what = "a message") {
    if (this.inbox.length) return Promise.resolve(this.inbox.shift())
    if (this.closed) return Promise.reject(new Error(`socket closed ${JSON.stringify(this.closed)}`))
    return new Promise((ok, fail) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter(w => w !== waiter)
        fail(new Error(`timed out after ${timeoutMs} ms waiting for ${what} on ${this.url}`))
      }, timeoutMs)
      const waiter = {
        ok: item => (clearTimeout(timer), ok(item)),
        fail: err => (clearTimeout(timer), fail(err)),
      }
      this.waiters.push(waiter)
    })
  }

  close() {
    this.ws.close()
  }

  #receive(text) {
    const parsed = JSON.parse(text)
    const items = this.flatten && Array.isArray(parsed) ? parsed : [parsed]
    for (const item of items) {
      if (this.onItem) this.onItem(item)
      else if (this.waiters.length) this.waiters.shift().ok(item)
      else this.inbox.push(item)
    }
  }

  #close(info) {
    if (this.closed) return
    this.closed = info
    for (const w of this.waiters.splice(0)) w.fail(new Error(`socket closed ${JSON.stringify(info)}`))
  }
}

// -- scripted clients ------------------------------------------------------------------------

/**
 * Drive a client from the test: one JSON command per stdin line (`{"cmd": name, ...}`) calls
 * `handlers[name](command)`; results go out through `emit`. Closing stdin calls `handlers.close`.
 */
export async function commandLoop(handlers) {
  const { createInterface } = await import("node:readline")
  const lines = createInterface({ input: process.stdin })
  lines.on("line", line => {
    if (!line.trim()) return
    let command
    try {
      command = JSON.parse(line)
      const handler = handlers[command.cmd]
      if (!handler) throw new Error(`unknown command ${JSON.stringify(command.cmd)}`)
      handler(command)
    } catch (err) {
      emit({ event: "error", command, message: String(err?.stack ?? err) })
    }
  })
  lines.on("close", () => handlers.close?.({}))
}
