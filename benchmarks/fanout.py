"""fanout: one document, S subscribers and one writer; patches delivered per second and latency.

Side by side in the same run, each on a fresh server per run:

- ``lesson``: the Node ``ws`` lesson relay (``relay/lesson_relay.mjs``), no authority;
- ``starlette``: the same relay in Python (``relay/starlette_relay.py`` under uvicorn), no
  authority: the cost of Python;
- ``ours``: our server with the memory store (the relays persist nothing either), and
  ``ours-sqlite`` with the durable default store: the cost of authority (and of durability);
- ``ours-deflate``: ``ours`` with subscribers that offer permessage-deflate, as browsers do (the
  server compresses each publication once for all of them);
- ``ours-uvicorn``: ``ours`` with ``--no-ws-prepared-frames`` (uvicorn writes every frame per
  subscriber, one sender task woken per subscriber per patch): the gain of prepared frames.

CPU per delivery is the server's CPU seconds over the deliveries of the phase.

Mode ``--idle 1000,5000``: S idle subscribers and a writer sending a small patch every 100 ms;
the time until every subscriber has a patch (p50/p99), the time to connect the S, and the
server's memory per connection (RSS after connecting less RSS before, over S).

The load generator (``node/fanout_client.mjs``) is one Node process holding the S subscribers and
the writer; every patch carries its send time. Phase ``saturate`` keeps a window of patches in
flight (throughput at saturation, and the latency at that load); phase ``paced`` sends at a
fixed rate below saturation (latency). The CPU use of the server and of the load generator is
reported for each phase (1.0 = one core busy): the side near 1.0 is the one saturated.

    python -m benchmarks.fanout [--quick] [--subscribers 10,100,1000] [--runs 3]
    python -m benchmarks.fanout --idle 1000,5000 [--targets lesson,ours,ours-deflate]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from . import report
from .harness import (
    QUIET_TIMEOUT,
    Proc,
    lesson_relay,
    our_server,
    run_node,
    starlette_relay,
    wait_for_quiet,
)

DOC = "fanout"
SUBSCRIBERS = (10, 100, 1000)
TARGET_S = 100
LABELS = {
    "lesson": "lesson relay (Node ws)",
    "starlette": "lesson relay (Starlette)",
    "ours": "ours (memory store)",
    "ours-sqlite": "ours (SQLite store)",
    "ours-deflate": "ours, clients offer deflate",
    "ours-uvicorn": "ours, uvicorn frames (before)",
}
IDLE_TARGETS = ("lesson", "ours", "ours-deflate")
IDLE_RATE = 10  # patches/s in the idle mode


def paced_rate(subscribers: int) -> int:
    """Offered patches/s in the paced phase: 2,000-20,000 deliveries/s, below saturation."""
    return max(10, min(200, 20_000 // subscribers))


def _servers(tmp: Path) -> dict[str, Callable[[str], AbstractContextManager[Proc]]]:
    counter = iter(range(1_000_000))

    def sqlite(name: str) -> AbstractContextManager[Proc]:
        db = tmp / f"fanout-{next(counter)}.db"
        return our_server(name, ["--store", f"sqlite:///{db}"])

    return {
        "lesson": lesson_relay,
        "starlette": starlette_relay,
        "ours": lambda name: our_server(name, ["--store", "memory://"]),
        "ours-sqlite": sqlite,
        "ours-deflate": lambda name: our_server(name, ["--store", "memory://"]),
        "ours-uvicorn": lambda name: our_server(
            name, ["--store", "memory://", "--no-ws-prepared-frames"]),
    }


def _urls(target: str, proc: Proc) -> tuple[str, str]:
    if target in ("lesson", "starlette"):
        return proc.ws + "/", proc.ws + "/"
    return f"{proc.ws}/ws/{DOC}", f"{proc.ws}/ws/{DOC}"


def one_run(
    target: str,
    server: Callable[[str], AbstractContextManager[Proc]],
    s: int,
    timing: dict[str, float],
    paced: int | None = None,
) -> dict[str, Any]:
    with server(f"fanout-{target}-{s}") as proc:
        background = wait_for_quiet()
        url, writer = _urls(target, proc)
        out = run_node(
            "fanout_client.mjs",
            {
                "target": "lesson" if target in ("lesson", "starlette") else "ours",
                "url": url,
                "writerUrl": writer,
                "subscribers": s,
                "window": timing["window"],
                "warmupS": timing["warmup"],
                "saturateS": timing["seconds"],
                "pacedRate": paced or paced_rate(s),
                "pacedS": timing.get("paced", timing["seconds"]),
                "payloadBytes": 100,
                "serverPid": proc.pid,
                "deflate": target == "ours-deflate",
            },
            timeout=600,
        )
        out["server_rss"] = proc.rss()
        out["background_before"] = background
    return out


def _median(values: list[float]) -> float:
    return report.median(values) if values else float("nan")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(runs), "undelivered": sum(r["undelivered"] for r in runs)}
    for name in ("saturate", "paced"):
        phases = [
            p
            for r in runs
            for p in r["phases"]
            if p["phase"] == name and p["latency_ms"]["samples"]
        ]
        if not phases:
            continue
        out[name] = {
            "cpu_us_per_delivery": _median(
                [1e6 * p["cpu_server"] / p["deliveries_per_s"] for p in phases
                 if p["cpu_server"] is not None and p["deliveries_per_s"]]),
            "complete_p50_ms": _median([p["complete_ms"]["p50"] for p in phases
                                              if p["complete_ms"]["samples"]]),
            "complete_p99_ms": _median([p["complete_ms"]["p99"] for p in phases
                                              if p["complete_ms"]["samples"]]),
            "patches_per_s": report.median([p["patches_per_s"] for p in phases]),
            "patches_per_s_runs": [p["patches_per_s"] for p in phases],
            "deliveries_per_s": report.median([p["deliveries_per_s"] for p in phases]),
            "p50_ms": report.median([p["latency_ms"]["p50"] for p in phases]),
            "p99_ms": report.median([p["latency_ms"]["p99"] for p in phases]),
            "max_ms": report.median([p["latency_ms"]["max"] for p in phases]),
            "cpu_server": report.median([p["cpu_server"] for p in phases]),
            "cpu_client": report.median([p["cpu_client"] for p in phases]),
            "cpu_other": report.median([p["cpu_other"] for p in phases]),
            "offered_patches_per_s": phases[0].get("offered_patches_per_s"),
        }
    out["server_rss"] = report.median([r["server_rss"] for r in runs])
    out["connect_s"] = report.median([r["connect_s"] for r in runs])
    per_conn = [(r["rss_connected"] - r["rss_before"]) / r["subscribers"] for r in runs
                if r.get("rss_connected") and r.get("rss_before")]
    out["rss_per_connection"] = report.median(per_conn) if per_conn else None
    return out


def assess(results: dict[int, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    s = TARGET_S if TARGET_S in results else max(results)
    row = results[s]
    out: list[dict[str, Any]] = []
    if "lesson" not in row:
        return out
    lesson = row["lesson"]
    for target in ("ours", "ours-sqlite"):
        if target not in row:
            continue
        ours = row[target]
        if "saturate" not in ours or "saturate" not in lesson:
            continue
        ratio = ours["saturate"]["patches_per_s"] / lesson["saturate"]["patches_per_s"]
        out.append(
            {
                "target": f"{LABELS[target]}, S={s}: patches/s >= the Node lesson relay's",
                "measured": ratio,
                "unit": "x the relay",
                "met": ratio >= 1.0,
                "how_far": "met" if ratio >= 1.0 else f"missed by {1 / ratio:.2f}x",
            }
        )
        for phase in ("saturate", "paced"):
            if phase not in ours or phase not in lesson:
                continue  # no latency samples in that phase (a run failed): nothing to judge
            q = ours[phase]["p99_ms"] / lesson[phase]["p99_ms"]
            out.append(
                {
                    "target": f"{LABELS[target]}, S={s}: p99 latency ({phase}) <= the relay's",
                    "measured": q,
                    "unit": "x the relay",
                    "met": q <= 1.0,
                    "how_far": "met" if q <= 1.0 else f"missed by {q:.2f}x",
                }
            )
    return out


def _cpus(p: dict[str, Any]) -> str:
    return f"{p['cpu_server']:.2f} / {p['cpu_client']:.2f} / {p['cpu_other']:.2f}"


def print_tables(
    results: dict[int, dict[str, dict[str, Any]]], verdicts: list[dict[str, Any]]
) -> str:
    rows = []
    for s, by_target in results.items():
        lesson = by_target.get("lesson", {}).get("saturate", {}).get("patches_per_s",
                                                                       float("nan"))
        for target, x in by_target.items():
            if "saturate" not in x or "paced" not in x:
                print(f"S={s} {target}: a phase has no samples: {x}")
                continue
            sat, paced = x["saturate"], x["paced"]
            rows.append(
                [
                    s,
                    LABELS[target],
                    sat["patches_per_s"],
                    sat["deliveries_per_s"],
                    sat["patches_per_s"] / lesson,
                    sat["p50_ms"],
                    sat["p99_ms"],
                    _cpus(sat),
                    report.saturated_side(sat["cpu_server"], sat["cpu_client"], sat["cpu_other"]),
                    sat["cpu_us_per_delivery"],
                    f"{paced['patches_per_s']:.0f}/{paced['offered_patches_per_s']}",
                    paced["p50_ms"],
                    paced["p99_ms"],
                    _cpus(paced),
                    paced["cpu_us_per_delivery"],
                ]
            )
    text = report.table(
        [
            "S",
            "target",
            "patches/s (saturated)",
            "deliveries/s",
            "x Node relay",
            "p50 ms",
            "p99 ms",
            "CPU server / loadgen / other",
            "saturated side",
            "server CPU us/delivery",
            "paced: delivered/offered",
            "paced p50 ms",
            "paced p99 ms",
            "paced CPU server / loadgen / other",
            "paced server CPU us/delivery",
        ],
        rows,
    )
    text += "\n\n### targets\n\n" + report.table(
        ["target", "measured", "status"],
        [[v["target"], f"{v['measured']:.2f} {v['unit']}", v["how_far"]] for v in verdicts],
    )
    print(text)
    return text


def plot(
    results: dict[int, dict[str, dict[str, Any]]], path: Path, machine: dict[str, Any]
) -> None:
    fig, axes = report.new_figure(3, "Fan-out: one writer, S subscribers", width=5.2)
    subs = list(results)
    targets = list(dict.fromkeys(t for r in results.values() for t in r))
    width = 0.8 / len(targets)
    for k, target in enumerate(targets):
        xs = [i + (k - (len(targets) - 1) / 2) * width for i in range(len(subs))]
        rows = [r if r and "saturate" in r and "paced" in r else None
                for r in (results[s].get(target) for s in subs)]
        axes[0].bar(
            xs,
            [r["saturate"]["patches_per_s"] if r else 0 for r in rows],
            width,
            label=LABELS[target],
        )
        axes[1].bar(
            xs, [r["saturate"]["p99_ms"] if r else 0 for r in rows], width, label=LABELS[target]
        )
        axes[2].bar(
            xs, [r["paced"]["p99_ms"] if r else 0 for r in rows], width, label=LABELS[target]
        )
    titles = (
        "patches/s delivered to all S (saturated)",
        "p99 latency at saturation (ms)",
        "p99 latency, paced (ms)",
    )
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xticks(range(len(subs)), [f"S={s}" for s in subs])
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    report.save_figure(fig, path, report.machine_line(machine))


def run(
    quick: bool = False,
    subscribers: tuple[int, ...] | None = None,
    runs: int | None = None,
    targets: tuple[str, ...] = tuple(LABELS),
) -> dict[str, Any]:
    subscribers = subscribers or ((10,) if quick else SUBSCRIBERS)
    runs = runs or (1 if quick else 3)
    timing = {"warmup": 0.5 if quick else 1.0, "seconds": 1.0 if quick else 3.0, "window": 32}
    if quick:
        QUIET_TIMEOUT.update(seconds=3.0, budget=15.0)
    machine = report.machine()
    print(f"fanout on {report.machine_line(machine)}\n{runs} runs, {timing}\n")
    results = _measure(subscribers, runs, targets, timing, "")
    verdicts = assess(results)
    out = report.results_dir(quick)
    text = print_tables(results, verdicts)
    data = {
        "benchmark": "fanout",
        "machine": machine,
        "runs": runs,
        "timing": timing,
        "paced_rates": {s: paced_rate(s) for s in subscribers},
        "results": {str(s): r for s, r in results.items()},
        "targets": verdicts,
    }
    report.publish(out, "fanout", data, text, machine, lambda p: plot(results, p, machine))
    return data


def _measure(subscribers: tuple[int, ...], runs: int, targets: tuple[str, ...],
             timing: dict[str, float], label: str, paced: int | None = None,
             ) -> dict[int, dict[str, dict[str, Any]]]:
    """Each target ``runs`` times per subscriber count, interleaved (so drift hits every target
    alike), summarized per target."""
    results: dict[int, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        servers = _servers(Path(tmp))
        for s in subscribers:
            samples: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
            for k in range(runs):
                for target in targets:
                    print(f"  {label}S={s} run {k + 1}/{runs} {target} ...", flush=True)
                    samples[target].append(one_run(target, servers[target], s, timing,
                                                   paced))
            results[s] = {t: summarize(v) for t, v in samples.items()}
    return results


def run_idle(subscribers: tuple[int, ...], runs: int, targets: tuple[str, ...],
             seconds: float = 5.0) -> dict[str, Any]:
    """Many idle subscribers, a small patch every 100 ms: time until all have it, connect
    time, memory per connection."""
    timing = {"warmup": 1.0, "seconds": 0.0, "paced": seconds, "window": 1}
    QUIET_TIMEOUT.update(seconds=3.0, budget=30.0)  # ratios within one run matter here
    machine = report.machine()
    print(f"fanout --idle on {report.machine_line(machine)}\n{runs} runs, {timing}\n")
    results = _measure(subscribers, runs, targets, timing, "idle ", paced=IDLE_RATE)
    rows = []
    for s, by_target in results.items():
        for target, x in by_target.items():
            paced = x["paced"]
            per_conn = x["rss_per_connection"]
            rows.append([s, LABELS[target], paced["complete_p50_ms"], paced["complete_p99_ms"],
                         paced["p99_ms"], x["connect_s"],
                         per_conn / 1024 if per_conn is not None else float("nan"),
                         paced["cpu_server"], paced["cpu_us_per_delivery"]])
    text = report.table(
        ["S", "target", "all have it p50 ms", "all have it p99 ms", "per-delivery p99 ms",
         "connect s", "server KiB/connection", "server CPU (cores)", "server CPU us/delivery"],
        rows,
    )
    print(text)
    data = {"benchmark": "fanout_idle", "machine": machine, "runs": runs, "timing": timing,
            "rate": IDLE_RATE, "results": {str(s): r for s, r in results.items()}}
    report.publish(report.results_dir(False), "fanout_idle", data, text, machine)
    return data


def _ints(text: str) -> Iterator[int]:
    return (int(x) for x in text.split(","))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fan-out throughput and latency vs the relays")
    parser.add_argument("--quick", action="store_true", help="S=10 only, one short run")
    parser.add_argument("--subscribers", help="comma-separated S values (default 10,100,1000)")
    parser.add_argument("--runs", type=int, help="runs per configuration (median; default 3)")
    parser.add_argument("--targets", help=f"comma-separated (default {','.join(LABELS)}; "
                        f"with --idle {','.join(IDLE_TARGETS)})")
    parser.add_argument("--idle", help="comma-separated S: the idle many-subscribers mode")
    parser.add_argument("--seconds", type=float, default=5.0, help="--idle: seconds measured")
    args = parser.parse_args(argv)
    subs = tuple(_ints(args.subscribers)) if args.subscribers else None
    if args.idle:
        targets = tuple(args.targets.split(",")) if args.targets else IDLE_TARGETS
        run_idle(tuple(_ints(args.idle)), args.runs or 1, targets, args.seconds)
        return
    targets = tuple(args.targets.split(",")) if args.targets else tuple(LABELS)
    run(args.quick, subs, args.runs, targets)


if __name__ == "__main__":
    main()
