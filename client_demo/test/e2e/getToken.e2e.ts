/**
 * The browser client against the FastAPI example (examples/fastapi_app.py) on a real server:
 * sign in, `getToken` fetching a short-lived JWT from the app before every connection, a token
 * that expires mid-session, and the resume with a fresh one. Run by tests/test_embedding.py,
 * which starts the example and passes its URL in EXAMPLE_URL (not part of `npm test`).
 */
import WebSocket from "ws"
import { describe, expect, it } from "vitest"
import { SyncClient } from "../../src/lib/syncClient"

interface Gift {
  id: string
  description: string
  reservedBy?: string
}
type Gifts = { gifts: Gift[] }

const env = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env ?? {}
const BASE = env.EXAMPLE_URL ?? "http://127.0.0.1:8000"
const DOC = env.EXAMPLE_DOC ?? "gifts-e2e"
const TOKEN_SECONDS = Number(env.EXAMPLE_TOKEN_SECONDS ?? "3")

async function signIn(user: string): Promise<string> {
  const r = await fetch(`${BASE}/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user, password: `${user}-password` }),
  })
  expect(r.status).toBe(200)
  return ((await r.json()) as { session: string }).session
}

function until<T>(client: SyncClient<T>, predicate: () => boolean, ms = 15_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop()
      reject(new Error(`timed out: status=${client.status} version=${client.version}`))
    }, ms)
    const check = () => {
      if (!predicate()) return
      clearTimeout(timer)
      stop()
      resolve()
    }
    const stop = client.subscribe(check)
    check()
  })
}

describe("getToken against the FastAPI example", () => {
  it("fetches a token per connection and resumes after one expires, losing nothing", async () => {
    const session = await signIn("ann")
    const tokens: string[] = []
    const client = new SyncClient<Gifts>({
      url: BASE.replace(/^http/, "ws") + "/collab",
      doc: DOC,
      backoff: { initialMs: 50, maxMs: 200 },
      createSocket: (url, protocols) => new WebSocket(url, protocols),
      getToken: async () => {
        const r = await fetch(`${BASE}/token?doc=${DOC}`, { headers: { authorization: `Bearer ${session}` } })
        const { token } = (await r.json()) as { token: string }
        tokens.push(token)
        return token
      },
    })
    const errors: string[] = []
    client.onError((error) => errors.push(`${error.code}: ${error.message}`))
    client.connect()
    await until(client, () => client.status === "synced")
    client.update((draft) => {
      draft.gifts.push({ id: "g1", description: "Kite" })
    })
    await until(client, () => client.status === "synced" && client.version === 1)
    expect(tokens).toHaveLength(1)
    // let the token expire, then change something: the server closes the connection, the client
    // fetches a fresh token, resumes and resends the change
    await new Promise((resolve) => setTimeout(resolve, TOKEN_SECONDS * 1000 + 300))
    client.update((draft) => {
      draft.gifts[0]!.reservedBy = "ann"
    })
    await until(client, () => client.status === "synced" && client.version === 2)
    expect(tokens.length).toBeGreaterThanOrEqual(2)
    expect(errors).toEqual([])
    const r = await fetch(`${BASE}/collab/docs/${DOC}/state`, {
      headers: { authorization: `Bearer ${tokens[tokens.length - 1]}` },
    })
    expect(await r.json()).toEqual({ gifts: [{ id: "g1", description: "Kite", reservedBy: "ann" }] })
    client.disconnect()
  }, 30_000)
})
