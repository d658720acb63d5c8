// Loads a workload (JSONL, one batch of Immer patches per line) into a server over WebSocket,
// as fast as the server takes it, and reports how long that took.
//
//   node loader.mjs '{"mode": "lesson"|"ours", "url": "...", "file": "batches.jsonl",
//                     "window": 256}'
//
// lesson: every batch is sent as a bare array by one writer; a second client (the watcher)
//         counts the relayed messages: the history is loaded when it has seen them all.
// ours:   protocol 1; every batch is a `patch` message with an id, pipelined with at most
//         `window` batches not yet acknowledged; loaded when every batch is acked.
// Output: one JSON line on stdout {batches, seconds, version?}.
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { WebSocket } from "./deps.mjs";

const opts = JSON.parse(process.argv[2]);
const lines = readFileSync(opts.file, "utf8").split("\n").filter((l) => l.length > 0);
const n = lines.length;
const WINDOW = opts.window ?? 256;
const TIMEOUT_MS = opts.timeoutMs ?? 1_800_000;

// resolves once the first message (the relay's history) has arrived; the listener is attached
// before the handshake, since that message can arrive in the same read as the handshake reply
function openLesson(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 2 ** 31 });
    // the one-frame relay sends the (empty) history first; the per-message relay, with no
    // history yet, sends nothing: ready once open
    if (opts.perMessage) ws.once("open", () => resolve(ws));
    else ws.once("message", () => resolve(ws));
    ws.once("error", reject);
  });
}

async function loadLesson() {
  const watcher = await openLesson(opts.url);
  const writer = await openLesson(opts.url);
  const t0 = performance.now();
  const allSeen = new Promise((resolve) => {
    let seen = 0;
    watcher.on("message", () => {
      seen += 1;
      if (seen === n) resolve();
    });
  });
  let i = 0;
  await new Promise((resolve) => {
    const pump = () => {
      while (i < n && writer.bufferedAmount < 1 << 20) writer.send(lines[i++]);
      if (i < n) setImmediate(pump);
      else resolve();
    };
    pump();
  });
  await allSeen;
  const seconds = (performance.now() - t0) / 1000;
  writer.close();
  watcher.close();
  return { batches: n, seconds };
}

async function loadOurs() {
  const t0 = performance.now();
  return await new Promise((resolve, reject) => {
    const ws = new WebSocket(opts.url, { perMessageDeflate: false, maxPayload: 2 ** 31 });
    ws.on("error", reject);
    let sent = 0, acked = 0, version = null, synced = false;
    const pump = () => {
      while (synced && sent < n && sent - acked < WINDOW) {
        ws.send(`{"type":"patch","id":${sent},"patches":${lines[sent]}}`);
        sent += 1;
      }
    };
    ws.on("close", (code) => reject(new Error(`closed (${code}) after ${acked} acks`)));
    ws.on("message", (data) => {
      const msg = JSON.parse(data);
      for (const m of Array.isArray(msg) ? msg : [msg]) {
        if (m.type === "synced") synced = true; // (after the snapshot)
        else if (m.type === "ack") {
          acked += 1;
          version = m.version;
        } else if (m.type === "reject" || m.type === "error") {
          reject(new Error(JSON.stringify(m)));
          return;
        }
      }
      if (acked === n) {
        ws.removeAllListeners("close");
        ws.close();
        resolve({ batches: n, seconds: (performance.now() - t0) / 1000, version });
        return;
      }
      pump();
    });
  });
}

const timer = setTimeout(() => {
  process.stdout.write(JSON.stringify({ error: "timeout" }) + "\n");
  process.exit(1);
}, TIMEOUT_MS);

(opts.mode === "lesson" ? loadLesson() : loadOurs()).then(
  (r) => {
    clearTimeout(timer);
    process.stdout.write(JSON.stringify(r) + "\n");
    process.exit(0);
  },
  (err) => {
    process.stdout.write(JSON.stringify({ error: String(err) }) + "\n");
    process.exit(1);
  },
);
