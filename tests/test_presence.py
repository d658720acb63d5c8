"""Presence against real servers: who is here, what they look at, never stale, never stored."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .clients import Message, WsClient
from .conftest import RedisProcess, ServerFactory, ServerProcess

View = dict[str, dict[str, Any]]


class Peer:
    """A protocol-1 client taking part in presence, with its view of the others."""

    def __init__(self, server: ServerProcess, doc: str = "p", query: str = "presence=1") -> None:
        self.client = WsClient(server.ws_url(f"/ws/{doc}?{query}"))
        self.client.expect("snapshot")
        self.client.until(lambda m: m["type"] == "synced")
        self.others: View = {}
        self.conn: str | None = None
        self.frames: list[Message] = []
        if "presence=1" in query:
            full = self.client.expect("presence")
            self._apply(full)

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def set(self, state: Any, **extra: Any) -> None:
        self.client.send({"type": "presence", "state": state, **extra})

    def _apply(self, message: Message) -> None:
        self.frames.append(message)
        if "self" in message:
            self.conn = message["self"]
            self.others = {}
        for peer in message["peers"]:
            if peer["state"] is None:
                self.others.pop(peer["conn"], None)
            else:
                self.others[peer["conn"]] = peer

    def until(self, predicate: Callable[[View], bool], timeout: float = 10.0) -> View:
        deadline = time.monotonic() + timeout
        while not predicate(self.others):
            left = deadline - time.monotonic()
            assert left > 0, f"presence never matched; others={self.others}"
            message = self.client.until(lambda m: m["type"] == "presence", timeout=left)
            self._apply(message)
        return self.others

    def states(self) -> list[Any]:
        return [p["state"] for p in self.others.values()]


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def silent_socket(server: ServerProcess, path: str) -> socket.socket:
    """A WebSocket that joins, says where it is, and then never reads again: it answers no
    ping (a laptop that went to sleep, a network that dropped without a FIN)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = json.dumps({"type": "presence", "state": {"asleep": True}}).encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask
                 + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return sock


@pytest.fixture
def fast(server_factory: ServerFactory) -> ServerProcess:
    """A TTL of 2 s so that the tests of dead sockets are short."""
    return server_factory("--presence-ttl", "2")


def test_join_sees_the_others_and_they_see_the_newcomer(fast: ServerProcess) -> None:
    with Peer(fast) as a:
        assert a.others == {} and a.conn
        a.set({"gift": "g1"})
        with Peer(fast) as b:
            b.until(lambda o: [p["state"] for p in o.values()] == [{"gift": "g1"}])
            assert b.others[a.conn] == {"conn": a.conn, "user": None, "state": {"gift": "g1"}}
            assert b.conn != a.conn
            a.until(lambda o: b.conn in o and o[b.conn]["state"] == {})
            b.set({"gift": "g2"}, version=0)
            a.until(lambda o: o[b.conn]["state"] == {"gift": "g2"})
            assert a.others[b.conn]["version"] == 0
            # a client that did not ask for presence is not listed and gets none
            with Peer(fast, query="client=x") as c:
                c.client.patch(1, [{"op": "add", "path": ["x"], "value": 1}])
                c.client.until(lambda m: m["type"] == "ack")
                assert all(m["type"] != "presence" for m in c.client.seen)
            # null: I am leaving (the socket stays open)
            a.set(None)
            b.until(lambda o: a.conn not in o)
            # the sender is never echoed its own entry
            assert all(p["conn"] != a.conn for m in a.frames for p in m["peers"])


def test_close_removes_at_once(fast: ServerProcess) -> None:
    with Peer(fast) as a:
        b = Peer(fast)
        a.until(lambda o: b.conn in o)
        started = time.monotonic()
        b.client.close()
        a.until(lambda o: b.conn not in o, timeout=5)
        assert time.monotonic() - started < 1.0


def test_a_socket_that_stops_answering_pings_is_removed_within_the_ttl(
    fast: ServerProcess,
) -> None:
    with Peer(fast) as a:
        sock = silent_socket(fast, "/ws/p?presence=1")
        try:
            a.until(lambda o: [p["state"] for p in o.values()] == [{"asleep": True}])
            started = time.monotonic()
            a.until(lambda o: o == {}, timeout=10)
            elapsed = time.monotonic() - started
            assert elapsed < 2.0 + 1.0, f"removed after {elapsed:.1f} s, TTL 2 s"
            # while a's own socket, which answers pings, is still listed for the others
            with Peer(fast) as b:
                assert list(b.others) == [a.conn]
        finally:
            sock.close()


