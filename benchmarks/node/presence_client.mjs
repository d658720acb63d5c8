// The presence load generator: N clients on one document, each moving a cursor at `hz`.
//
//   node presence_client.mjs '{"url": "ws://127.0.0.1:PORT/ws/doc", "clients": 100, "hz": 60,
//                              "throttleMs": 0, "warmupS": 2, "seconds": 5, "serverPid": 1234}'
//
// Every client joins with `presence=1` and waits for `synced` and its full presence list. Then
// every client's cursor moves `hz` times a second (a loop that catches up when the timer is
// late, so the offered rate holds); a client sends every move (`throttleMs` 0) or at most once
// per `throttleMs`, the latest value winning (what SyncClient does). Every client reads and
// counts what it receives; only `observers` of them also parse it (JSON parsing 100 clients'
// traffic would saturate this process first). Measured after the warm-up, over `seconds`:
// presence messages sent, bytes and frames received per client per second, peer entries
// received and the age of the cursor positions received (each state carries its send time; one
// clock) by the observers, and the CPU of the server and of this process. Output: one JSON line.
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { WebSocket } from "./deps.mjs";

const o = JSON.parse(process.argv[2]);
const TICK = 100;
setTimeout(() => fail(new Error("hard time limit")), 1000 * (90 + 3 * (o.warmupS + o.seconds))).unref();

function fail(err) {
  process.stdout.write(JSON.stringify({ error: String(err && err.stack ? err.stack : err) }) + "\n");
  process.exit(1);
}

function cpuOf(pid) {
  if (!pid) return null;
  const rest = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = rest.slice(rest.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / TICK;
}

function systemBusy() {
  const f = readFileSync("/proc/stat", "utf8").split("\n", 1)[0].split(/\s+/).slice(1, 9).map(Number);
  return (f.reduce((a, b) => a + b, 0) - f[3] - f[4]) / TICK;
}

const clients = [];

function open(i) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${o.url}?presence=1`, { perMessageDeflate: false });
    const observer = i < (o.observers ?? 5);
    const c = { i, ws, observer, synced: false, bytes: 0, frames: 0, entries: 0, ages: [], closed: false, lastSent: -1e9, x: 0 };
    ws.on("error", reject);
    ws.on("close", () => (c.closed = true));
    ws.on("message", (data) => {
      const text = String(data);
      c.bytes += text.length;
      c.frames += 1;
      if (c.synced && !c.observer) return;
      const parsed = JSON.parse(text);
      for (const m of Array.isArray(parsed) ? parsed : [parsed]) {
        if (m.type === "presence") {
          if (m.self !== undefined && !c.synced) {
            c.synced = true;
            resolve(c);
          }
          c.entries += m.peers.length;
          if (measuring) {
            const now = performance.now();
            for (const p of m.peers) if (p.state && p.state.t !== undefined) c.ages.push(now - p.state.t);
          }
        }
      }
    });
  });
}

let measuring = false;

function send(c, now) {
  c.ws.send(JSON.stringify({ type: "presence", state: { x: c.x, y: c.i, t: now } }));
  c.lastSent = now;
  sent += 1;
}

let sent = 0;
let moves = 0;
let start = 0;

function loop() {
  const now = performance.now();
  const due = Math.floor(((now - start) / 1000) * o.hz) - moves;
  for (let k = 0; k < due; k++) {
    moves += 1;
    for (const c of clients) {
      if (c.closed) continue;
      c.x += 1;
      if (o.throttleMs <= 0 || now - c.lastSent >= o.throttleMs) send(c, now);
    }
  }
}

function percentile(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function main() {
  for (let i = 0; i < o.clients; i += 10) {
    const batch = [];
    for (let j = i; j < Math.min(o.clients, i + 10); j++) batch.push(open(j));
    clients.push(...(await Promise.all(batch)));
  }
  start = performance.now();
  const timer = setInterval(loop, 1000 / o.hz / 2);
  await new Promise((r) => setTimeout(r, o.warmupS * 1000));
  const zero = clients.map((c) => ({ bytes: c.bytes, frames: c.frames, entries: c.entries }));
  const sent0 = sent;
  const moves0 = moves;
  const cpu0 = { server: cpuOf(o.serverPid), self: process.cpuUsage(), system: systemBusy() };
  const t0 = performance.now();
  measuring = true;
  await new Promise((r) => setTimeout(r, o.seconds * 1000));
  measuring = false;
  const elapsed = (performance.now() - t0) / 1000;
  const self = process.cpuUsage(cpu0.self);
  const serverCpu = o.serverPid ? (cpuOf(o.serverPid) - cpu0.server) / elapsed : null;
  const loadgenCpu = (self.user + self.system) / 1e6 / elapsed;
  const systemCpu = (systemBusy() - cpu0.system) / elapsed;
  clearInterval(timer);
  const live = clients.filter((c) => !c.closed);
  const per = (k) => clients.reduce((a, c, n) => a + (c[k] - zero[n][k]), 0) / clients.length / elapsed;
  const observers = clients.filter((c) => c.observer);
  const perObserver = (k) =>
    observers.reduce((a, c) => a + (c[k] - zero[c.i][k]), 0) / Math.max(1, observers.length) / elapsed;
  const ages = clients.flatMap((c) => c.ages).sort((a, b) => a - b);
  const result = {
    clients: o.clients,
    connected: live.length,
    hz: o.hz,
    throttleMs: o.throttleMs,
    seconds: elapsed,
    movesPerClientPerS: (moves - moves0) / elapsed,
    sentPerClientPerS: (sent - sent0) / clients.length / elapsed,
    bytesPerClientPerS: per("bytes"),
    framesPerClientPerS: per("frames"),
    entriesPerClientPerS: perObserver("entries"),
    ageP50Ms: percentile(ages, 0.5),
    ageP99Ms: percentile(ages, 0.99),
    serverCpu,
    loadgenCpu,
    otherCpu: systemCpu - (serverCpu ?? 0) - loadgenCpu,
  };
  for (const c of clients) c.ws.terminate();
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(0);
}

main().catch(fail);
