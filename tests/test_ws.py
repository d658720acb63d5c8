"""Protocol 1 against a real server: convergence, ack/reject, formats, errors, ordering."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from .clients import WsClient, apply_immer, joined
from .conftest import ServerFactory, ServerProcess


@pytest.fixture
def server(any_store: str, server_factory: ServerFactory) -> ServerProcess:
    """This module's tests are store-independent: they run against memory, SQLite and Redis."""
    return server_factory(store=any_store)


def state_of(server: ServerProcess, doc: str = "default") -> Any:
    return httpx.get(f"{server.url}/docs/{doc}/state").json()


def test_snapshot_then_synced_on_a_new_document(server: ServerProcess) -> None:
    with WsClient(server.ws_url("/ws/fresh")) as c:
        snap = c.expect("snapshot")
        assert snap["doc"] == "fresh" and snap["version"] == 0 and snap["state"] == {}
        assert isinstance(snap["epoch"], str) and snap["epoch"]
        assert c.expect("synced")["version"] == 0


def test_two_clients_and_a_late_joiner_converge(server: ServerProcess) -> None:
    with joined(server, "/ws/g") as a, joined(server, "/ws/g") as b:
        a.patch("init", [{"op": "replace", "path": [], "value": {"gifts": []}}])
        a.until(lambda m: m["type"] == "ack")
        b.until(lambda m: m["type"] == "patch")
        for i in range(20):
            sender = a if i % 2 else b
            sender.patch(i, [{"op": "add", "path": ["gifts", 0],
                              "value": {"id": i, "description": f"gift {i}"}}])
        acked = {}
        for client in (a, b):
            for _ in range(10):
                msg = client.until(lambda m: m["type"] == "ack")
                acked[msg["id"]] = msg["version"]
        assert sorted(acked.values()) == list(range(2, 22))  # every batch got its own version
        for client in (a, b):  # each sees the other's 10 batches and its own 10 acks
            while client.version != 21:
                client.until(lambda m: m["type"] in ("patch", "ack"))
        with joined(server, "/ws/g") as late:
            final = state_of(server, "g")
            assert late.state == final
        assert a.state == b.state == final  # replicas: others' patches + own acked batches
        assert len(final["gifts"]) == 20
        assert sorted(g["id"] for g in final["gifts"]) == list(range(20))


