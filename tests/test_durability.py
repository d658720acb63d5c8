"""Durability against a real server process: restart, SIGKILL, compaction, resume, exactly-once."""

from __future__ import annotations

import asyncio
import json
import random
import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import pytest
import websockets

from .clients import WsClient
from .conftest import ServerFactory, ServerProcess


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/documents.db"


def joined(server: ServerProcess, path: str) -> WsClient:
    client = WsClient(server.ws_url(path))
    client.until(lambda m: m["type"] == "synced")
    return client


def test_restart_keeps_documents_versions_and_epoch(
    durable_store: str, server_factory: ServerFactory
) -> None:
    server = server_factory(store=durable_store)
    for i in range(5):
        httpx.patch(f"{server.url}/docs/a/state", json=[{"op": "add", "path": [f"k{i}"],
                                                         "value": i}])
    httpx.patch(f"{server.url}/docs/b/state", json=[{"op": "replace", "path": [], "value": [1]}])
    epoch = httpx.get(f"{server.url}/health").json()["epoch"]
    before = {d: httpx.get(f"{server.url}/docs/{d}/state") for d in ("a", "b")}
    server.restart()
    assert httpx.get(f"{server.url}/health").json()["epoch"] == epoch
    for d, r in before.items():
        after = httpx.get(f"{server.url}/docs/{d}/state")
        assert after.json() == r.json() and after.headers["etag"] == r.headers["etag"]
    with joined(server, "/ws/a") as c:
        snap = next(m for m in c.seen if m["type"] == "snapshot")
        assert snap["epoch"] == epoch and snap["version"] == 5


def test_resend_after_restart_is_applied_once(
    durable_store: str, server_factory: ServerFactory
) -> None:
    server = server_factory(store=durable_store)
    with joined(server, "/ws/once?client=me") as c:
        c.patch("m1", [{"op": "add", "path": ["items"], "value": []}])
        c.patch("m2", [{"op": "add", "path": ["items", 0], "value": "x"}])
        assert c.expect("ack")["version"] == 1
        assert c.expect("ack")["version"] == 2
    server.restart()
    with joined(server, "/ws/once?client=me&since=2") as c:
        c.patch("m2", [{"op": "add", "path": ["items", 0], "value": "x"}])
        assert c.expect("ack") == {"type": "ack", "id": "m2", "version": 2}
    with joined(server, "/ws/once?client=other") as c:  # another client's id is its own
        c.patch("m2", [{"op": "add", "path": ["items", 0], "value": "y"}])
        assert c.expect("ack")["version"] == 3
    assert httpx.get(f"{server.url}/docs/once/state").json() == {"items": ["y", "x"]}


def test_resume_since_and_epoch(
    durable_store: str, server_factory: ServerFactory
) -> None:
    server = server_factory(store=durable_store)
    with joined(server, "/ws/r") as c:
        # version 1 is large, so the short tails below weigh less than the state
        c.patch(0, [{"op": "add", "path": ["blob"], "value": "x" * 2000}])
        for i in range(1, 6):
            c.patch(i, [{"op": "add", "path": [f"k{i}"], "value": i}])
        while c.version != 6:
            c.recv()
        epoch = next(m for m in c.seen if m["type"] == "snapshot")["epoch"]
    with WsClient(server.ws_url(f"/ws/r?since=3&epoch={epoch}")) as c:
        got = [c.recv() for _ in range(4)]
        assert [m["type"] for m in got] == ["patch", "patch", "patch", "synced"]
        assert [m["version"] for m in got] == [4, 5, 6, 6]
    with WsClient(server.ws_url(f"/ws/r?since=6&epoch={epoch}")) as c:
        assert c.recv() == {"type": "synced", "version": 6}
    # a tail that outweighs the state (it holds the blob and more) is sent as a snapshot
    for query in (f"since=0&epoch={epoch}", "since=3&epoch=someone-else", "since=9",
                  "since=2&epoch=x"):
        with WsClient(server.ws_url(f"/ws/r?{query}")) as c:
            snap = c.expect("snapshot")
            assert snap["version"] == 6 and snap["epoch"] == epoch
            assert c.expect("synced")["version"] == 6


