/**
 * One `SyncClient` per (server URL, document), shared by every user of that document in the page.
 *
 * `sharedClient` only looks a client up (creating it unconnected), so it is safe during render.
 * `retainSharedClient` connects it and returns the matching release; the last release disconnects
 * it after a grace period, so a quick unmount/remount (React StrictMode, a route change) keeps the
 * connection instead of tearing it down. A disconnected client keeps its state and pending changes
 * and resumes from them when retained again.
 */
import { SyncClient } from "./syncClient"

const RELEASE_GRACE_MS = 1000

interface Entry {
  readonly client: SyncClient<unknown>
  users: number
  releaseTimer?: ReturnType<typeof setTimeout>
}

const entries = new Map<string, Entry>()

function entry(url: string, doc: string): Entry {
  const key = `${url} ${doc}`
  let found = entries.get(key)
  if (!found) {
    found = { client: new SyncClient<unknown>({ url, doc }), users: 0 }
    entries.set(key, found)
  }
  return found
}

/** The page's client for `doc` on `url`; callers sharing a document must agree on `T`. */
export function sharedClient<T>(url: string, doc: string): SyncClient<T> {
  return entry(url, doc).client as SyncClient<T>
}

/** Keeps the shared client connected until the returned function is called (once). */
export function retainSharedClient(url: string, doc: string): () => void {
  const retained = entry(url, doc)
  clearTimeout(retained.releaseTimer)
  retained.users += 1
  retained.client.connect()
  let released = false
  return () => {
    if (released) return
    released = true
    retained.users -= 1
    if (retained.users === 0) {
      retained.releaseTimer = setTimeout(() => retained.client.disconnect(), RELEASE_GRACE_MS)
    }
  }
}
