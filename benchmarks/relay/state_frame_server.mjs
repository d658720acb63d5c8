// The network floor of a join: a Node server that sends each connection one prepared frame, the
// document's state (read once from a file), and nothing else. A client's join against it is what
// any server must at least cost: connect, receive the state in one frame, JSON.parse it.
//
//   node state_frame_server.mjs PORT STATE.json [--exit-with-stdin]
//
// It listens on 127.0.0.1 (PORT 0: a free port, printed as "listening PORT"), sends the file's
// bytes as one text frame without compression, and stops on SIGTERM/SIGINT (and, with
// --exit-with-stdin, when its parent closes its stdin).
import { readFileSync } from "node:fs";
import { WebSocketServer } from "../node/deps.mjs";

const port = Number(process.argv[2] ?? 0);
const state = readFileSync(process.argv[3]); // one Buffer, sent as it is to every connection
const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false });

wss.on("connection", (ws) => ws.send(state, { binary: false }));
wss.on("listening", () => console.log(`listening ${wss.address().port}`));

function stop() {
  wss.close();
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
if (process.argv.includes("--exit-with-stdin")) {
  process.stdin.on("end", stop);
  process.stdin.resume();
}
