// The fan-out load generator: S subscribers and one writer on one document, in one process.
//
//   node fanout_client.mjs '{"target": "lesson"|"ours", "url": "...", "subscribers": 100,
//                            "window": 32, "warmupS": 1, "saturateS": 4, "pacedRate": 200,
//                            "pacedS": 4, "payloadBytes": 100, "serverPid": 1234}'
//
// Every patch the writer sends carries its sequence number and send time (performance.now()
// of this process, which also timestamps every receipt: one clock, no skew).
//
// Phase "saturate": the writer keeps `window` patches in flight (sent, not yet received by every
// subscriber) and sends the next as soon as one completes: delivered patches per second at
// saturation, and the latency at that load. Phase "paced": the writer sends `pacedRate` patches
// per second: latency below saturation. For each phase: deliveries per second (patch receipts
// summed over subscribers), patches per second delivered to all subscribers, p50/p90/p99/max
// latency, and the CPU time of this process and of the server (/proc/PID/stat), which tell which
// side was saturated. lesson: bare arrays on the relay's only path; ours: protocol 1 `patch`
// messages (or arrays of them). Output: one JSON line on stdout.
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { WebSocket } from "./deps.mjs";

const o = JSON.parse(process.argv[2]);
const S = o.subscribers;
const TICK = 100; // clock ticks per second for /proc/PID/stat (getconf CLK_TCK on Linux)
const HARD_LIMIT_MS = 1000 * (60 + 3 * (o.warmupS + o.saturateS + o.pacedS));
setTimeout(() => fail(new Error("hard time limit")), HARD_LIMIT_MS).unref();

function fail(err) {
  process.stdout.write(JSON.stringify({ error: String(err && err.stack ? err.stack : err) }) + "\n");
  process.exit(1);
}

function cpuOf(pid) {
  // several server processes (serverPids): their CPU seconds added up
  if (Array.isArray(pid)) return pid.length ? pid.map(cpuOf).reduce((a, b) => a + b, 0) : null;
  if (!pid) return null;
  const f = readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return (Number(rest[11]) + Number(rest[12])) / TICK; // utime + stime, seconds
}

function systemBusy() {
  // busy CPU seconds of the whole machine (/proc/stat: all but idle and iowait)
  const f = readFileSync("/proc/stat", "utf8").split("\n", 1)[0].split(/\s+/).slice(1, 9).map(Number);
  return (f.reduce((a, b) => a + b, 0) - f[3] - f[4]) / TICK;
}

function open(url) {
  return new Promise((resolve, reject) => {
    // deflate: offer permessage-deflate as a browser does (the server may take it)
    const ws = new WebSocket(url, { perMessageDeflate: Boolean(o.deflate), maxPayload: 2 ** 31 });
    let ready = false;
    ws.on("error", (e) => (ready ? fail(e) : reject(e)));
    ws.on("message", function first(data) {
      // lesson: the history frame; ours: wait for `synced`
      if (o.target === "lesson" || String(data).includes('"synced"')) {
        ws.off("message", first);
        ready = true;
        resolve(ws);
      }
    });
  });
}

// -- state of the run ---------------------------------------------------------------------------
const sentAt = new Map(); // seq -> send time
const remaining = new Map(); // seq -> receipts still expected
let phase = null; // { name, latencies: [], deliveries, completed, ... } when measuring
let inFlight = 0;
let onComplete = null;

function receipt(seq, t, now) {
  const left = remaining.get(seq) - 1;
  if (phase && t >= phase.t0) {
    phase.latencies.push(now - t);
    phase.deliveries += 1;
  }
  if (left === 0) {
    remaining.delete(seq);
    sentAt.delete(seq);
    inFlight -= 1;
    if (phase && t >= phase.t0) {
      phase.completed += 1;
      phase.complete.push(now - t); // until every subscriber had it
    }
    if (onComplete) onComplete();
  } else {
    remaining.set(seq, left);
  }
}

function onSubscriberMessage(data) {
  const now = performance.now();
  const msg = JSON.parse(data);
  if (o.target === "lesson") {
    for (const p of msg) receipt(p.value.s, p.value.t, now);
    return;
  }
  for (const m of Array.isArray(msg) ? msg : [msg]) {
    if (m.type === "patch") for (const p of m.patches) receipt(p.value.s, p.value.t, now);
  }
}

