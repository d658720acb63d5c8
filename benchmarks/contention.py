"""contention: real SyncClients editing one document at a human pace; is every change kept?

N users, each the project's own ``SyncClient`` (``client_demo/src/lib``, bundled for Node at run
time), in one Node process (``node/contention_clients.mjs``), every frame delayed by a one-way
latency in both directions; each user makes one change every 0.3-1 s (seeded) for a while, then
every client is waited for until it is synced with nothing pending (bounded). Workloads:

- (a) ``append``: everyone pushes to one list;
- (b) ``gifts``: a gift list of 1,000 gifts: append a gift (25%), toggle the reservation of a
  random gift found by id (50%), remove a random gift found by id (25%: a splice in the middle);
- (c) ``field``: everyone writes the same field (true conflicts).

Rows: N = 5, 20, 50 at one-way latency 0 and 50 ms for each workload (SQLite store, the
default); (b) at N = 20, 50 ms, users spread over two server processes on one Redis; (a) at
N = 10, 50 ms on SQLite with the server SIGKILLed and restarted on the same port twice during
the activity. Per row: changes made, present at the end, superseded, dropped (and how many of
those the client reported through ``onError``), still pending at the settle timeout,
duplicated, conflict rejects per 100 changes, ``update()``-to-ack p50/p99, converged (every
client's final state equals ``GET /state``). The accounting is ``contention_accounting.py``'s.
Also the bytes of deleting the first gift of a 1,000- and a 10,000-gift list by one
SyncClient: uploaded by it, received by each subscriber.

    python -m benchmarks.contention [--quick]

``--quick``: N = 5 and 20 at 50 ms only (plus the Redis and crash rows), 5 s of activity per
row, 15 s settle timeout (about 2 minutes in all).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from . import report
from .contention_accounting import account
from .contention_clients import DOC, LABELS, WORKLOADS, initial_state, run_driver, users_opts
from .harness import Proc, cpu_seconds, our_server, restart_our_server, wait_for_quiet
from .scaleout import redis_server, servers

# users per row, one-way latencies (ms), seconds of activity per row, settle timeout (s), and
# how long to wait at most for a quiet machine before each row
FULL: dict[str, Any] = {"users": (5, 20, 50), "latencies": (0, 50), "activity_s": 15.0,
                        "settle_s": 30.0, "quiet_s": 5.0}
QUICK: dict[str, Any] = {"users": (5, 20), "latencies": (50,), "activity_s": 5.0,
                         "settle_s": 15.0, "quiet_s": 2.0}
BYTES_GIFTS = (1_000, 10_000)
BYTES_SUBSCRIBERS = 3

# the targets
TARGET_N, TARGET_LATENCY = 50, 50
TARGET_GIFTS_CONFLICTS = 2.0  # per 100 changes, (b) at N = 50, 50 ms
TARGET_DELETE_BYTES = 200  # deleting the first of 10,000 gifts: uploaded, and per subscriber


@dataclass(frozen=True)
class Row:
    workload: str
    users: int
    latency_ms: int
    setup: str = "sqlite"  # "sqlite", "redis-2" (two processes on Redis), "sqlite-crash"

    @property
    def label(self) -> str:
        return {"sqlite": "SQLite", "redis-2": "2 processes, Redis",
                "sqlite-crash": "SQLite, 2 SIGKILLs"}[self.setup]


def rows(quick: bool) -> list[Row]:
    plan = QUICK if quick else FULL
    out = [Row(w, n, lat) for w in WORKLOADS for lat in plan["latencies"] for n in plan["users"]]
    return [*out, Row("gifts", 20, 50, "redis-2"), Row("append", 10, 50, "sqlite-crash")]


@contextlib.contextmanager
def _servers(row: Row, tmp: Path, state: Path) -> Iterator[list[Proc]]:
    args = ["--initial-state", str(state)]
    name = f"contention-{row.workload}-{row.users}-{row.latency_ms}-{row.setup}"
    if row.setup == "redis-2":
        with redis_server(Path(tempfile.mkdtemp(dir=tmp))) as url, \
                servers(url, 2, name, *args) as group:
            yield group
    else:
        db = tmp / f"{name}.db"
        with our_server(name, ["--store", f"sqlite:///{db}", *args]) as proc:
            yield [proc]


class _Watch:
    """``on_event`` of a row: the servers' CPU while the users are active, and for the crash
    row two SIGKILLs, at 1/3 and 2/3 of the activity, each followed by a restart on the same
    port (in a thread, so that the driver's output keeps being read)."""

    def __init__(self, group: list[Proc], activity_s: float, crash: bool) -> None:
        self.group = group
        self.activity_s = activity_s
        self.crash = crash
        self.crashes: list[dict[str, float]] = []
        self.cpu: list[float] = []
        self.t0 = 0.0
        self.cpu_server: float | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] == "ready":
            self.t0 = time.monotonic()
            if self.crash:
                threading.Thread(target=self._crash_twice, daemon=True).start()
            else:
                self.cpu = [cpu_seconds(p.pid) for p in self.group]
        elif event["event"] == "idle" and self.cpu:
            used = sum(cpu_seconds(p.pid) - c for p, c in zip(self.group, self.cpu, strict=True))
            self.cpu_server = used / (time.monotonic() - self.t0)

    def _crash_twice(self) -> None:
        proc = self.group[0]
        for k in (1, 2):
            time.sleep(max(0.0, self.t0 + k * self.activity_s / 3 - time.monotonic()))
            t = time.monotonic()
            proc.kill()
            restart_our_server(proc)
            self.crashes.append({"at_s": round(t - self.t0, 2),
                                 "down_s": round(time.monotonic() - t, 2)})


