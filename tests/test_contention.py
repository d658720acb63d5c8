"""Concurrent edits by real SyncClients never lose a change (issue 10).

Eight users, each the project's own ``SyncClient`` bundled for Node, every frame delayed by
30 ms each way, edit one document at a human pace for 8 s against a real server; then every
client must be synced with nothing pending. The run and its accounting are the contention
benchmark's (``benchmarks/contention_clients.py``, ``benchmarks/contention_accounting.py``: what
present, superseded and dropped mean is documented there). Asserted: every change is present or
legitimately superseded (none dropped, none duplicated), nothing in the document that no change
explains, every client's state equals ``GET /state``; and concurrent appends never conflict.
The accounting itself is checked on made-up runs at the end (no Node, no server).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.contention_accounting import account
from benchmarks.contention_clients import DOC, initial_state, run_driver, users_opts

from .conftest import ServerFactory
from .oracle.nodejs import node_executable

USERS = 8
LATENCY_MS = 30
ACTIVITY_S = 8.0
SETTLE_S = 30.0


def _summary(row: dict[str, Any]) -> str:
    keys = ("made", "present", "superseded", "dropped", "reported", "pending", "duplicated",
            "conflicts",
            "by_kind", "errors", "problems", "diverged_clients", "unsettled_clients")
    return json.dumps({k: row[k] for k in keys})


@pytest.mark.node
@pytest.mark.parametrize("workload", ["append", "gifts"])
def test_no_change_is_lost_under_contention(
    workload: str, server_factory: ServerFactory, tmp_path: Path
) -> None:
    node_executable()  # fails with what to install when Node.js or the npm packages are missing
    initial = initial_state(workload)
    state = tmp_path / "initial.json"
    state.write_text(json.dumps(initial))
    server = server_factory("--initial-state", str(state))
    result = run_driver(
        users_opts([server.ws_url("")], workload, USERS, LATENCY_MS, ACTIVITY_S, SETTLE_S),
        timeout=120 + ACTIVITY_S + SETTLE_S,
    )
    final = httpx.get(f"{server.url}/docs/{DOC}/state", timeout=30).json()
    row = account(workload, initial, [final], result)
    assert row["made"] >= USERS * ACTIVITY_S / 2, _summary(row)
    assert row["anomalies"] == 0, _summary(row)
    assert row["dropped"] == 0, _summary(row)
    assert row["pending"] == 0, _summary(row)
    assert row["duplicated"] == 0, _summary(row)
    assert row["converged"], _summary(row)
    if workload == "append":
        assert row["conflicts"] == 0, _summary(row)


# -- the accounting itself, on made-up runs (no Node, no server) --------------------------------


def _run(*changes: dict[str, Any]) -> dict[str, Any]:
    """A driver result with one client per user that made one of ``changes`` (their state
    hashes are not the document's: not converged)."""
    users = sorted({c["user"] for c in changes})
    return {
        "settled": True, "serverVersion": 9,
        "clients": [{"user": u, "status": "synced", "version": 9, "conflictRejects": 0,
                     "rejects": {}, "errors": [],
                     "stateHash": "", "changes": [c for c in changes if c["user"] == u]}
                    for u in users],
    }


def _change(user: int, tag: str, kind: str, target: Any = None, *, version: int | None = None,
            outcome: str = "acked", effect: str | None = None) -> dict[str, Any]:
    return {"user": user, "tag": tag, "kind": kind, "target": target, "effect": effect or kind,
            "outcome": outcome, "version": version, "ms": 1.0 if version else None}


def test_accounting_of_appends() -> None:
    final = {"items": [{"id": "u0-c1"}, {"id": "u1-c1"}, {"id": "u1-c1"}]}
    run = _run(_change(0, "u0-c1", "append", version=1), _change(1, "u1-c1", "append", version=2),
               _change(0, "u0-c2", "append", version=3))
    row = account("append", {"items": []}, [final], run)
    assert (row["present"], row["dropped"], row["duplicated"], row["lost_silently"]) == (2, 1, 1, 1)
    assert not row["converged"]  # the client hashes are not the document's


def test_accounting_of_the_gift_list() -> None:
    initial = {"gifts": [{"id": "a"}, {"id": "b"}, {"id": "c"}]}
    final = {"gifts": [{"id": "b", "reservedBy": 1}, {"id": "c"}, {"id": "u1-c1"}]}
    changes = [
        _change(0, "u0-c1", "remove", "a", version=1),  # present
        _change(1, "u1-c2", "remove", "a", outcome="noop"),  # superseded: a is gone
        _change(0, "u0-c2", "toggle", "b", version=2, effect="reserve"),  # present: last, user 1
        _change(1, "u1-c3", "toggle", "c", version=3, effect="reserve"),  # superseded by c4
        _change(1, "u1-c4", "toggle", "c", version=4, effect="release"),  # present
        _change(1, "u1-c1", "append", "u1-c1", version=5),  # present
        _change(0, "u0-c3", "append", "u0-c3", version=6),  # dropped: absent, never removed
        _change(1, "u1-c5", "toggle", "a", outcome="noop"),  # superseded: a was removed
        _change(0, "u0-c4", "remove", "c", outcome="reported"),  # dropped: c is still there
    ]
    row = account("gifts", initial, [final], _run(*changes))
    assert (row["present"], row["superseded"], row["dropped"]) == (4, 3, 2), row["by_kind"]
    assert row["reported"] == 1
    assert row["anomalies"] == 0, row["problems"]


def test_accounting_sees_a_lost_toggle_and_a_vanished_gift() -> None:
    initial = {"gifts": [{"id": "a"}, {"id": "b"}]}
    final = {"gifts": [{"id": "a"}]}  # b vanished, a's reservation was lost
    row = account("gifts", initial, [final],
                  _run(_change(0, "u0-c1", "toggle", "a", version=1, effect="reserve")))
    assert row["dropped"] == 1
    assert row["problems"] == ["gift b gone without a committed removal"]


def test_accounting_of_one_field() -> None:
    changes = [_change(0, "u0-c1", "write", version=2), _change(1, "u1-c1", "write", version=3),
               _change(1, "u1-c2", "write", outcome="reported")]
    row = account("field", {"title": "start"}, [{"title": "u1-c1"}], _run(*changes))
    assert (row["present"], row["superseded"], row["dropped"], row["reported"]) == (1, 1, 1, 1)
    # u1-c1 was committed after u0-c1, yet u0-c1 shows: u1-c1 was lost
    stale = account("field", {"title": "start"}, [{"title": "u0-c1"}], _run(*changes[:2]))
    assert (stale["present"], stale["dropped"], stale["lost_silently"]) == (1, 1, 1)
    # the final title's write was committed but its ack had not arrived: the others are older
    late = [*changes[:2], _change(2, "u2-c1", "write", outcome="pending")]
    row = account("field", {"title": "start"}, [{"title": "u2-c1"}], _run(*late))
    assert (row["present"], row["superseded"], row["dropped"], row["pending"]) == (1, 2, 0, 0)
