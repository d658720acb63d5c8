"""presence: N clients on one document each moving a cursor at 60 Hz; what presence costs.

Three configurations, each on a fresh server (memory store, ``--presence-rate 0`` so that no
update is dropped: the point is what each one costs):

- ``every``: the server broadcasts every update at once (``--presence-tick 0``), clients send
  every move: what a relay does, the baseline;
- ``tick``: clients still send every move; the server sends the latest state of each changed
  connection once per 50 ms tick (the default);
- ``client``: what ships: the browser client sends at most every 80 ms (last value wins) and the
  server ticks every 50 ms.

Two measurements of each:

- ``model``: the server's presence path in process (``protocol.parse_frame`` of every update,
  the :class:`~server.presence.PresenceTable`, the per-connection frames of every tick) driven
  on simulated time: CPU seconds per second of traffic (1.0 = one core) and the bytes and
  messages each client is sent. CPU time, not wall time, so it holds on a busy machine; it leaves
  out the WebSocket writes (one per frame: see messages/client/s).
- ``live``: real servers and one Node process holding every client
  (``node/presence_client.mjs``): server CPU, bytes and frames received per client per second,
  and the age of the cursor positions received (send to receipt). Wall-clock bound: on a shared
  machine the "saturated" column says who had the cores.

    python -m benchmarks.presence [--quick] [--clients 100] [--hz 60] [--seconds 5]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson

from server.config import Limits
from server.presence import Entry, PresenceTable, PresenceUpdate
from server.protocol import parse_frame

from . import report
from .harness import our_server, run_node, wait_for_quiet

DOC = "presence"
CONFIGS: dict[str, dict[str, Any]] = {
    "every": {"label": "every update (no tick)", "tick": "0", "throttle": 0},
    "tick": {"label": "server tick 50 ms", "tick": "0.05", "throttle": 0},
    "client": {"label": "client 80 ms + tick 50 ms", "tick": "0.05", "throttle": 80},
}


def model(name: str, clients: int, hz: int, seconds: float) -> dict[str, Any]:
    """The server's presence path on simulated time: what it costs in CPU and bytes."""
    config = CONFIGS[name]
    tick = float(config["tick"])
    throttle = config["throttle"] / 1000
    limits = Limits()
    conns = [f"node.{i}" for i in range(clients)]
    table = PresenceTable()
    for conn in conns:
        table.put(Entry(conn, None, "{}", None))
    table.tick()
    steps = int(seconds * hz)
    # the clients' messages, made before the clock starts: the client's work is not counted
    script: list[list[tuple[int, str]]] = []
    last_sent = [-1e9] * clients
    for step in range(steps):
        now = step / hz
        batch = []
        for i in range(clients):
            if throttle <= 0 or now - last_sent[i] >= throttle - 1e-9:
                last_sent[i] = now
                state = {"x": step, "y": i, "t": round(now * 1000, 3)}
                batch.append((i, orjson.dumps({"type": "presence", "state": state}).decode()))
        script.append(batch)
    def send_tick(sent_bytes: int, sent_messages: int) -> tuple[int, int]:
        """One tick of the table: what each connection is sent, counted."""
        out = table.tick()
        for conn in conns:
            frame = out.frame_for(conn)
            if frame is not None:
                sent_bytes += len(frame)
                sent_messages += 1
        return sent_bytes, sent_messages

    sent_bytes = sent_messages = received = 0
    next_tick = tick
    started = time.process_time()
    for step, batch in enumerate(script):
        now = step / hz
        for i, text in batch:
            update = parse_frame(text, "immer", limits)
            assert isinstance(update, PresenceUpdate) and update.state_json is not None
            table.put(Entry(conns[i], None, update.state_json, update.version))
            received += 1
            if tick <= 0:  # every update at once
                sent_bytes, sent_messages = send_tick(sent_bytes, sent_messages)
        while tick > 0 and now >= next_tick:
            next_tick += tick
            sent_bytes, sent_messages = send_tick(sent_bytes, sent_messages)
    cpu = time.process_time() - started
    return {
        "config": name,
        "updates_in_per_s": received / seconds,
        "cpu_cores": cpu / seconds,
        "us_per_update_in": cpu / max(1, received) * 1e6,
        "bytes_per_client_per_s": sent_bytes / clients / seconds,
        "messages_per_client_per_s": sent_messages / clients / seconds,
    }