def test_updates_are_coalesced_per_tick(server_factory: ServerFactory) -> None:
    server = server_factory("--presence-tick", "0.5", "--presence-rate", "0")
    with Peer(server) as a, Peer(server) as b:
        a.until(lambda o: b.conn in o)
        b.until(lambda o: a.conn in o)
        before = len(b.frames)
        for x in range(30):
            a.set({"x": x})
        b.until(lambda o: o[a.conn]["state"] == {"x": 29})
        deltas = b.frames[before:]
        assert len(deltas) <= 2, deltas  # 30 updates, at most two ticks (a tick boundary)
        assert sum(len(m["peers"]) for m in deltas) == len(deltas)
        assert metric(server, "immer_presence_updates_received_total") >= 30
        assert metric(server, "immer_presence_updates_broadcast_total") < 10


def test_size_and_shape_are_checked_and_the_connection_stays(fast: ServerProcess) -> None:
    with Peer(fast) as a, Peer(fast) as b:
        a.until(lambda o: b.conn in o)
        b.set({"s": "x" * 2100})
        assert b.client.until(lambda m: m["type"] == "error")["error"]["code"] == "too_large"
        b.set([1, 2])
        assert b.client.until(lambda m: m["type"] == "error")["error"]["code"] == "invalid"
        b.set({"ok": True})
        a.until(lambda o: o[b.conn]["state"] == {"ok": True})
        assert b.client.version == 0


def test_over_the_rate_updates_are_dropped_and_counted(server_factory: ServerFactory) -> None:
    server = server_factory("--presence-rate", "2", "--presence-burst", "5")
    with Peer(server) as a, Peer(server) as b:
        a.until(lambda o: b.conn in o)
        for x in range(40):
            b.set({"x": x})
        # no error: the client learns nothing but a stale cursor; its batches are unaffected
        b.client.patch("after", [{"op": "add", "path": ["k"], "value": 1}])
        assert b.client.until(lambda m: m["type"] == "ack")["id"] == "after"
        a.until(lambda o: o[b.conn]["state"] == {"x": 4})  # the burst got through
        dropped = metric(server, "immer_presence_updates_dropped_total", reason="rate")
        assert 30 <= dropped <= 35
        assert all(m["type"] != "error" for m in b.client.seen)


def test_identity_comes_from_the_token_and_cannot_be_spoofed(
    server_factory: ServerFactory, tmp_path: Path,
) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({
        "ann-token": {"docs": "*", "role": "write", "user": "ann"},
        "bob-token": {"docs": "*", "role": "read", "name": "Bob"},
        "anon-token": {"docs": "*", "role": "write"},
    }))
    server = server_factory("--auth", str(auth))
    with Peer(server, query="presence=1&token=ann-token") as ann:
        ann.set({"user": "mallory", "cursor": 3}, user="mallory", conn="forged")
        with Peer(server, query="presence=1&token=bob-token") as bob, \
                Peer(server, query="presence=1&token=anon-token") as anon:
            bob.until(lambda o: ann.conn in o and o[ann.conn]["state"].get("cursor") == 3)
            assert bob.others[ann.conn]["user"] == "ann"  # the state may say anything
            assert "forged" not in bob.others
            ann.until(lambda o: {p["user"] for p in o.values()} == {"Bob", None})
            # a read-only connection may set presence (by default)
            bob.set({"cursor": 1})
            anon.until(lambda o: o[bob.conn]["state"] == {"cursor": 1})


