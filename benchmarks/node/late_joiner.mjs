// A late joiner: a real Immer client that connects, receives and applies (applyPatches) until it
// has the current state, and reports how long that took and how many bytes it received.
//
//   node late_joiner.mjs '{"mode": "...", "url": "...", "repeat": 5, "expected": "final.json"}'
//
// Modes:
//   lesson  the lesson relay: the first frame is the whole history (a flat array of patches),
//           applied to {} with one applyPatches.
//   lesson_pm  the lesson relay with --per-message: each stored message arrives as its own frame
//           and is applied with applyPatches as it arrives (as the lesson's client does with
//           each message), until `messagesExpected` (H) messages have been received.
//   join    our server, protocol 1 (ws .../ws/DOC): `snapshot`, then `patch` messages (the
//           tail), until `synced`. The patches of each frame are applied with one applyPatches.
//   since0  our server, resume from version 0 (ws .../ws/DOC?since=0&epoch=E): every `patch`
//           message of the history until `synced`, applied to {} frame by frame.
//   http0   our server, GET .../patches?since=0&format=immer: one response, applied to {}.
//   frame   ../relay/state_frame_server.mjs: the state as one frame, JSON.parse'd (the network
//           floor of a join: what any server costs at least).
//
// A join's time runs from opening the connection (or request) to the state being applied;
// bytes are the message payloads received (text, after any decompression; compression is
// offered only with `"deflate": true`, as a browser does); wireBytes are the bytes read from the
// socket (handshake and frame headers included, compressed). Joins run one after another in this process, each on a fresh connection; the first
// one is also reported on its own (cold: JIT not warm). Convergence is checked against the
// expected final state after the clock stops. Output: one JSON line on stdout, with `floorMs`:
// the time to JSON.parse the final state alone, a lower bound for any join.
import { readFileSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";
import { performance } from "node:perf_hooks";
import { immer, WebSocket } from "./deps.mjs";

const { applyPatches } = immer;
const opts = JSON.parse(process.argv[2]);
const expectedText = opts.expected ? readFileSync(opts.expected, "utf8") : undefined;
const expected = expectedText === undefined ? undefined : JSON.parse(expectedText);
const TIMEOUT_MS = opts.timeoutMs ?? 600_000;

function withTimeout(promise, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout: ${what}`)), TIMEOUT_MS);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

function openSocket(url) {
  return new WebSocket(url, { perMessageDeflate: Boolean(opts.deflate), maxPayload: 2 ** 31 });
}

// one join: resolves {ms, bytes, frames, messages, state}
function joinWs(url, mode) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let bytes = 0, frames = 0, messages = 0;
    let state = {};
    const ws = openSocket(url);
    const done = () => {
      const ms = performance.now() - t0;
      const wireBytes = ws._socket ? ws._socket.bytesRead : null;
      ws.terminate();
      resolve({ ms, bytes, wireBytes, frames, messages, state });
    };
    ws.on("error", reject);
    ws.on("close", (code, reason) => reject(new Error(`closed early: ${code} ${reason}`)));
    ws.on("message", (data) => {
      bytes += data.length;
      frames += 1;
      const msg = JSON.parse(data);
      if (mode === "frame") {
        messages += 1;
        state = msg;
        ws.removeAllListeners("close");
        done();
        return;
      }
      if (mode === "lesson") {
        messages += 1;
        state = applyPatches(state, msg);
        ws.removeAllListeners("close");
        done();
        return;
      }
      if (mode === "lesson_pm") {
        messages += 1;
        state = applyPatches(state, msg);
        if (messages >= opts.messagesExpected) {
          ws.removeAllListeners("close");
          done();
        }
        return;
      }
      const list = Array.isArray(msg) ? msg : [msg];
      let pending = null; // patches of this frame, applied together
      let synced = false;
      for (const m of list) {
        messages += 1;
        if (m.type === "snapshot") {
          state = m.state;
        } else if (m.type === "patch") {
          if (pending === null) pending = [];
          for (const p of m.patches) pending.push(p);
        } else if (m.type === "synced") {
          synced = true;
        } else if (m.type === "error" || m.type === "reject") {
          reject(new Error(JSON.stringify(m)));
          return;
        }
      }
      if (pending !== null) state = applyPatches(state, pending);
      if (synced) {
        ws.removeAllListeners("close");
        done();
      }
    });
  });
}

async function joinHttp(url) {
  const t0 = performance.now();
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${await res.text()}`);
  const body = await res.arrayBuffer();
  const msg = JSON.parse(Buffer.from(body));
  const state = applyPatches({}, msg.patches);
  const ms = performance.now() - t0;
  return { ms, bytes: body.byteLength, frames: 1, messages: 1, state };
}

async function main() {
  const runs = [];
  let converged = true;
  for (let k = 0; k < (opts.repeat ?? 5); k++) {
    const r = await withTimeout(
      opts.mode === "http0" ? joinHttp(opts.url) : joinWs(opts.url, opts.mode),
      `${opts.mode} ${opts.url}`,
    );
    if (expected !== undefined && !isDeepStrictEqual(r.state, expected)) converged = false;
    delete r.state;
    runs.push(r);
    await new Promise((res) => setTimeout(res, 20)); // let the previous socket go
  }
  // the floor of any join: parsing the final state's JSON (no network, no server, no patches)
  let floorMs = null;
  if (expectedText !== undefined) {
    const times = [];
    for (let k = 0; k < 7; k++) {
      const t0 = performance.now();
      JSON.parse(expectedText);
      times.push(performance.now() - t0);
    }
    floorMs = times.sort((a, b) => a - b)[3];
  }
  process.stdout.write(JSON.stringify({ mode: opts.mode, converged, runs, floorMs }) + "\n");
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stdout.write(JSON.stringify({ mode: opts.mode, error: String(err) }) + "\n");
    process.exit(1);
  },
);
