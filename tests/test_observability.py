"""``/health``, ``/metrics`` (Prometheus text) and the structured connection logs, against a real
server: the metrics named in the README exist and move as traffic says they should."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .clients import WsClient, joined
from .conftest import ServerFactory, ServerProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
T = TypeVar("T")


def eventually(probe: Callable[[], T], done: Callable[[T], bool], timeout: float = 10.0) -> T:
    """Poll ``probe`` until ``done`` holds. The server finishes a connection (its last log line,
    its gauges) just after the client saw the close handshake complete: there is no message
    to wait for, so this polls, bounded in time."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


def scrape(server: ServerProcess) -> Samples:
    r = httpx.get(f"{server.url}/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels or ''} in /metrics"
    return samples[key]


def test_health(server: ServerProcess) -> None:
    r = httpx.get(f"{server.url}/health")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["status"] == "ok" and body["store"] == "ok"
    assert isinstance(body["epoch"], str) and body["epoch"]
    with joined(server, "/ws/h") as c:  # the epoch clients resume with
        assert c.seen[0]["epoch"] == body["epoch"]
    assert httpx.get(f"{server.url}/health").json()["epoch"] == body["epoch"]


def test_metrics_follow_the_traffic(server_factory: ServerFactory) -> None:
    server = server_factory("--snapshot-every", "2")
    before = scrape(server)
    for name in ("immer_batches_accepted_total", "immer_received_bytes_total",
                 "immer_sent_bytes_total", "immer_outbound_queue_messages",
                 "immer_apply_seconds_count"):
        value(before, name)
    sent_text = 0
    with joined(server, "/ws/m?client=obs-a") as a, joined(server, "/ws/m") as b, \
            WsClient(server.ws_url("/")) as lesson:
        lesson.ws.recv(timeout=10)  # its snapshot frame: it is subscribed
        during = scrape(server)
        assert value(during, "immer_connections", mode="protocol") == 2
        assert value(during, "immer_connections", mode="lesson") == 1
        for i in range(3):
            frame = json.dumps({"type": "patch", "id": i,
                                "patches": [{"op": "add", "path": [f"k{i}"], "value": i}]})
            a.sent[i] = [{"op": "add", "path": [f"k{i}"], "value": i}]
            a.send(frame)
            sent_text += len(frame)
            assert a.expect("ack")["version"] == i + 1
        conflict = json.dumps({"type": "patch", "id": "c",
                               "patches": [{"op": "remove", "path": ["nope", 3]}]})
        a.send(conflict)
        assert a.expect("reject")["error"]["code"] == "conflict"
        a.send("not json")
        assert a.expect("error")["error"]["code"] == "invalid"
        sent_text += len(conflict) + len("not json")
        r = httpx.patch(f"{server.url}/docs/m/state",
                        json=[{"op": "add", "path": ["http"], "value": True}])
        assert r.status_code == 200
        while b.version != 4:
            b.until(lambda m: m["type"] == "patch")
        after = scrape(server)
        assert value(after, "immer_document_version", doc="m") == 4
        assert value(after, "immer_document_log_length", doc="m") == 4
        snap = value(after, "immer_document_snapshot_version", doc="m")
        assert 2 <= snap <= 4  # --snapshot-every 2
        assert value(after, "immer_document_subscribers", doc="m") == 2
        assert value(after, "immer_outbound_queue_messages") >= 0
        assert value(after, "immer_outbound_queue_max_messages") >= 0
    accepted = (value(after, "immer_batches_accepted_total")
                - value(before, "immer_batches_accepted_total"))
    assert accepted == 4  # 3 over WebSocket, 1 over HTTP
    assert value(after, "immer_batches_rejected_total", code="conflict") == 1
    assert value(after, "immer_frame_errors_total") - value(before, "immer_frame_errors_total") \
        == 1
    applied = value(after, "immer_apply_seconds_count") - value(before, "immer_apply_seconds_count")
    assert applied >= 4
    assert value(after, "immer_apply_seconds_bucket", le="+Inf") \
        == value(after, "immer_apply_seconds_count")
    assert value(after, "immer_apply_seconds_sum") > 0
    received = (value(after, "immer_received_bytes_total")
                - value(before, "immer_received_bytes_total"))
    assert received >= sent_text
    closed = eventually(lambda: scrape(server), lambda s: value(
        s, "immer_connections", mode="protocol") + value(s, "immer_connections", mode="lesson")
        == 0)
    assert value(closed, "immer_connections", mode="protocol") == 0
    assert value(closed, "immer_connections", mode="lesson") == 0
    sent = value(closed, "immer_sent_bytes_total") - value(before, "immer_sent_bytes_total")
    # at least a's acks, b's snapshot and 4 patches, the lesson client's frames
    assert sent >= sum(len(json.dumps(m, separators=(",", ":"))) for m in b.seen)


def test_sent_bytes_are_counted_while_the_connection_is_open(server: ServerProcess) -> None:
    """A counter that moves only when a connection closes says nothing about connections that
    stay open for hours (the normal case for a collaborative app)."""
    with joined(server, "/ws/s") as writer, joined(server, "/ws/s") as reader:
        before = value(scrape(server), "immer_sent_bytes_total")
        for i in range(20):
            writer.patch(i, [{"op": "add", "path": [f"k{i}"], "value": "x" * 100}])
        while reader.version != 20:
            reader.until(lambda m: m["type"] == "patch")
        grown = value(scrape(server), "immer_sent_bytes_total") - before
        assert grown >= 20 * 100, f"sent bytes grew {grown} for 20 patches of 100+ bytes"


def test_connection_logs_carry_document_and_client(server: ServerProcess) -> None:
    with joined(server, "/ws/logged?client=log-client-1") as c:
        c.patch(1, [{"op": "add", "path": ["a"], "value": 1}])
        c.expect("ack")
    with joined(server, "/ws/logged"):  # anonymous
        pass
    with WsClient(server.ws_url("/")) as lesson:  # lesson mode: document default
        lesson.ws.recv(timeout=10)
    log = eventually(server.log, lambda text: text.count(" disconnected") >= 3)
    conn_lines = [line for line in log.splitlines() if re.search(r"\bconn=\d+", line)]
    mine = [line for line in conn_lines if "client=log-client-1" in line]
    assert any("connected" in line for line in mine), log
    assert any("disconnected" in line for line in mine), log
    assert all("doc=logged" in line for line in mine), mine
    assert len(conn_lines) >= 6  # connected and disconnected, three connections
    for line in conn_lines:
        assert re.search(r"\bdoc=[A-Za-z0-9._-]+", line), line
        assert re.search(r"\bclient=\S+", line), line
    assert any("doc=default" in line for line in conn_lines)