def run_row(row: Row, activity_s: float, settle_s: float, tmp: Path, quiet_s: float = 5.0
            ) -> dict[str, Any]:
    initial = initial_state(row.workload)
    state = tmp / f"initial-{row.workload}.json"
    state.write_bytes(orjson.dumps(initial))
    with _servers(row, tmp, state) as group:
        background = wait_for_quiet(timeout=quiet_s)
        watch = _Watch(group, activity_s, crash=row.setup == "sqlite-crash")
        result = run_driver(users_opts([p.ws for p in group], row.workload, row.users,
                                       row.latency_ms, activity_s, settle_s),
                            watch, timeout=120 + activity_s + settle_s)
        finals = [httpx.get(f"{p.url}/docs/{DOC}/state", timeout=30).json() for p in group]
    counts = account(row.workload, initial, finals, result)
    load = result["load"]
    out = {**asdict(row), "setup_label": row.label, **counts,
           "activity_s": result["activityS"], "settle_s": result["settleS"],
           "cpu_server": watch.cpu_server, "cpu_clients": load["cpuCores"],
           "clients_loop_delay_p99_ms": load["loopDelayP99Ms"],
           "clients_loop_delay_max_ms": load["loopDelayMaxMs"],
           "background_cores": background, "crashes": watch.crashes}
    print(_row_line(out), flush=True)
    return out


def run_bytes(gifts: int, tmp: Path) -> dict[str, Any]:
    """One writer deletes the first gift; what it uploads and what each subscriber receives."""
    state = tmp / f"initial-bytes-{gifts}.json"
    state.write_bytes(orjson.dumps(initial_state("gifts", gifts)))
    db = tmp / f"bytes-{gifts}.db"
    with our_server(f"contention-bytes-{gifts}",
                    ["--store", f"sqlite:///{db}", "--initial-state", str(state)]) as proc:
        result = run_driver({"mode": "bytes", "urls": [proc.ws], "doc": DOC, "latencyMs": 0,
                             "subscribers": BYTES_SUBSCRIBERS, "timeoutS": 10}, timeout=180)
    received = [s["bytesDown"] for s in result["subscribers"]]
    out = {"gifts": gifts, "delivered": result["delivered"],
           "uploaded": result["writer"]["bytesUp"], "frames_up": result["writer"]["framesUp"],
           "writer_received": result["writer"]["bytesDown"],
           "received_max": max(received), "received": received,
           "writer_closes": result["writer"]["closes"],
           "writer_errors": [e["code"] for e in result["writer"]["errors"]]}
    print(f"delete the first of {gifts:,} gifts: uploaded {out['uploaded']:,} B, "
          f"received per subscriber {received}, delivered {out['delivered']}, "
          f"writer closed {out['writer_closes']}", flush=True)
    return out