async def _crash_round(server: ServerProcess, doc: str, clients: int, per_client: int,
                       offset: int, kill_after: int, acked: dict[tuple[int, int], int]) -> None:
    """Writers pipeline appends; the server is SIGKILLed once ``kill_after`` acks came in."""
    enough = asyncio.Event()

    async def writer(c: int) -> None:
        url = server.ws_url(f"/ws/{doc}?format=json-patch&client=c{c}")
        try:
            async with websockets.connect(url, max_size=None) as ws:
                async def send_all() -> None:
                    for i in range(offset, offset + per_client):
                        await ws.send(json.dumps({"type": "patch", "id": i, "patches": [
                            {"op": "add", "path": "/items/-", "value": [c, i]}]}))

                sender = asyncio.create_task(send_all())
                async for frame in ws:
                    data = json.loads(frame)
                    for m in data if isinstance(data, list) else [data]:
                        if m["type"] == "ack":
                            acked[(c, m["id"])] = m["version"]
                            if len(acked) >= kill_after:
                                enough.set()
                        assert m["type"] != "reject", m
                    if all((c, i) in acked for i in range(offset, offset + per_client)):
                        break
                sender.cancel()
        except (websockets.ConnectionClosed, OSError):
            pass

    tasks = [asyncio.create_task(writer(c)) for c in range(clients)]
    killer = asyncio.create_task(enough.wait())
    await asyncio.wait([killer, *tasks], return_when=asyncio.FIRST_COMPLETED, timeout=120)
    server.kill()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)
    killer.cancel()


def _items(server: ServerProcess, doc: str) -> list[list[int]]:
    items: list[list[int]] = httpx.get(f"{server.url}/docs/{doc}/state").json()["items"]
    return items


