// N simulated users, each a real SyncClient (the project's own, bundled at run time), on one
// document, in one process; every frame delayed by a one-way latency (delayed_socket.mjs).
//
//   node contention_clients.mjs '{"mode": "users", "urls": ["ws://127.0.0.1:PORT"],
//       "doc": "contention", "workload": "append"|"gifts"|"field", "users": 20,
//       "latencyMs": 50, "activityS": 15, "settleS": 30, "seed": 1}'
//   node contention_clients.mjs '{"mode": "bytes", "urls": [...], "doc": "...",
//       "subscribers": 3, "latencyMs": 0, "timeoutS": 10}'
//
// Optional: "paceMs": [300, 1000] (the pause between a user's changes), "mix": {"append": 0.25,
// "toggle": 0.5} (gifts: the rest are removals), "connectS": 30.
//
// mode "users": user u connects to urls[u % urls.length]; once every client is `synced` it
// prints {"event": "ready"}, then each user makes one change every 0.3-1 s (seeded PRNG) for
// `activityS` seconds, then stops ({"event": "idle"}) and waits (at most `settleS`) until every
// client is `synced` with no pending change and every change is settled, at the server's
// version (GET /docs/DOC/state's ETag on urls[0]). The result also gives this process's CPU
// and event-loop delay while the users were active. It prints one
// {"event": "result"} line: per client, every change it made (its tag, kind, target, what it
// did when last sent, outcome, ack version, update()-to-ack milliseconds, conflict rejects),
// the reject codes and the onError errors it saw, frame bytes each way, and the SHA-256 of its
// final state as canonical JSON (sorted keys), to be compared with GET /state.
//
// A change's tag is unique ("u7-c12": user 7, change 12) and its effect carries the tag where
// it can: append pushes {id: tag}, field sets the field to the tag, gifts appends a gift whose
// id is the tag. Which changes a sent frame carries is read from the client's pending queue
// (`client.replica.pending[i].recipe`, every change's recipe being its own function; a squashed
// batch carries the first `pending[0].batch` changes): the only use of SyncClient internals,
// checked at start-up. The changes of a squashed batch are all acknowledged with its version;
// each change's `index` is its place in the batch (0 for a change sent alone), so that
// (version, index) is the server's order of committed changes.
//
// Outcomes: "acked" (an ack for one of the ids it was sent under), "reported" (the client gave
// up on it and called onError), "noop" (the client dropped it because re-run on newer state it
// changed nothing: e.g. a removal of a gift someone else removed; reported with code
// `superseded` by clients that report those), "pending" (unsettled when the settle timeout ran
// out).
//
// mode "bytes": one writer and `subscribers` subscribers on a document holding {gifts: [...]};
// the writer deletes the first gift; bytes the writer uploaded and each subscriber received
// until every subscriber holds the next version (or the writer's socket was closed, or the
// timeout). Output: one {"event": "result"} line.
import { createHash } from "node:crypto";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { delayedSocket, newMeter } from "./delayed_socket.mjs";
import { loadSyncClient } from "./sync_client_bundle.mjs";

const o = JSON.parse(process.argv[2]);
const HARD_LIMIT_MS = 1000 * (90 + (o.activityS ?? 0) + (o.settleS ?? 0) + (o.timeoutS ?? 0));
setTimeout(() => fail(new Error("hard time limit")), HARD_LIMIT_MS).unref();

