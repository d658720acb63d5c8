"""apply_throughput: acknowledged batches per second on one document.

For document sizes of about 1 KB, 100 KB and 1 MB, with the memory store and with the SQLite
store (``synchronous=full``, the default: every acked batch is durable), W concurrent writers
(1, 10, 100: asyncio ``websockets`` clients on uvloop in this process, each pipelining up
to ``--window`` batches) send small edits (one or two ``replace`` operations) at the head and
count the acks.
Every writer is also a subscriber of the document, so it receives the other writers' batches:
with W writers the server sends W-1 patch messages per batch besides the ack.

Reference, in this process: the same batches applied with ``jsonpatch.apply_patch(doc, ops)``
(the default: a deep copy of the document per batch) and with ``in_place=True``.

    python -m benchmarks.apply_throughput [--quick] [--runs 3] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import uvloop
from matplotlib.ticker import NullFormatter
from websockets.asyncio.client import connect

from . import report, workloads
from .harness import QUIET_TIMEOUT, cpu_seconds, our_server, system_busy, wait_for_quiet

DOC = "apply"
SIZES = {"1 KB": 1_000, "100 KB": 100_000, "1 MB": 1_000_000}
WRITERS = (1, 10, 100)
TARGET = 10_000.0
ACK_RE = re.compile(
    rb'\{"type":"ack","id":(\d+),'
)  # acked batches per second on one 1 MB document with the SQLite store


class Run:
    """Counters shared by the writers of one measurement."""

    def __init__(self) -> None:
        self.measuring = False
        self.stopping = False
        self.acked = 0
        self.rejected = 0
        self.latencies: list[float] = []


async def writer(
    url: str, count: int, window: int, seed: int, run: Run, ready: asyncio.Event, go: asyncio.Event
) -> None:
    rng = random.Random(seed)
    sent_at: dict[int, float] = {}
    slots = asyncio.Semaphore(window)
    async with connect(url, max_size=None, compression=None, max_queue=None) as ws:
        while True:  # snapshot, then synced
            frame = orjson.loads(await ws.recv())
            if any(
                m.get("type") == "synced" for m in (frame if isinstance(frame, list) else [frame])
            ):
                break
        ready.set()
        await go.wait()

        def settle(ids: list[Any], now: float, rejected: int = 0) -> None:
            for msg_id in ids:
                t = sent_at.pop(msg_id)
                slots.release()
                if run.measuring:
                    run.acked += 1
                    run.latencies.append(now - t)
            for _ in range(rejected):
                slots.release()
            if run.measuring:
                run.rejected += rejected

        async def receive() -> None:
            while True:
                data = await ws.recv(decode=False)
                now = time.perf_counter()
                # Frames mostly carry the other writers' patches (up to 1 MB coalesced): acks
                # are found without parsing them when the server spells them as expected.
                acks = ACK_RE.findall(data)
                if len(acks) == data.count(b'"ack"') and b'"reject"' not in data:
                    settle([int(x) for x in acks], now)
                else:
                    frame = orjson.loads(data)
                    msgs = frame if isinstance(frame, list) else [frame]
                    done = [m["id"] for m in msgs if m.get("type") == "ack"]
                    rejected = [m["id"] for m in msgs if m.get("type") == "reject"]
                    for msg_id in rejected:
                        sent_at.pop(msg_id)
                    settle(done, now, len(rejected))
                if run.stopping and not sent_at:
                    return

        receiver = asyncio.create_task(receive())
        serial = 0
        while not run.stopping:
            await slots.acquire()
            if run.stopping:
                break
            serial += 1
            sent_at[serial] = time.perf_counter()
            patches = workloads.small_edit(count, serial, rng)
            await ws.send(
                orjson.dumps({"type": "patch", "id": serial, "patches": patches}).decode()
            )
        if sent_at:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(receiver, 30)
        receiver.cancel()


async def measure(
    url: str | list[str], count: int, writers: int, window: int, warmup: float, seconds: float,
    server_pid: int | list[int],
) -> dict[str, Any]:
    """W writers on ``url`` (or spread round-robin over several servers' URLs); the server CPU
    is that of ``server_pid`` (or the sum over several)."""
    urls = [url] if isinstance(url, str) else url
    pids = [server_pid] if isinstance(server_pid, int) else server_pid
    run = Run()
    go = asyncio.Event()
    readies = [asyncio.Event() for _ in range(writers)]
    tasks = [
        asyncio.create_task(
            writer(urls[k % len(urls)], count, window, 1000 + k, run, readies[k], go)
        )
        for k in range(writers)
    ]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
    go.set()
    await asyncio.sleep(warmup)
    cpu_client0, t0 = time.process_time(), time.perf_counter()
    cpu_server0 = sum(cpu_seconds(p) for p in pids)
    sys0 = system_busy()[0]
    run.measuring = True
    await asyncio.sleep(seconds)
    run.measuring = False
    elapsed = time.perf_counter() - t0
    cpu_client = (time.process_time() - cpu_client0) / elapsed
    cpu_server = (sum(cpu_seconds(p) for p in pids) - cpu_server0) / elapsed
    cpu_all = (system_busy()[0] - sys0) / elapsed
    run.stopping = True
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    lat = sorted(run.latencies)
    return {
        "acked_per_s": run.acked / elapsed,
        "rejected": run.rejected,
        "ack_latency_ms_p50": 1000 * lat[len(lat) // 2] if lat else None,
        "ack_latency_ms_p99": 1000 * lat[int(len(lat) * 0.99)] if lat else None,
        "cpu_client": cpu_client,
        "cpu_server": cpu_server,
        "cpu_other": max(0.0, cpu_all - cpu_client - cpu_server),
    }


def _run(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run the writers on uvloop (as the server does): a lighter load generator."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def jsonpatch_reference(size: int, seconds: float, in_place: bool) -> float:
    doc: Any = workloads.sized_doc(size)
    count = len(doc["items"])
    rng = random.Random(7)
    batches = []
    for serial in range(1, 2001):
        ops = workloads.small_edit(count, serial, rng)
        batches.append(
            [
                {
                    "op": o["op"],
                    "path": "/" + "/".join(str(s) for s in o["path"]),
                    "value": o["value"],
                }
                for o in ops
            ]
        )
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        doc = jsonpatch.apply_patch(doc, batches[n % len(batches)], in_place=in_place)
        n += 1
    return n / (time.perf_counter() - t0)


def run(
    quick: bool = False, runs: int | None = None, seconds: float | None = None, window: int = 16
) -> dict[str, Any]:
    sizes = {k: v for k, v in SIZES.items() if not quick or k in ("1 KB", "1 MB")}
    writer_counts = (1, 10) if quick else WRITERS
    runs = runs or (1 if quick else 3)
    seconds = seconds or (1.0 if quick else 3.0)
    warmup = 0.5 if quick else 1.0
    if quick:
        QUIET_TIMEOUT.update(seconds=3.0, budget=15.0)
    machine = report.machine()
    print(
        f"apply_throughput on {report.machine_line(machine)}\n"
        f"{runs} runs of {seconds:g} s (after {warmup:g} s warm-up), window {window}\n"
    )
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp:
        for size_name, size in sizes.items():
            doc = workloads.sized_doc(size)
            count = len(doc["items"])
            state_file = Path(tmp) / f"doc-{size}.json"
            state_file.write_bytes(orjson.dumps(doc))
            for store in ("memory", "sqlite"):
                url = "memory://" if store == "memory" else f"sqlite:///{tmp}/{store}-{size}.db"
                args = ["--store", url, "--initial-state", str(state_file)]
                print(f"  {size_name} {store} ...", flush=True)
                samples: dict[int, list[dict[str, Any]]] = {w: [] for w in writer_counts}
                with our_server(f"apply-{store}-{size}", args) as server:
                    ws_url = f"{server.ws}/ws/{DOC}"
                    for _ in range(runs):
                        for w in writer_counts:
                            wait_for_quiet()
                            samples[w].append(
                                _run(measure(ws_url, count, w, window, warmup, seconds, server.pid))
                            )
                    rss = server.rss()
                for w in writer_counts:
                    s = samples[w]
                    results.append(
                        {
                            "size": size_name,
                            "doc_bytes": len(orjson.dumps(doc)),
                            "store": store,
                            "writers": w,
                            "acked_per_s": report.median([x["acked_per_s"] for x in s]),
                            "acked_per_s_runs": [x["acked_per_s"] for x in s],
                            "ack_latency_ms_p50": report.median(
                                [x["ack_latency_ms_p50"] for x in s]
                            ),
                            "ack_latency_ms_p99": report.median(
                                [x["ack_latency_ms_p99"] for x in s]
                            ),
                            "cpu_server": report.median([x["cpu_server"] for x in s]),
                            "cpu_client": report.median([x["cpu_client"] for x in s]),
                            "cpu_other": report.median([x["cpu_other"] for x in s]),
                            "rejected": sum(x["rejected"] for x in s),
                            "server_rss": rss,
                        }
                    )
            for in_place in (False, True):
                wait_for_quiet()
                rates = [
                    jsonpatch_reference(size, min(seconds, 2.0), in_place) for _ in range(runs)
                ]
                results.append(
                    {
                        "size": size_name,
                        "doc_bytes": len(orjson.dumps(doc)),
                        "store": "jsonpatch in-process"
                        + (" (in_place)" if in_place else " (copy)"),
                        "writers": None,
                        "acked_per_s": report.median(rates),
                        "acked_per_s_runs": rates,
                    }
                )
    verdict = assess(results)
    out = report.results_dir(quick)
    text = print_table(results, verdict)
    data = {
        "benchmark": "apply_throughput",
        "machine": machine,
        "runs": runs,
        "seconds": seconds,
        "window": window,
        "results": results,
        "targets": [verdict],
    }
    report.publish(out, "apply_throughput", data, text, machine,
                   lambda p: plot(results, p, machine))
    return data


def assess(results: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [r for r in results if r["size"] == "1 MB" and r["store"] == "sqlite"]
    if not rows:
        return {"target": "1 MB, SQLite >= 10,000 acked batches/s", "how_far": "not measured"}
    best = max(rows, key=lambda r: r["acked_per_s"])
    per = {r["writers"]: r["acked_per_s"] for r in rows}
    met = best["acked_per_s"] >= TARGET
    return {
        "target": f"1 MB document, SQLite store: >= {TARGET:,.0f} acked batches/s",
        "measured": best["acked_per_s"],
        "best_writers": best["writers"],
        "by_writers": per,
        "met": met,
        "how_far": "met" if met else f"missed by {TARGET / best['acked_per_s']:.2f}x",
    }


def print_table(results: list[dict[str, Any]], verdict: dict[str, Any]) -> str:
    rows = []
    for r in results:
        rows.append(
            [
                r["size"],
                r["store"],
                r["writers"] if r["writers"] is not None else "-",
                r["acked_per_s"],
                r.get("ack_latency_ms_p50"),
                r.get("ack_latency_ms_p99"),
                r.get("cpu_server"),
                r.get("cpu_client"),
                r.get("cpu_other"),
                report.saturated_side(r["cpu_server"], r["cpu_client"], r["cpu_other"])
                if "cpu_server" in r
                else "-",
                r.get("rejected"),
            ]
        )
    text = report.table(
        [
            "doc",
            "store",
            "writers",
            "acked batches/s (median)",
            "ack p50 ms",
            "ack p99 ms",
            "server CPU",
            "client CPU",
            "other CPU",
            "saturated side",
            "rejected",
        ],
        rows,
    )
    text += (
        f"\n\ntarget: {verdict['target']}: measured "
        f"{report.fmt(verdict.get('measured'))} (best of the writer counts), "
        f"{verdict['how_far']}"
    )
    print(text)
    return text


def plot(results: list[dict[str, Any]], path: Path, machine: dict[str, Any]) -> None:
    sizes = list(dict.fromkeys(r["size"] for r in results))
    fig, axes = report.new_figure(len(sizes), "Acked batches per second on one document", width=5.0)
    for ax, size in zip(axes, sizes, strict=True):
        rows = [r for r in results if r["size"] == size]
        labels, values, colors = [], [], []
        for r in rows:
            if r["writers"] is None:
                labels.append(r["store"].replace("jsonpatch in-process", "jsonpatch"))
                colors.append("#999999")
            else:
                labels.append(f"{r['store']}, {r['writers']}w")
                colors.append("#1f77b4" if r["store"] == "memory" else "#ff7f0e")
            values.append(r["acked_per_s"])
        ax.barh(labels, values, color=colors)
        ax.set_xscale("log")
        ax.set_xlim(10, 3e5)  # one scale for every panel
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.invert_yaxis()
        if size == "1 MB":
            ax.axvline(TARGET, color="red", ls=":", label="target (SQLite)")
            ax.legend(fontsize=7)
        ax.set_title(f"{size} document", fontsize=10)
        ax.set_xlabel("batches / s (log)")
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(True, axis="x", which="both", alpha=0.3)
    report.save_figure(fig, path, report.machine_line(machine))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="acked batches per second on one document")
    parser.add_argument("--quick", action="store_true", help="1 KB and 1 MB, 1 and 10 writers")
    parser.add_argument("--runs", type=int, help="runs per configuration (median; default 3)")
    parser.add_argument("--seconds", type=float, help="measured seconds per run (default 3)")
    parser.add_argument("--window", type=int, default=16, help="batches in flight per writer")
    args = parser.parse_args(argv)
    run(args.quick, args.runs, args.seconds, args.window)


if __name__ == "__main__":
    main()