def targets(results: list[dict[str, Any]], deletes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, measured."""
    out: list[dict[str, Any]] = []
    bad = [r for r in results if r["dropped"] or r["duplicated"] or not r["converged"]]
    out.append({
        "target": "0 dropped, 0 duplicated, every client converged, in every row",
        "measured": f"{len(results) - len(bad)} of {len(results)} rows "
                    f"({sum(r['dropped'] for r in results)} dropped, "
                    f"{sum(r['duplicated'] for r in results)} duplicated in all)",
        "how_far": "met" if not bad else f"missed in {len(bad)} rows",
    })
    for workload, limit in (("append", 0.0), ("gifts", TARGET_GIFTS_CONFLICTS)):
        row = next((r for r in results if r["workload"] == workload and r["setup"] == "sqlite"
                    and r["users"] == TARGET_N and r["latency_ms"] == TARGET_LATENCY), None)
        want = "no conflicts" if limit == 0 else f"at most {limit:g} conflicts per 100 changes"
        out.append({
            "target": f"{LABELS[workload]}, N = {TARGET_N}, {TARGET_LATENCY} ms: {want}",
            "measured": None if row is None else f"{row['conflicts_per_100']:.2f} per 100",
            "how_far": "not measured (--quick)" if row is None
            else "met" if row["conflicts_per_100"] <= limit else "missed",
        })
    big = next((d for d in deletes if d["gifts"] == max(BYTES_GIFTS)), None)
    if big is not None:
        ok = (big["delivered"] and big["uploaded"] < TARGET_DELETE_BYTES
              and big["received_max"] < TARGET_DELETE_BYTES)
        out.append({
            "target": f"delete the first of {big['gifts']:,} gifts: under "
                      f"{TARGET_DELETE_BYTES} B uploaded and received per subscriber",
            "measured": f"{big['uploaded']:,} B up, {big['received_max']:,} B per subscriber"
                        + ("" if big["delivered"] else f" (not delivered: closed "
                                                        f"{big['writer_closes']})"),
            "how_far": "met" if ok else "missed",
        })
    return out


def _row_line(r: dict[str, Any]) -> str:
    return (f"{LABELS[r['workload']]}, {r['setup_label']}, N={r['users']}, {r['latency_ms']} ms: "
            f"made {r['made']}, present {r['present']}, superseded {r['superseded']}, "
            f"dropped {r['dropped']} (reported {r['reported']}), pending {r['pending']}, "
            f"duplicated {r['duplicated']}, "
            f"conflicts/100 {r['conflicts_per_100']:.1f}, ack p50/p99 "
            f"{report.fmt(r['ack_p50_ms'])}/{report.fmt(r['ack_p99_ms'])} ms, "
            f"converged {r['converged']}, anomalies {r['anomalies']}; CPU server "
            f"{report.fmt(r['cpu_server'], 2)}, clients {r['cpu_clients']:.2f}, clients' loop "
            f"delay p99 {report.fmt(r['clients_loop_delay_p99_ms'])} ms")


def tables(results: list[dict[str, Any]], deletes: list[dict[str, Any]]) -> str:
    main = report.table(
        ["workload", "setup", "users", "one-way ms", "made", "present", "superseded",
         "dropped (reported)", "pending at timeout", "duplicated", "conflicts /100",
         "ack p50 / p99 ms", "converged",
         "CPU server / clients", "clients' loop delay p99 ms"],
        [[LABELS[r["workload"]], r["setup_label"], r["users"], r["latency_ms"], r["made"],
          r["present"], r["superseded"], f"{r['dropped']} ({r['reported']})", r["pending"],
          r["duplicated"],
          f"{r['conflicts_per_100']:.1f}",
          f"{report.fmt(r['ack_p50_ms'])} / {report.fmt(r['ack_p99_ms'])}",
          "yes" if r["converged"] else "NO",
          f"{report.fmt(r['cpu_server'], 2)} / {r['cpu_clients']:.2f}",
          report.fmt(r["clients_loop_delay_p99_ms"])] for r in results])
    sizes = report.table(
        ["gifts", "uploaded by the writer", "received per subscriber (max)", "delivered",
         "writer's socket closed"],
        [[d["gifts"], f"{d['uploaded']:,} B ({d['frames_up']} frames)",
          f"{d['received_max']:,} B", "yes" if d["delivered"] else "no",
          ", ".join(map(str, d["writer_closes"])) or "-"] for d in deletes])
    goals = report.table(["target", "measured", "status"],
                         [[t["target"], t["measured"] or "-", t["how_far"]]
                          for t in targets(results, deletes)])
    errors = [f"- {LABELS[r['workload']]}, {r['setup_label']}, N={r['users']}, "
              f"{r['latency_ms']} ms: errors {r['errors']}; anomalies: {r['problems'][:3]}"
              for r in results if r["errors"] or r["anomalies"]]
    return "\n".join(["### rows", "", main, "", "### deleting the first gift", "", sizes, "",
                      "### targets", "", goals, *(["", "### errors and anomalies", "", *errors]
                                                   if errors else [])])


def plot(results: list[dict[str, Any]], path: Path, machine: dict[str, Any]) -> None:
    fig, axes = report.new_figure(3, "Real SyncClients under contention", width=6.5)
    labels = [f"{r['workload'][0]} N{r['users']} {r['latency_ms']}ms"
              + {"sqlite": "", "redis-2": " redis2", "sqlite-crash": " crash"}[r["setup"]]
              for r in results]
    colors = {"append": "#4c72b0", "gifts": "#55a868", "field": "#c44e52"}
    series = (
        ("dropped per 100 changes", [100 * r["dropped"] / max(r["made"], 1) for r in results]),
        ("conflict rejects per 100 changes", [r["conflicts_per_100"] for r in results]),
        ("update()-to-ack p99 (ms)", [r["ack_p99_ms"] or 0 for r in results]),
    )
    for ax, (title, values) in zip(axes, series, strict=True):
        ax.bar(range(len(values)), values, color=[colors[r["workload"]] for r in results])
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels(labels, rotation=90, fontsize=6)
        ax.set_title(title, fontsize=9)
    report.save_figure(fig, path, report.machine_line(machine)
                       + "; blue (a) append, green (b) gift list, red (c) one field")


def run(quick: bool = False) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    out_dir = report.results_dir(quick)
    machine = report.machine()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        results = [run_row(row, plan["activity_s"], plan["settle_s"], tmp, plan["quiet_s"])
                   for row in rows(quick)]
        deletes = [run_bytes(gifts, tmp) for gifts in BYTES_GIFTS]
    text = tables(results, deletes)
    print(text)
    data = {"machine": machine, "settings": {**plan, "pace_s": [0.3, 1.0],
                                             "bytes_subscribers": BYTES_SUBSCRIBERS},
            "results": results, "deletes": deletes, "targets": targets(results, deletes),
            "seconds": time.monotonic() - t0}
    report.publish(out_dir, "contention", data, text, machine,
                   lambda p: plot(results, p, machine))
    print(f"contention took {data['seconds']:.0f} s")
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="N = 5, 20 at 50 ms, short rows")
    args = parser.parse_args(argv)
    run(quick=args.quick)


if __name__ == "__main__":
    main()
