// Node dependencies of the benchmarks (immer, ws), resolved from client_demo/node_modules
// relative to this file, so the repository can live anywhere.
import { createRequire } from "node:module";

const require = createRequire(new URL("../../client_demo/package.json", import.meta.url));

export const immer = require("immer");
export const ws = require("ws");
export const WebSocket = ws.WebSocket;
export const WebSocketServer = ws.WebSocketServer;

immer.enablePatches();