function out(event) {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

/** Exits once stdout is flushed (a pipe is written asynchronously: exit() would truncate). */
function exit(code) {
  process.stdout.write("", () => process.exit(code));
}

function fail(err) {
  out({ event: "error", error: String(err && err.stack ? err.stack : err) });
  exit(1);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** mulberry32: a small seeded PRNG, floats in [0, 1). */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** JSON with object keys sorted (Python: json.dumps(sort_keys=True, separators=(",", ":"))). */
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).filter((k) => value[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

const stateHash = (state) => createHash("sha256").update(canonical(state ?? null)).digest("hex");

/** CPU seconds (user + system) this process has used. */
function cpuSeconds() {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

/** Messages of a server frame (one object or an array), parsed only when they may matter. */
function messages(text, words) {
  if (!words.some((w) => text.includes(w))) return [];
  const decoded = JSON.parse(text);
  return Array.isArray(decoded) ? decoded : [decoded];
}

const PATCH_ID = /^\{"type":"patch","id":("(?:[^"\\]|\\.)*"|-?\d+)/;

function sentId(text) {
  const m = PATCH_ID.exec(text);
  return String(m ? JSON.parse(m[1]) : JSON.parse(text).id);
}

/** The recipes of a client's pending changes, head first (SyncClient internals). */
function pendingRecipes(client) {
  const pending = client.replica?.pending;
  if (!Array.isArray(pending) || pending.some((change) => typeof change?.recipe !== "function")) {
    throw new Error(
      "SyncClient internals changed: contention_clients.mjs reads client.replica.pending[i].recipe",
    );
  }
  return pending.map((change) => change.recipe);
}

// -- one user: a SyncClient, its socket hooks and the bookkeeping of its changes ----------------

class User {
  constructor(SyncClient, index, url, latencyMs) {
    this.index = index;
    this.userId = index + 1; // the demo's users are numbers
    this.meter = newMeter();
    this.changes = [];
    this.open = new Map(); // recipe -> change, for changes not settled yet
    this.byId = new Map(); // wire id -> change
    this.rejects = {};
    this.conflictRejects = 0;
    this.errors = [];
    this.rejecting = undefined; // the change whose reject is being handled
    const hooks = {
      sent: (text) => this.sent(text),
      received: (text) => this.received(text),
      handled: () => this.settle(),
    };
    this.client = new SyncClient({
      url,
      doc: o.doc,
      createSocket: (socketUrl) => delayedSocket(socketUrl, latencyMs, this.meter, hooks),
    });
    this.client.onError((error) => this.reported(error));
  }

  /** Makes one change: `recipe` must change the shown state (the workloads make sure). */
  change(kind, tag, target, recipe) {
    const change = {
      tag, kind, target, t0: performance.now(), ids: [], effects: {}, effect: kind,
      outcome: null, version: null, index: null, ackedAt: null, conflicts: 0, error: null,
      slots: {},
    };
    const wrapped = (draft) => recipe(draft, change);
    this.changes.push(change);
    this.open.set(wrapped, change);
    this.client.update(wrapped);
    if (!pendingRecipes(this.client).includes(wrapped)) {
      this.open.delete(wrapped);
      this.changes.pop(); // it changed nothing: not a change
      return false;
    }
    return true;
  }

  sent(text) {
    this.settle(); // leading changes that became no-ops are dropped just before a send
    const recipes = pendingRecipes(this.client);
    const size = Math.max(1, this.client.replica.pending[0]?.batch ?? 1); // squashed: the first `size`
    const id = sentId(text);
    const members = [];
    for (let i = 0; i < size && i < recipes.length; i++) {
      const change = this.open.get(recipes[i]);
      if (!change) continue;
      change.ids.push(id);
      change.effects[id] = change.effect;
      change.slots[id] = i;
      members.push(change);
    }
    if (members.length > 0) this.byId.set(id, members);
  }

  received(text) {
    for (const m of messages(text, ['"ack"', '"reject"'])) {
      if (m.type === "ack") {
        for (const change of this.byId.get(String(m.id)) ?? []) {
          if (change.ackedAt !== null) continue;
          change.ackedAt = performance.now();
          change.version = m.version;
          change.index = change.slots[String(m.id)] ?? 0;
          change.effect = change.effects[String(m.id)] ?? change.effect;
        }
      } else if (m.type === "reject") {
        const code = m.error?.code ?? "?";
        this.rejects[code] = (this.rejects[code] ?? 0) + 1;
        if (code === "conflict") this.conflictRejects += 1;
        const members = this.byId.get(String(m.id)) ?? [];
        for (const change of members) if (code === "conflict") change.conflicts += 1;
        // a squashed batch refused for another reason drops nothing (its changes go alone next)
        if (members.length === 1) this.rejecting = members[0];
      }
    }
  }

  reported(error) {
    // "superseded": dropped because it changes nothing any more, a no-op, not a loss
    const change = error.code === "superseded" ? undefined : this.rejecting;
    if (change && change.outcome === null && change.ackedAt === null && change.error === null) {
      change.error = `${error.code}: ${error.message}`;
    }
    if (this.errors.length < 50) this.errors.push({ code: error.code, message: error.message });
    else this.errors.push({ code: error.code });
  }

  /** Settles the changes that left the client's pending queue. */
  settle() {
    this.rejecting = undefined;
    if (this.open.size === 0) return;
    const pending = new Set(pendingRecipes(this.client));
    for (const [recipe, change] of this.open) {
      if (pending.has(recipe)) continue;
      this.open.delete(recipe);
      if (change.ackedAt !== null) change.outcome = "acked";
      else if (change.error !== null) change.outcome = "reported";
      else change.outcome = "noop";
    }
  }

  get idle() {
    return this.client.status === "synced" && this.open.size === 0;
  }

  result() {
    this.settle();
    const latencies = [];
    const changes = this.changes.map((c) => {
      const ms = c.ackedAt === null ? null : Math.round((c.ackedAt - c.t0) * 100) / 100;
      if (ms !== null) latencies.push(ms);
      return {
        tag: c.tag, kind: c.kind, target: c.target, effect: c.effect,
        outcome: c.outcome ?? "pending", version: c.version, index: c.index, ms, conflicts: c.conflicts,
        sends: c.ids.length, error: c.error,
      };
    });
    return {
      user: this.index, status: this.client.status, version: this.client.version ?? null,
      stateHash: stateHash(this.client.state), changes, rejects: this.rejects,
      conflictRejects: this.conflictRejects, errors: this.errors, meter: this.meter,
      ackMs: latencies,
    };
  }
}

// -- workloads: which change a user makes, from the state it shows ------------------------------

function pick(rng, items) {
  return items.length ? items[Math.floor(rng() * items.length)] : undefined;
}

function newGift(tag) {
  return { id: tag, description: `Gift ${tag}`, image: `https://picsum.photos/seed/${tag}/200/300` };
}

const WORKLOADS = {
  /** (a) everyone appends to one list. */
  append(user, tag) {
    return user.change("append", tag, null, (draft) => {
      draft.items.push({ id: tag, user: user.userId });
    });
  },

  /** (b) the gift list: append a gift, toggle the reservation of one, or remove one. */
  gifts(user, tag, rng) {
    const gifts = user.client.state?.gifts ?? [];
    const r = rng();
    const mix = o.mix ?? { append: 0.25, toggle: 0.5 };
    if (r < mix.append || gifts.length === 0) {
      return user.change("append", tag, tag, (draft) => {
        draft.gifts.push(newGift(tag));
      });
    }
    if (r < mix.append + mix.toggle) {
      // the demo's toggle: reserve a free gift, or free one this user holds
      const mine = (g) => g.reservedBy === undefined || g.reservedBy === user.userId;
      const gift = pick(rng, gifts.filter(mine));
      if (gift) {
        return user.change("toggle", tag, gift.id, (draft, change) => {
          const found = draft.gifts.find((g) => g.id === gift.id);
          change.effect = "noop";
          if (!found) return;
          if (found.reservedBy === undefined) {
            found.reservedBy = user.userId;
            change.effect = "reserve";
          } else if (found.reservedBy === user.userId) {
            delete found.reservedBy;
            change.effect = "release";
          }
        });
      }
    }
    const gift = pick(rng, gifts);
    return user.change("remove", tag, gift.id, (draft, change) => {
      const at = draft.gifts.findIndex((g) => g.id === gift.id);
      change.effect = at < 0 ? "noop" : "remove";
      if (at >= 0) draft.gifts.splice(at, 1);
    });
  },

  /** (c) everyone writes the same field. */
  field(user, tag) {
    return user.change("write", tag, "title", (draft) => {
      draft.title = tag;
    });
  },
};

// -- running ------------------------------------------------------------------------------------

async function until(condition, timeoutMs, pollMs = 25) {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await condition()) return true;
    await sleep(pollMs);
  }
  return condition();
}

function httpUrl(wsUrl) {
  return wsUrl.replace(/^ws/, "http");
}

async function serverVersion() {
  try {
    const response = await fetch(`${httpUrl(o.urls[0])}/docs/${o.doc}/state`, {
      method: "GET",
      signal: AbortSignal.timeout(2000),
    });
    await response.arrayBuffer();
    const etag = response.headers.get("etag"); // "N", or W/"N" for a gzipped body
    return etag ? Number(JSON.parse(etag.replace(/^W\//, ""))) : null;
  } catch {
    return null; // restarting: ask again
  }
}

async function connectAll(users, timeoutMs) {
  for (const user of users) user.client.connect();
  const ok = await until(() => users.every((u) => u.client.status === "synced"), timeoutMs);
  if (!ok) throw new Error(`not every client synced within ${timeoutMs} ms`);
  pendingRecipes(users[0].client); // fail now if the internals are not there
}

async function runUsers(SyncClient) {
  const workload = WORKLOADS[o.workload];
  if (!workload) throw new Error(`unknown workload ${o.workload}`);
  const users = Array.from({ length: o.users }, (_, i) =>
    new User(SyncClient, i, o.urls[i % o.urls.length], o.latencyMs));
  await connectAll(users, 1000 * (o.connectS ?? 30));
  out({ event: "ready", users: users.length, version: users[0].client.version });

  const [lo, hi] = o.paceMs ?? [300, 1000];
  const activityMs = 1000 * o.activityS;
  const lag = monitorEventLoopDelay({ resolution: 10 });
  lag.enable();
  const cpu0 = cpuSeconds();
  const t0 = performance.now();
  const made = users.map(() => 0);
  await Promise.all(users.map(async (user) => {
    const rng = prng((o.seed ?? 1) * 100_003 + user.index);
    await sleep(rng() * hi); // users do not start in step
    while (performance.now() - t0 < activityMs) {
      if (user.client.state !== undefined) {
        const tag = `u${user.index}-c${made[user.index] + 1}`;
        if (workload(user, tag, rng)) made[user.index] += 1;
      }
      await sleep(lo + rng() * (hi - lo));
    }
  }));
  const activity = (performance.now() - t0) / 1000;
  out({ event: "idle" });
  lag.disable();
  // how busy this process was while the users were active: near 1 core, or a large event-loop
  // delay, means the clients' own work (not the server) limited the row
  const load = {
    cpuCores: (cpuSeconds() - cpu0) / activity,
    loopDelayP99Ms: lag.percentile(99) / 1e6,
    loopDelayMaxMs: lag.max / 1e6,
  };

  const s0 = performance.now();
  let version = null;
  const settled = await until(async () => {
    if (!users.every((u) => u.idle)) return false;
    version = await serverVersion();
    return version !== null && users.every((u) => u.client.version === version);
  }, 1000 * o.settleS, 50);
  const settleS = (performance.now() - s0) / 1000;
  const results = users.map((u) => u.result());
  for (const user of users) user.client.disconnect();
  out({
    event: "result", mode: "users", workload: o.workload, settled, activityS: activity, settleS,
    serverVersion: version, cpuS: cpuSeconds(), load, clients: results,
  });
}

async function runBytes(SyncClient) {
  const writer = new User(SyncClient, 0, o.urls[0], o.latencyMs);
  const subscribers = Array.from({ length: o.subscribers }, (_, i) =>
    new User(SyncClient, i + 1, o.urls[(i + 1) % o.urls.length], o.latencyMs));
  const everyone = [writer, ...subscribers];
  await connectAll(everyone, 30_000);
  const v0 = writer.client.version;
  const gifts = writer.client.state.gifts.length;
  const before = everyone.map((u) => ({ ...u.meter, closes: [...u.meter.closes] }));
  const t0 = performance.now();
  writer.change("remove", "w-c1", writer.client.state.gifts[0].id, (draft) => {
    draft.gifts.splice(0, 1);
  });
  const done = () => subscribers.every((u) => u.client.version === v0 + 1) && writer.idle;
  const closed = () => writer.meter.closes.length > before[0].closes.length;
  await until(() => done() || closed(), 1000 * o.timeoutS);
  const ms = performance.now() - t0;
  const delivered = done();
  for (const user of everyone) user.client.disconnect();
  const delta = (u, i, key) => u.meter[key] - before[i][key];
  out({
    event: "result", mode: "bytes", gifts, delivered, ms,
    writer: {
      bytesUp: delta(writer, 0, "bytesUp"), framesUp: delta(writer, 0, "framesUp"),
      bytesDown: delta(writer, 0, "bytesDown"), closes: writer.meter.closes.slice(before[0].closes.length),
      errors: writer.errors,
    },
    subscribers: subscribers.map((u, i) => ({
      bytesDown: delta(u, i + 1, "bytesDown"), framesDown: delta(u, i + 1, "framesDown"),
      version: u.client.version,
    })),
  });
}

try {
  const { SyncClient } = await loadSyncClient();
  if (o.mode === "bytes") await runBytes(SyncClient);
  else await runUsers(SyncClient);
  exit(0);
} catch (err) {
  fail(err);
}