let seq = 0;
let acks = 0;
const pad = "x".repeat(Math.max(0, (o.payloadBytes ?? 100) - 80));
function send(writer) {
  const s = seq++;
  const t = performance.now();
  const patches = `[{"op":"replace","path":["last"],"value":{"s":${s},"t":${t},"pad":"${pad}"}}]`;
  sentAt.set(s, t);
  remaining.set(s, S);
  inFlight += 1;
  writer.send(o.target === "lesson" ? patches : `{"type":"patch","id":${s},"patches":${patches}}`);
}

function quantile(sorted, q) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function startPhase(name) {
  phase = {
    name, t0: performance.now(), latencies: [], complete: [], deliveries: 0, completed: 0,
    cpuClient: process.cpuUsage(), cpuServer: cpuOf(o.serverPids ?? o.serverPid), cpuAll: systemBusy(),
  };
}

function endPhase() {
  const p = phase;
  phase = null;
  const seconds = (performance.now() - p.t0) / 1000;
  const cpu = process.cpuUsage(p.cpuClient);
  const server = cpuOf(o.serverPids ?? o.serverPid);
  const all = (systemBusy() - p.cpuAll) / seconds;
  const lat = Float64Array.from(p.latencies).sort();
  const done = Float64Array.from(p.complete).sort();
  const r = {
    phase: p.name,
    seconds,
    deliveries_per_s: p.deliveries / seconds,
    patches_per_s: p.completed / seconds,
    latency_ms: {
      p50: quantile(lat, 0.5), p90: quantile(lat, 0.9), p99: quantile(lat, 0.99),
      max: lat.length ? lat[lat.length - 1] : null, samples: lat.length,
    },
    complete_ms: { p50: quantile(done, 0.5), p99: quantile(done, 0.99), samples: done.length },
    cpu_client: (cpu.user + cpu.system) / 1e6 / seconds,
    cpu_server: p.cpuServer === null ? null : (server - p.cpuServer) / seconds,
  };
  r.cpu_other = Math.max(0, all - r.cpu_client - (r.cpu_server ?? 0));
  return r;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function saturate(writer) {
  const fill = () => {
    while (inFlight < o.window) send(writer);
  };
  onComplete = fill;
  fill();
  await sleep(o.warmupS * 1000);
  startPhase("saturate");
  await sleep(o.saturateS * 1000);
  const r = endPhase();
  onComplete = null;
  await drain();
  return r;
}

async function paced(writer) {
  const rate = o.pacedRate;
  const start = performance.now();
  let sent = 0;
  let measuredFrom = null;
  let result = null;
  while (true) {
    const now = performance.now();
    const elapsed = (now - start) / 1000;
    if (measuredFrom === null && elapsed >= o.warmupS) {
      startPhase("paced");
      measuredFrom = now;
    } else if (measuredFrom !== null && now - measuredFrom >= o.pacedS * 1000) {
      result = endPhase();
      break;
    }
    const due = Math.floor(elapsed * rate);
    while (sent < due) {
      send(writer);
      sent += 1;
    }
    await sleep(1);
  }
  result.offered_patches_per_s = rate;
  await drain();
  return result;
}

async function drain(limitMs = 30_000) {
  const until = performance.now() + limitMs;
  while (inFlight > 0 && performance.now() < until) await sleep(5);
  const lost = inFlight;
  return lost;
}

function rssOf(pid) {
  if (!pid || Array.isArray(pid)) return null;
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : null;
}

async function main() {
  const subs = [];
  const rssBefore = rssOf(o.serverPid);
  const t0 = performance.now();
  for (let i = 0; i < S; i += 50) {
    const group = [];
    // subscribers spread round-robin over several server processes when "urls" is given
    for (let j = i; j < Math.min(S, i + 50); j++) group.push(open(o.urls ? o.urls[j % o.urls.length] : o.url));
    subs.push(...(await Promise.all(group)));
  }
  const connectSeconds = (performance.now() - t0) / 1000;
  await sleep(500); // let the server settle before reading its memory
  const rssConnected = rssOf(o.serverPid);
  for (const ws of subs) ws.on("message", onSubscriberMessage);
  const writer = await open(o.writerUrl ?? o.url);
  writer.on("message", () => {
    acks += 1;
  });
  const phases = o.saturateS > 0 ? [await saturate(writer)] : [];
  if (o.pacedS > 0) phases.push(await paced(writer));
  const undelivered = inFlight;
  for (const ws of [...subs, writer]) ws.terminate();
  process.stdout.write(
    JSON.stringify({
      target: o.target, subscribers: S, connect_s: connectSeconds, undelivered, phases,
      rss_before: rssBefore, rss_connected: rssConnected,
    }) + "\n",
  );
}

main().then(() => process.exit(0), fail);
