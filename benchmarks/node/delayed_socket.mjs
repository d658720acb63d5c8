// A `ws` WebSocket shaped like the browser's (what SyncClient's `createSocket` returns), with
// every event delayed by a one-way latency in both directions, order preserved, and metered.
//
//     const meter = newMeter()
//     new SyncClient({ url, createSocket: (url) => delayedSocket(url, 50, meter, hooks) })
//
// Client to server: `send(text)` and `close()` leave after `latencyMs` (a close after the frames
// sent before it). Server to client: `open`, every message and `close` reach the client
// `latencyMs` after the real socket saw them. With latency 0 everything passes through at once.
// `meter` counts frames and payload bytes each way (UTF-8 bytes of text frames) and the close
// codes seen; `hooks.sent(text)` runs when the client sends a frame, `hooks.received(text)`
// before the client gets one and `hooks.handled(text)` after its `onmessage` returned.
import { WebSocket } from "./deps.mjs";

export function newMeter() {
  return { bytesUp: 0, bytesDown: 0, framesUp: 0, framesDown: 0, connects: 0, closes: [] };
}

/** Runs callbacks `delayMs` after they were queued, in the order they were queued. */
class DelayLine {
  constructor(delayMs) {
    this.delayMs = delayMs;
    this.queue = [];
    this.timer = undefined;
  }

  push(fn) {
    if (this.delayMs <= 0) return fn();
    this.queue.push({ due: performance.now() + this.delayMs, fn });
    if (this.timer === undefined) this.arm();
  }

  arm() {
    const wait = Math.max(0, this.queue[0].due - performance.now());
    this.timer = setTimeout(() => this.run(), wait);
  }

  run() {
    this.timer = undefined;
    const now = performance.now();
    while (this.queue.length > 0 && this.queue[0].due <= now + 0.5) this.queue.shift().fn();
    if (this.queue.length > 0) this.arm();
  }

  clear() {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.queue = [];
  }
}

class DelayedSocket {
  constructor(url, latencyMs, meter, hooks) {
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.meter = meter;
    this.hooks = hooks;
    this.detached = false; // the client called close(): it gets no more events
    this.up = new DelayLine(latencyMs);
    this.down = new DelayLine(latencyMs);
    this.ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 2 ** 30 });
    this.ws.on("error", () => {}); // always followed by "close"
    this.ws.on("open", () => this.down.push(() => this.deliverOpen()));
    this.ws.on("message", (data, isBinary) => {
      const text = isBinary ? data : data.toString("utf8");
      const bytes = data.length;
      this.down.push(() => this.deliverMessage(text, bytes));
    });
    this.ws.on("close", (code, reason) => {
      if (!this.detached) this.meter.closes.push(code); // closed by the server or the network
      this.down.push(() => this.deliverClose(code, reason.toString("utf8")));
    });
  }

  deliverOpen() {
    if (this.detached) return;
    this.meter.connects += 1;
    this.onopen?.({ type: "open" });
  }

  deliverMessage(text, bytes) {
    if (this.detached) return;
    this.meter.framesDown += 1;
    this.meter.bytesDown += bytes;
    this.hooks?.received?.(text);
    this.onmessage?.({ type: "message", data: text });
    this.hooks?.handled?.(text);
  }

  deliverClose(code, reason) {
    if (this.detached) return;
    this.detached = true;
    this.onclose?.({ type: "close", code, reason, wasClean: code === 1000 });
  }

  send(text) {
    this.meter.framesUp += 1;
    this.meter.bytesUp += Buffer.byteLength(text, "utf8");
    this.hooks?.sent?.(text);
    // a frame still on its way when the connection dies is lost, as on a real network
    this.up.push(() => {
      if (this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
    });
  }

  close(code, reason) {
    this.detached = true;
    this.down.clear();
    this.up.push(() => {
      if (this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
      else this.ws.close(code, reason);
    });
  }
}

/** A browser-like socket over `ws` with `latencyMs` of one-way delay each way. */
export function delayedSocket(url, latencyMs, meter, hooks) {
  return new DelayedSocket(url, latencyMs, meter, hooks);
}
