"""Real SyncClients under contention: the documents and the run of ``node/contention_clients.mjs``.

The Node driver runs N simulated users, each the project's own ``SyncClient`` (bundled at run
time by ``node/sync_client_bundle.mjs``), every frame delayed by a one-way latency; see the
driver's header for what it does and prints. This module builds the documents the workloads
start from and runs the driver as a subprocess, handing its progress events to a callback (the
crash row kills the server from there) and returning its ``result``. Used by
``benchmarks/contention.py`` and by ``tests/test_contention.py``: one implementation.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .harness import NODE_DIR, ROOT, node

DRIVER = NODE_DIR / "contention_clients.mjs"
DOC = "contention"
WORKLOADS = ("append", "gifts", "field")
LABELS = {"append": "(a) append", "gifts": "(b) gift list", "field": "(c) one field"}
GIFTS = 1_000


def gift(serial: int) -> dict[str, Any]:
    """An initial gift, in the demo's shape (``reservedBy`` absent while free)."""
    return {
        "id": f"g{serial:05d}",
        "description": f"Gift no. {serial}",
        "image": f"https://picsum.photos/id/{serial % 1000}/200/300",
    }


def initial_state(workload: str, gifts: int = GIFTS) -> dict[str, Any]:
    """The document a workload starts from (given to the server with ``--initial-state``)."""
    if workload == "append":
        return {"items": []}
    if workload == "gifts":
        return {"gifts": [gift(k) for k in range(gifts)]}
    if workload == "field":
        return {"title": "start"}
    raise ValueError(f"unknown workload {workload!r}")


def run_driver(
    opts: dict[str, Any],
    on_event: Callable[[dict[str, Any]], None] | None = None,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Run the driver with ``opts`` (see its header) and return its ``result`` event;
    ``on_event(event)`` gets the events before it, on this thread, as they come: ``ready``
    (every client synced, the users start) and ``idle`` (the users stopped). Bounded by
    ``timeout``: the driver is killed after it."""
    stderr: list[str] = []
    result: dict[str, Any] | None = None
    with subprocess.Popen(
        [node(), str(DRIVER), json.dumps(opts)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        drain = threading.Thread(target=stderr.extend, args=(proc.stderr,), daemon=True)
        drain.start()
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            for line in proc.stdout:
                if not line.startswith("{"):
                    continue
                event = json.loads(line)
                if event.get("event") == "result":
                    result = event
                elif event.get("event") == "error":
                    tail = "".join(stderr)[-2000:]
                    raise RuntimeError(f"contention driver: {event['error']}\n{tail}")
                elif on_event is not None:
                    on_event(event)
            proc.wait(timeout=30)
        finally:
            killer.cancel()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            drain.join(timeout=5)
    if result is None:
        raise RuntimeError(
            f"contention driver gave no result (rc {proc.returncode}):\n{''.join(stderr)[-4000:]}"
        )
    return result


def users_opts(urls: Sequence[str], workload: str, users: int, latency_ms: float,
               activity_s: float, settle_s: float, seed: int = 1) -> dict[str, Any]:
    """The driver's options for N users making changes (``urls``: ws://HOST:PORT, round-robin)."""
    return {"mode": "users", "urls": list(urls), "doc": DOC, "workload": workload,
            "users": users, "latencyMs": latency_ms, "activityS": activity_s,
            "settleS": settle_s, "seed": seed}