def one(name: str, clients: int, hz: int, seconds: float, warmup: float) -> dict[str, Any]:
    config = CONFIGS[name]
    background = wait_for_quiet()
    with our_server(f"presence-{name}", ["--store", "memory://"], presence_rate=0,
                    presence_tick=config["tick"], max_queue_messages=1_000_000,
                    max_queue_bytes=1 << 30) as proc:
        result = run_node("presence_client.mjs", {
            "url": f"{proc.ws}/ws/{DOC}", "clients": clients, "hz": hz,
            "throttleMs": config["throttle"], "warmupS": warmup, "seconds": seconds,
            "serverPid": proc.pid,
        })
    result["config"] = name
    result["background_before"] = background
    return result


def run(quick: bool = False, clients: int | None = None, hz: int = 60,
        seconds: float | None = None) -> dict[str, Any]:
    n = clients or (20 if quick else 100)
    duration = seconds or (2.0 if quick else 5.0)
    warmup = 1.0 if quick else 2.0
    machine = report.machine()
    models = [model(name, n, hz, duration) for name in CONFIGS]
    every = models[0]["bytes_per_client_per_s"]
    model_rows = [[
        CONFIGS[m["config"]]["label"], m["updates_in_per_s"], m["cpu_cores"],
        m["us_per_update_in"], m["bytes_per_client_per_s"] / 1024,
        m["bytes_per_client_per_s"] / every, m["messages_per_client_per_s"],
    ] for m in models]
    model_text = (
        "Model (in process, simulated time, CPU time):\n\n" + report.table(
            ["configuration", "updates in/s", "server CPU (cores)", "µs per update in",
             "KiB/client/s", "bytes vs every", "messages/client/s"], model_rows))
    print(model_text)
    results = []
    for name in CONFIGS:
        print(f"presence: {name}, {n} clients at {hz} Hz ...", flush=True)
        results.append(one(name, n, hz, duration, warmup))
    base = results[0]
    rows = []
    for r in results:
        rows.append([
            CONFIGS[r["config"]]["label"],
            r["connected"],
            r["sentPerClientPerS"],
            r["sentPerClientPerS"] * (n - 1),
            r["serverCpu"],
            r["bytesPerClientPerS"] / 1024,
            r["bytesPerClientPerS"] / base["bytesPerClientPerS"] if base["bytesPerClientPerS"]
            else None,
            r["framesPerClientPerS"],
            r["entriesPerClientPerS"],
            r["ageP50Ms"],
            r["ageP99Ms"],
            report.saturated_side(r["serverCpu"], r["loadgenCpu"], r["otherCpu"]),
        ])
    headers = ["configuration", "connected", "sent/client/s", "updates for each/s",
               "server CPU", "KiB/client/s",
               "bytes vs every", "frames/client/s", "entries/client/s", "age p50 ms",
               "age p99 ms", "saturated"]
    text = (f"{n} clients on one document, each moving a cursor at {hz} Hz, {duration:g} s "
            f"measured after {warmup:g} s of warm-up. *updates for each/s*: the updates the "
            f"others sent, what each client would receive if every one were passed on; "
            f"*entries/client/s*: the peer entries each client did receive (coalesced per "
            f"tick); *age*: from a cursor move to its receipt.\n\n" + model_text
            + "\n\nLive (real servers, one Node load generator, wall clock):\n\n"
            + report.table(headers, rows))
    print(text)
    data = {"machine": machine, "clients": n, "hz": hz, "seconds": duration, "model": models,
            "results": results}
    report.publish(report.results_dir(quick), "presence", data, text, machine)
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--hz", type=int, default=60)
    parser.add_argument("--seconds", type=float)
    args = parser.parse_args(argv)
    run(args.quick, args.clients, args.hz, args.seconds)


if __name__ == "__main__":
    main()