def test_versions_arrive_in_order_without_gaps_under_concurrency(server: ServerProcess) -> None:
    n_writers, per_writer = 4, 50
    with joined(server, "/ws/order") as watcher:
        def write(w: int) -> None:
            with joined(server, "/ws/order") as c:
                for i in range(per_writer):
                    c.patch(i, [{"op": "add", "path": [f"w{w}-{i}"], "value": i}])
                got = 0
                while got < per_writer:
                    if c.recv()["type"] == "ack":
                        got += 1

        threads = [threading.Thread(target=write, args=(w,)) for w in range(n_writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        total = n_writers * per_writer
        while watcher.version != total:
            watcher.until(lambda m: m["type"] == "patch")  # _track asserts no gap
        assert watcher.state == state_of(server, "order")
        assert len(watcher.state) == total


def test_ack_and_rejects(server: ServerProcess) -> None:
    with joined(server, "/ws/r") as c:
        c.patch(1, [{"op": "add", "path": ["list"], "value": [1, 2]}])
        assert c.expect("ack") == {"type": "ack", "id": 1, "version": 1}
        cases = [
            ("missing index", [{"op": "remove", "path": ["list", 5]}], "conflict"),
            ("missing parent", [{"op": "add", "path": ["nope", "x"], "value": 1}], "conflict"),
            ("bad op", [{"op": "move", "path": ["list"]}], "invalid"),
            ("bool segment", [{"op": "add", "path": [True], "value": 1}], "invalid"),
            ("proto path", [{"op": "add", "path": ["__proto__"], "value": 1}], "forbidden"),
            ("proto value", [{"op": "add", "path": ["x"], "value": {"constructor": 1}}],
             "forbidden"),
            ("root without value", [{"op": "replace", "path": []}], "invalid"),
        ]
        for name, patches, code in cases:
            c.patch(name, patches)
            msg = c.expect("reject")
            assert msg["id"] == name and msg["version"] == 1, msg
            assert msg["error"]["code"] == code, (name, msg)
            assert msg["error"]["message"]
        # atomic: the first operation applies, the second does not, so neither is kept
        c.patch("atomic", [{"op": "add", "path": ["list", 0], "value": 0},
                           {"op": "remove", "path": ["list", 9]}])
        assert c.expect("reject")["error"]["code"] == "conflict"
        c.patch("ahead", [{"op": "add", "path": ["y"], "value": 1}], base=7)
        assert c.expect("reject")["error"]["code"] == "invalid"
        assert state_of(server, "r") == {"list": [1, 2]}
        assert httpx.get(f"{server.url}/docs/r/state").headers["etag"] == '"1"'


def test_stale_base_is_rebased_and_a_true_overlap_conflicts(server: ServerProcess) -> None:
    with joined(server, "/ws/base") as a, joined(server, "/ws/base") as b:
        a.patch(1, [{"op": "replace", "path": [], "value": {"gifts": [{"n": 0}, {"n": 1}],
                                                           "title": "x"}}])
        a.expect("ack")
        b.until(lambda m: m["type"] == "patch")
        a.patch(2, [{"op": "add", "path": ["gifts", 0], "value": {"n": -1}}], base=1)
        assert a.expect("ack") == {"type": "ack", "id": 2, "version": 2}  # as sent: no patches
        # b made its change at version 1, before the insert at index 0: it is moved to index 2,
        # and b's ack says so, since what was applied differs from what b sent
        b.patch("b1", [{"op": "replace", "path": ["gifts", 1, "n"], "value": 99}], base=1)
        ack = b.until(lambda m: m["type"] == "ack")
        assert ack == {"type": "ack", "id": "b1", "version": 3,
                       "patches": [{"op": "replace", "path": ["gifts", 2, "n"], "value": 99}]}
        assert a.until(lambda m: m["type"] == "patch")["patches"] == ack["patches"]
        # both write the same member at version 3: the later one conflicts
        a.patch(3, [{"op": "replace", "path": ["title"], "value": "a"}], base=3)
        assert a.expect("ack")["version"] == 4
        b.patch("b2", [{"op": "replace", "path": ["title"], "value": "b"}], base=3)
        rej = b.until(lambda m: m["type"] == "reject")
        assert rej["error"]["code"] == "conflict" and rej["version"] == 4
        assert state_of(server, "base") == {"gifts": [{"n": -1}, {"n": 0}, {"n": 99}],
                                            "title": "a"}


def test_sender_gets_ack_not_its_own_patch_and_others_get_the_patch(
    server: ServerProcess,
) -> None:
    with joined(server, "/ws/echo") as a, joined(server, "/ws/echo") as b:
        a.patch("x", [{"op": "add", "path": ["k"], "value": "v"}])
        assert a.expect("ack")["version"] == 1
        msg = b.expect("patch")
        assert msg == {"type": "patch", "version": 1,
                       "patches": [{"op": "add", "path": ["k"], "value": "v"}]}
        b.patch("y", [{"op": "add", "path": ["j"], "value": 1}])
        assert b.expect("ack")["version"] == 2
        assert a.expect("patch")["version"] == 2  # nothing else (no echo of its own) came first


def test_json_patch_format_both_ways(server: ServerProcess) -> None:
    with joined(server, "/ws/jp?format=json-patch") as jp, joined(server, "/ws/jp") as im:
        jp.patch(1, [{"op": "add", "path": "/a~1b", "value": {"list": [1, 2, 3]}},
                     {"op": "copy", "from": "/a~1b", "path": "/copy"},
                     {"op": "move", "from": "/copy/list/0", "path": "/moved"},
                     {"op": "test", "path": "/moved", "value": 1.0},
                     {"op": "add", "path": "/a~1b/list/-", "value": 4}])
        assert jp.expect("ack")["version"] == 1
        msg = im.expect("patch")
        assert all(p["op"] in ("add", "remove", "replace") for p in msg["patches"])
        before: dict[str, Any] = {}
        assert apply_immer(before, msg["patches"]) == state_of(server, "jp")
        assert state_of(server, "jp") == {"a/b": {"list": [1, 2, 3, 4]}, "copy": {"list": [2, 3]},
                                          "moved": 1}
        im.patch(2, [{"op": "replace", "path": ["a/b", "list", 0], "value": "z"}])
        im.expect("ack")
        got = jp.expect("patch")
        assert got["patches"] == [{"op": "replace", "path": "/a~1b/list/0", "value": "z"}]
        jp.patch(3, [{"op": "test", "path": "/moved", "value": True}])
        assert jp.expect("reject")["error"]["code"] == "conflict"


def test_empty_batch_is_acked_and_not_broadcast(server: ServerProcess) -> None:
    with joined(server, "/ws/empty") as a, joined(server, "/ws/empty") as b:
        a.patch("e", [])
        assert a.expect("ack") == {"type": "ack", "id": "e", "version": 0}
        a.patch("r", [{"op": "remove", "path": ["absent"]}])  # Immer: absent member, no-op
        assert a.expect("ack")["version"] == 0
        a.patch("x", [{"op": "add", "path": ["x"], "value": 1}])
        assert a.expect("ack")["version"] == 1
        assert b.expect("patch")["version"] == 1  # the first thing b got


def test_bad_frames_get_errors_and_the_connection_stays_open(server: ServerProcess) -> None:
    with joined(server, "/ws/bad") as c:
        for frame in ["not json", "[1,2]", '{"type":"hello"}', '{"type":"patch","patches":[]}',
                      '{"type":"patch","id":true,"patches":[]}', "NaN", '"str"']:
            c.send(frame)
            msg = c.expect("error")
            assert msg["error"]["code"] == "invalid", (frame, msg)
        c.ws.send(b"\x00binary")
        assert c.expect("error")["error"]["code"] == "invalid"
        c.patch(1, [{"op": "add", "path": ["ok"], "value": True}])
        assert c.expect("ack")["version"] == 1


@pytest.mark.parametrize("path", ["/ws/bad%20id", "/ws/x?format=xml", "/ws/x?since=-1",
                                  "/ws/x?client=" + "c" * 200])
def test_bad_connection_parameters_are_refused(server: ServerProcess, path: str) -> None:
    with WsClient(server.ws_url(path)) as c:
        assert c.expect("error")["error"]["code"] == "invalid"
        with pytest.raises(ConnectionClosed) as info:
            c.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008


def test_lesson_mode_round_trip_with_protocol_clients(server: ServerProcess) -> None:
    httpx.patch(f"{server.url}/state", json=[{"op": "replace", "path": [],
                                               "value": {"gifts": [{"id": "a"}]}}])
    with WsClient(server.ws_url("/")) as lesson, joined(server, "/ws") as proto:
        first = json.loads(lesson.ws.recv(timeout=10))
        assert first == [{"op": "replace", "path": ["gifts"], "value": [{"id": "a"}]}]
        lesson.send([{"op": "replace", "path": ["gifts", 0, "reservedBy"], "value": "me"}])
        msg = proto.expect("patch")
        assert msg["patches"] == [{"op": "add", "path": ["gifts", 0, "reservedBy"],
                                   "value": "me"}]
        lesson.send([{"op": "replace", "path": ["gifts", 0, "reservedBy"]}])  # no value
        assert proto.expect("patch")["patches"] == [
            {"op": "remove", "path": ["gifts", 0, "reservedBy"]}]
        proto.patch(1, [{"op": "add", "path": ["gifts", 1], "value": {"id": "b"}}])
        assert json.loads(lesson.ws.recv(timeout=10)) == [
            {"op": "add", "path": ["gifts", 1], "value": {"id": "b"}}]
        lesson.send([{"op": "remove", "path": ["gifts", 9]}])  # rejected: snapshot again
        assert json.loads(lesson.ws.recv(timeout=10)) == [
            {"op": "replace", "path": ["gifts"], "value": [{"id": "a"}, {"id": "b"}]}]
        assert state_of(server) == {"gifts": [{"id": "a"}, {"id": "b"}]}
