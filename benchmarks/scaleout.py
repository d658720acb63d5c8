"""scaleout: one server process against two, on one Redis, on this machine.

The same document served by 1 or 2 ``python -m server`` processes sharing a Redis store
(``redis-server`` started here on a free port, AOF ``appendfsync always`` as recommended):

- fan-out: S subscribers spread round-robin over the processes, one writer on the first
  (``node/fanout_client.mjs``); patches and deliveries per second at saturation, p99 latency;
- apply: W writers spread over the processes, each pipelining small edits (the writers of
  ``apply_throughput``); acknowledged batches per second and p99 ack latency.

On a 2-core machine the load generator, Redis and the servers share two cores, so this shows
the cost of going through Redis (one process on Redis against one on the memory store) and
what a second process buys when cores are scarce; the results say which side was saturated.

    python -m benchmarks.scaleout [--quick] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson

from . import report, workloads
from .apply_throughput import _run, measure
from .harness import free_port, our_server, run_node, wait_for_quiet

DOC = "scaleout"
APPLY_DOC_BYTES = 100_000


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(tmp),
         "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.05)  # polling a process start-up
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def servers(store: str, count: int, name: str, *args: str) -> Iterator[list[Any]]:
    with ExitStack() as stack:
        yield [stack.enter_context(our_server(f"{name}-{i}", ["--store", store, *args]))
               for i in range(count)]


def fanout_once(store: str, procs: int, s: int, timing: dict[str, float]) -> dict[str, Any]:
    with servers(store, procs, f"scaleout-fanout-{procs}") as group:
        wait_for_quiet()
        out = run_node("fanout_client.mjs", {
            "target": "ours",
            "url": f"{group[0].ws}/ws/{DOC}",
            "urls": [f"{p.ws}/ws/{DOC}" for p in group],
            "writerUrl": f"{group[0].ws}/ws/{DOC}",
            "subscribers": s,
            "window": timing["window"],
            "warmupS": timing["warmup"],
            "saturateS": timing["seconds"],
            "pacedRate": 0,
            "pacedS": 0,
            "payloadBytes": 100,
            "serverPids": [p.pid for p in group],
        }, timeout=600)
    phase = next(p for p in out["phases"] if p["phase"] == "saturate")
    return {
        "patches_per_s": phase["patches_per_s"],
        "deliveries_per_s": phase["deliveries_per_s"],
        "p50_ms": phase["latency_ms"]["p50"],
        "p99_ms": phase["latency_ms"]["p99"],
        "cpu_server": phase["cpu_server"],
        "cpu_client": phase["cpu_client"],
        "cpu_other": phase["cpu_other"],
    }


def apply_once(store: str, procs: int, writers: int, timing: dict[str, float]) -> dict[str, Any]:
    """Small edits on a 100 KB document (``apply_throughput``'s workload)."""
    doc = workloads.sized_doc(APPLY_DOC_BYTES)
    with tempfile.NamedTemporaryFile(suffix=".json") as state:
        state.write(orjson.dumps(doc))
        state.flush()
        with servers(store, procs, f"scaleout-apply-{procs}", "--initial-state",
                     state.name) as group:
            wait_for_quiet()
            result = _run(measure([f"{p.ws}/ws/{DOC}" for p in group], len(doc["items"]),
                                  writers, int(timing["window"]), timing["warmup"],
                                  timing["seconds"], [p.pid for p in group]))
    return {"acked_per_s": result["acked_per_s"], "rejected": result["rejected"],
            "p99_ms": result["ack_latency_ms_p99"], "cpu_server": result["cpu_server"],
            "cpu_all": result["cpu_server"] + result["cpu_client"] + result["cpu_other"]}


def _median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float)]
    return {k: report.median([r[k] for r in runs if r.get(k) is not None]) for k in keys}