def test_read_only_presence_can_be_turned_off(
    server_factory: ServerFactory, tmp_path: Path,
) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"w": {"docs": "*", "role": "write"},
                                "r": {"docs": "*", "role": "read"}}))
    server = server_factory("--auth", str(auth), "--no-read-only-presence")
    with Peer(server, query="presence=1&token=w") as writer, \
            Peer(server, query="presence=1&token=r") as reader:
        writer.until(lambda o: reader.conn in o)
        reader.set({"cursor": 1})
        error = reader.client.until(lambda m: m["type"] == "error")
        assert error["error"]["code"] == "forbidden"
        reader.set({"cursor": 2})  # dropped without a second error
        writer.set({"cursor": 9})
        reader.until(lambda o: o[writer.conn]["state"] == {"cursor": 9})
        assert writer.others[reader.conn]["state"] == {}
        assert metric(server, "immer_presence_updates_dropped_total", reason="read_only") == 2


def test_lesson_clients_get_no_presence(fast: ServerProcess) -> None:
    lesson = WsClient(fast.ws_url("/"))
    with lesson, Peer(fast, doc="default") as a, Peer(fast, doc="default") as b:
        first = lesson.ws.recv(timeout=10)
        assert isinstance(json.loads(first), list)
        a.set({"x": 1})
        b.until(lambda o: a.conn in o and o[a.conn]["state"] == {"x": 1})
        a.client.patch(1, [{"op": "add", "path": ["marker"], "value": 1}])
        a.client.until(lambda m: m["type"] == "ack")
        frame = json.loads(lesson.ws.recv(timeout=10))  # the next frame is the patch, as a bare
        assert frame == [{"op": "add", "path": ["marker"], "value": 1}]  # array: no presence


def test_presence_is_never_stored(fast: ServerProcess) -> None:
    with Peer(fast) as a, Peer(fast) as b:
        a.set({"cursor": [1, 2]})
        b.until(lambda o: a.conn in o and o[a.conn]["state"] == {"cursor": [1, 2]})
        response = httpx.get(f"{fast.url}/docs/p/state")
        assert response.json() == {} and response.headers["etag"] == '"0"'
        assert httpx.get(f"{fast.url}/docs/p/patches", params={"since": 0}).json()[
            "patches"] == []
        assert metric(fast, "immer_document_presence_peers", doc="p") == 2


@pytest.fixture
def two_on_redis(server_factory: ServerFactory,
                 redis_server: RedisProcess) -> Iterator[list[ServerProcess]]:
    yield [server_factory("--presence-ttl", "2", store=redis_server.url) for _ in range(2)]


def test_two_processes_on_redis_see_each_other(two_on_redis: list[ServerProcess]) -> None:
    one, two = two_on_redis
    with Peer(one) as a:
        a.set({"on": 1})
        with Peer(two) as b:
            b.until(lambda o: a.conn in o and o[a.conn]["state"] == {"on": 1})
            a.until(lambda o: b.conn in o)
            b.set({"on": 2})
            a.until(lambda o: o[b.conn]["state"] == {"on": 2})
            c = Peer(two)
            a.until(lambda o: c.conn in o)
            c.client.close()
            a.until(lambda o: c.conn not in o, timeout=5)
        a.until(lambda o: o == {}, timeout=5)
        assert metric(one, "immer_document_presence_peers", doc="p") == 1


def test_a_dead_process_entries_expire(two_on_redis: list[ServerProcess]) -> None:
    one, two = two_on_redis
    with Peer(one) as a:
        b = Peer(two)
        b.set({"doomed": True})
        a.until(lambda o: [p["state"] for p in o.values()] == [{"doomed": True}])
        two.kill()  # SIGKILL: no goodbye, no socket close reaches process one
        started = time.monotonic()
        a.until(lambda o: o == {}, timeout=10)
        elapsed = time.monotonic() - started
        # the TTL, plus up to one heartbeat period until the expiry is noticed, plus slack
        assert elapsed < 2.0 + 2.0 / 3 + 1.0, f"expired after {elapsed:.1f} s, TTL 2 s"
        b.client.close()


def test_presence_missed_while_redis_was_away_is_caught_up(
    two_on_redis: list[ServerProcess], redis_server: RedisProcess,
) -> None:
    one, two = two_on_redis
    with Peer(one) as a, Peer(two) as b:
        a.until(lambda o: b.conn in o)
        redis_server.kill()
        b.set({"during": "outage"})  # its relay to process one is lost
        redis_server.start()
        # the next heartbeat names a change process one never saw: it asks, and gets it
        a.until(lambda o: b.conn in o and o[b.conn]["state"] == {"during": "outage"},
                timeout=15)
