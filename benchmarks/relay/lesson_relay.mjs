// The lesson-style relay: the server of the Immer course lesson "Create a Simple WebSocket
// Server to Distribute Patches from Immer" (mweststrate/immer-gifts, tag lesson15, server.js),
// kept faithful for benchmarking. It keeps every patch it has ever received in one flat array,
// relays each message as received to every other client, and sends each newcomer the whole
// history in one frame (JSON.stringify(history)), which the client replays with applyPatches.
//
// With --per-message the relay keeps every message as received (the raw frame) and sends a
// newcomer each stored message as its own frame, in order: the baseline of the benchmark issue
// ("it keeps every message and sends each newcomer the whole history, each message as received").
// Without the flag: the lesson's one-frame variant above.
//
// Differences from the lesson, none of which changes the algorithm: it listens on 127.0.0.1 on
// the port given as the first argument (0: a free port, printed as "listening PORT"), it does not
// console.log every message (that would only slow it down), and it stops on SIGTERM/SIGINT (and,
// with --exit-with-stdin, when its parent closes its stdin).
import { WebSocketServer } from "../node/deps.mjs";

const port = Number(process.argv[2] ?? 0);
const wss = new WebSocketServer({ host: "127.0.0.1", port });

/** Connected clients */
const connections = [];

/** State as seen by server: every patch ever received */
const history = [];

/** --per-message: every message as received, in order */
const perMessage = process.argv.includes("--per-message");
const messages = [];

wss.on("connection", function connection(ws) {
  connections.push(ws);

  ws.on("message", function incoming(message, isBinary) {
    if (perMessage) messages.push(isBinary ? message : message.toString());
    else history.push(...JSON.parse(message));
    for (const client of connections) {
      if (client !== ws) client.send(message, { binary: isBinary });
    }
  });

  ws.on("close", function () {
    const idx = connections.indexOf(ws);
    if (idx !== -1) connections.splice(idx, 1);
  });

  /** Send initial state */
  if (perMessage) for (const m of messages) ws.send(m);
  else ws.send(JSON.stringify(history));
});

wss.on("listening", () => {
  process.stdout.write(`listening ${wss.address().port}\n`);
});

const stop = () => {
  for (const c of connections) c.terminate();
  wss.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
if (process.argv.includes("--exit-with-stdin")) {
  process.stdin.on("end", stop);
  process.stdin.resume();
}