def run(quick: bool = False, runs: int = 3) -> dict[str, Any]:
    timing = {"window": 32, "warmup": 0.5 if quick else 1.0, "seconds": 1.5 if quick else 3.0}
    subscribers = (100,) if quick else (100, 1000)
    writer_counts = (10,) if quick else (10, 100)
    runs = 1 if quick else runs
    out_dir = report.results_dir(quick)
    machine = report.machine()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, procs in (("1 process, memory store", 0), ("1 process on Redis", 1),
                             ("2 processes on Redis", 2)):
            for kind, counts, once in (("fanout", subscribers, fanout_once),
                                       ("apply", writer_counts, apply_once)):
                for n in counts:
                    results = []
                    for _ in range(runs):
                        with contextlib.ExitStack() as stack:
                            store = _store(stack, tmp, procs)
                            results.append(once(store, max(procs, 1), n, timing))
                    rows.append({"kind": kind, "setup": label, "n": n, **_median_of(results)})
    text = print_table(rows, machine)
    report.publish(out_dir, "scaleout", {"machine": machine, "results": rows}, text, machine,
                   lambda p: plot(rows, p, machine))
    return {"machine": machine, "results": rows}


def _store(stack: contextlib.ExitStack[Any], tmp: str, procs: int) -> str:
    """The memory store for the one-process baseline, else a fresh Redis for this run."""
    if procs == 0:
        return "memory://"
    return stack.enter_context(redis_server(Path(tempfile.mkdtemp(dir=tmp))))


def print_table(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    fan = [r for r in rows if r["kind"] == "fanout"]
    app = [r for r in rows if r["kind"] == "apply"]
    text = [f"Machine: {report.machine_line(machine)}", "", "### fan-out (one writer)", "",
            report.table(
                ["setup", "subscribers", "patches/s", "deliveries/s", "p50 ms", "p99 ms",
                 "CPU servers / loadgen / other"],
                [[r["setup"], r["n"], report.fmt(r["patches_per_s"]),
                  report.fmt(r["deliveries_per_s"]), report.fmt(r["p50_ms"]),
                  report.fmt(r["p99_ms"]),
                  f"{r['cpu_server']:.2f} / {r['cpu_client']:.2f} / {r['cpu_other']:.2f}"]
                 for r in fan]),
            "", "### apply (writers spread over the processes)", "",
            report.table(
                ["setup", "writers", "acked batches/s", "p99 ack ms", "CPU servers / all"],
                [[r["setup"], r["n"], report.fmt(r["acked_per_s"]), report.fmt(r.get("p99_ms")),
                  f"{r['cpu_server']:.2f} / {r['cpu_all']:.2f}"] for r in app])]
    out = "\n".join(text)
    print(out)
    return out


def plot(rows: list[dict[str, Any]], path: Path, machine: dict[str, Any]) -> None:
    fig, axes = report.new_figure(2, "One process against two on Redis")
    for ax, kind, key, ylabel in ((axes[0], "fanout", "deliveries_per_s", "deliveries/s"),
                                  (axes[1], "apply", "acked_per_s", "acked batches/s")):
        chosen = [r for r in rows if r["kind"] == kind]
        ns = sorted({r["n"] for r in chosen})
        setups = list(dict.fromkeys(r["setup"] for r in chosen))
        width = 0.8 / len(setups)
        for j, setup in enumerate(setups):
            values = [next((r[key] for r in chosen if r["setup"] == setup and r["n"] == n), 0)
                      for n in ns]
            ax.bar([i + j * width for i in range(len(ns))], values, width, label=setup)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(ns))])
        ax.set_xticklabels([f"{n} {'subscribers' if kind == 'fanout' else 'writers'}"
                            for n in ns])
        ax.set_ylabel(ylabel)
        ax.set_title("fan-out" if kind == "fanout" else "apply")
        ax.legend(fontsize=7)
    report.save_figure(fig, path, report.machine_line(machine))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    run(quick=args.quick, runs=args.runs)


if __name__ == "__main__":
    main()
