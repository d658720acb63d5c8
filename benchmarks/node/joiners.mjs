// N newcomers to one version at once: the server's CPU for all of them, and what each received.
//
//   node joiners.mjs '{"url": "ws://.../ws/DOC", "n": 100, "deflate": true, "serverPid": 1234}'
//
// Opens N protocol-1 connections together (offering permessage-deflate with `deflate`, as a
// browser does) and waits until each has its `synced`. Reports the wall time until all are
// synced, the server's CPU seconds over that time (/proc/PID/stat), and per connection the
// bytes read from the socket (compressed, with the handshake) and the message bytes (after
// decompression). Output: one JSON line on stdout.
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { WebSocket } from "./deps.mjs";

const o = JSON.parse(process.argv[2]);
setTimeout(() => fail(new Error("hard time limit")), 120_000).unref();

function fail(err) {
  process.stdout.write(JSON.stringify({ error: String(err && err.stack ? err.stack : err) }) + "\n");
  process.exit(1);
}

function cpuOf(pid) {
  const rest = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = rest.slice(rest.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

function join() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(o.url, { perMessageDeflate: Boolean(o.deflate), maxPayload: 2 ** 31 });
    let bytes = 0;
    ws.on("error", reject);
    ws.on("message", (data) => {
      bytes += data.length;
      const msg = JSON.parse(data);
      for (const m of Array.isArray(msg) ? msg : [msg]) {
        if (m.type === "synced") {
          const wire = ws._socket.bytesRead;
          const extensions = ws.extensions;
          ws.terminate();
          resolve({ bytes, wire, extensions });
        }
      }
    });
  });
}

async function main() {
  const cpu0 = cpuOf(o.serverPid);
  const t0 = performance.now();
  const all = await Promise.all(Array.from({ length: o.n }, join));
  const ms = performance.now() - t0;
  const cpu = cpuOf(o.serverPid) - cpu0;
  process.stdout.write(JSON.stringify({
    n: o.n, ms, server_cpu_s: cpu, bytes: all[0].bytes, wire_bytes: all[0].wire,
    extensions: all[0].extensions,
  }) + "\n");
}

main().then(() => process.exit(0), fail);