def _check_log_replays_to_state(server: ServerProcess, doc: str) -> None:
    r = httpx.get(f"{server.url}/docs/{doc}/patches", params={"since": 0, "format": "json-patch"})
    assert r.status_code == 200
    replayed = jsonpatch.apply_patch({}, r.json()["patches"])
    assert replayed == httpx.get(f"{server.url}/docs/{doc}/state").json()


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_batch_and_resend_is_exactly_once(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    rng = random.Random(7)
    server = server_factory("--retain-versions", "100000", "--rate", "0",
                            store=sqlite_url(tmp_path))
    doc, clients, per_client = "crash", 3, 400
    httpx.patch(f"{server.url}/docs/{doc}/state", json=[{"op": "add", "path": ["items"],
                                                         "value": []}])
    expected: list[tuple[int, int]] = []
    for round_ in range(3):
        offset = round_ * per_client
        acked: dict[tuple[int, int], int] = {}
        kill_after = rng.randrange(50, clients * per_client // 2)
        asyncio.run(_crash_round(server, doc, clients, per_client, offset, kill_after, acked))
        server.start()
        items = [tuple(x) for x in _items(server, doc)]
        # every acknowledged batch survived, at the version it was acknowledged with
        assert set(acked) <= set(items)
        log = httpx.get(f"{server.url}/docs/{doc}/patches",
                        params={"since": 0, "format": "json-patch"}).json()["patches"]
        by_value = {tuple(op["value"]): n + 2 for n, op in enumerate(log[1:])}
        assert all(by_value[key] == version for key, version in acked.items())
        # resume: every client resends what was not acknowledged, with the same ids
        for c in range(clients):
            etag = httpx.get(f"{server.url}/docs/{doc}/state").headers["etag"]
            version = etag.removeprefix("W/").strip('"')
            with joined(server, f"/ws/{doc}?format=json-patch&client=c{c}&since={version}") as w:
                missing = [i for i in range(offset, offset + per_client) if (c, i) not in acked]
                for i in missing:
                    w.patch(i, [{"op": "add", "path": "/items/-", "value": [c, i]}])
                for _ in missing:
                    assert w.until(lambda m: m["type"] in ("ack", "reject"))["type"] == "ack"
        expected += [(c, i) for c in range(clients) for i in range(offset, offset + per_client)]
        items = [tuple(x) for x in _items(server, doc)]
        assert sorted(items) == sorted(expected)  # each batch exactly once
        for c in range(clients):  # and each client's batches in the order it sent them
            mine = [i for cc, i in items if cc == c]
            assert mine == sorted(mine)
        _check_log_replays_to_state(server, doc)


def test_compaction_keeps_a_bounded_log_and_serves_snapshot_plus_tail(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory("--snapshot-every", "10", "--retain-versions", "50", "--rate", "0",
                            store=sqlite_url(tmp_path))
    states: dict[int, Any] = {}
    with joined(server, "/ws/c") as w:
        # a large first version, so a resumed tail of the last 50 weighs less than the state
        w.patch("blob", [{"op": "add", "path": ["blob"], "value": "x" * 20_000}])
        for i in range(1, 300):
            w.patch(i, [{"op": "replace", "path": ["n"], "value": i},
                        {"op": "add", "path": [f"k{i % 7}"], "value": [i]}])
        while w.version != 300:
            w.recv()
            states[w.version] = json.loads(json.dumps(w.state))
        epoch = next(m for m in w.seen if m["type"] == "snapshot")["epoch"]
    # a read is served between two rounds of the writer loop: the snapshots and compaction of
    # the last round are done by then
    assert httpx.get(f"{server.url}/docs/c/state").json() == states[300]
    db = sqlite3.connect(tmp_path / "documents.db")
    (log_rows,) = db.execute("SELECT count(*) FROM log WHERE doc = 'c'").fetchone()
    (snap_rows,) = db.execute("SELECT count(*) FROM snapshots WHERE doc = 'c'").fetchone()
    db.close()
    # the log: the retention window plus at most one snapshot interval; snapshots: those in
    # the window (at least 8 versions apart) plus the one at or below the floor
    assert log_rows <= 50 + 10 and snap_rows <= 50 // 8 + 2
    r = httpx.get(f"{server.url}/docs/c/patches", params={"since": 0})
    assert r.status_code == 410 and r.json()["error"]["code"] == "gone"
    oldest = r.json()["oldest"]
    assert 240 <= oldest <= 250
    r = httpx.get(f"{server.url}/docs/c/patches", params={"since": oldest})
    assert r.status_code == 200 and r.json()["version"] == 300
    assert httpx.get(f"{server.url}/docs/c/state", params={"version": 100}).status_code == 410
    for v in (oldest, 265, 299):
        r = httpx.get(f"{server.url}/docs/c/state", params={"version": v})
        assert r.status_code == 200 and r.json() == states[v]
    with WsClient(server.ws_url(f"/ws/c?since=5&epoch={epoch}")) as c:
        assert c.expect("snapshot")["version"] == 300
    with WsClient(server.ws_url(f"/ws/c?since={oldest}&epoch={epoch}")) as c:
        assert c.expect("patch")["version"] == oldest + 1
    server.restart()  # recovery reads the latest snapshot plus a short tail, not the history
    with joined(server, "/ws/c") as late:
        assert late.state == states[300]
    loaded = re.findall(r"doc=c loaded at version 300 \(snapshot \d+ \+ (\d+) entries\)",
                        server.log())
    assert loaded and int(loaded[-1]) <= 10  # at most one snapshot interval is replayed


def test_newcomer_gets_snapshot_plus_short_tail(server: ServerProcess) -> None:
    """With a cached snapshot a few versions back, a newcomer is sent it plus the tail."""
    with joined(server, "/ws/tail") as w:
        w.patch(0, [{"op": "add", "path": ["big"], "value": "x" * 5000}])
        w.expect("ack")
        with joined(server, "/ws/tail"):  # caches the serialized state at version 1
            pass
        for i in range(3):
            w.patch(i + 1, [{"op": "add", "path": [f"k{i}"], "value": i}])
            w.expect("ack")
    with WsClient(server.ws_url("/ws/tail")) as c:
        kinds = [c.recv() for _ in range(5)]
        assert [(m["type"], m["version"]) for m in kinds] == [
            ("snapshot", 1), ("patch", 2), ("patch", 3), ("patch", 4), ("synced", 4)]
        assert c.state == httpx.get(f"{server.url}/docs/tail/state").json()
