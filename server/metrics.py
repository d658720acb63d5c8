"""Prometheus metrics (``GET /metrics``), one registry per application.

Counters and histograms are updated on the hot path (a few microseconds each), except the bytes
sent, counted once per delivery: those are summed over a turn of the event loop and added once
(:class:`PerTurn`). Per-document and per-connection gauges are computed only when scraped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .hub import Hub

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5)


class PerTurn:
    """A counter's increments summed over one turn of the event loop and added at its end
    (``Counter.inc`` takes a lock: once per delivery, it showed in profiles)."""

    __slots__ = ("_counter", "_pending")

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self._pending = 0

    def inc(self, amount: int) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending += amount

    def _flush(self) -> None:
        amount, self._pending = self._pending, 0
        self._counter.inc(amount)


class Metrics:
    def __init__(self, hub: Hub) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Gauge("immer_connections", "Open WebSocket connections", ["mode"],
                                 registry=r)
        self.accepted = Counter("immer_batches_accepted", "Batches committed and published",
                                registry=r)
        self.rejected = Counter("immer_batches_rejected", "Batches refused, by error code",
                                ["code"], registry=r)
        self.rebased = Counter(
            "immer_batches_rebased", "Batches made at an older version, applied with their "
            "array indexes moved over what was committed since", registry=r)
        self.frame_errors = Counter("immer_frame_errors", "Frames that were not valid messages",
                                    registry=r)
        self.apply_seconds = Histogram(
            "immer_apply_seconds", "Time to validate and apply a batch in memory",
            buckets=LATENCY_BUCKETS, registry=r)
        self.commit_seconds = Histogram(
            "immer_commit_seconds", "From a batch's arrival to its publication (durable)",
            buckets=LATENCY_BUCKETS, registry=r)
        self.bytes_in = Counter("immer_received_bytes", "WebSocket bytes received", registry=r)
        self.bytes_out = Counter("immer_sent_bytes", "WebSocket bytes sent", registry=r)
        self.bytes_out_per_turn = PerTurn(self.bytes_out)
        self.commit_races = Counter(
            "immer_commit_races", "Commits refused because another process moved the head "
            "first (shared stores); their batches are validated again", registry=r)
        self.slow_disconnects = Counter(
            "immer_slow_consumer_disconnects", "Connections closed for an overflowing queue",
            registry=r)
        self.hook_errors = Counter(
            "hook_errors", "Hook calls that raised or ran over their time budget",
            ["hook"], registry=r)
        # presence (server/presence_hub.py)
        self.presence_in = Counter("immer_presence_updates_received",
                                   "Presence messages received", registry=r)
        self.presence_broadcast = Counter(
            "immer_presence_updates_broadcast",
            "Presence entries broadcast (each changed entry once per tick and document)",
            registry=r)
        self.presence_dropped = Counter(
            "immer_presence_updates_dropped", "Presence messages dropped, by reason",
            ["reason"], registry=r)
        r.register(_Gauges(hub))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Gauges(Collector):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[GaugeMetricFamily]:
        version = GaugeMetricFamily("immer_document_version", "Current version", labels=["doc"])
        snapshot = GaugeMetricFamily("immer_document_snapshot_version",
                                     "Version of the latest snapshot", labels=["doc"])
        log_len = GaugeMetricFamily("immer_document_log_length",
                                    "Versions of log retained behind the head", labels=["doc"])
        subs = GaugeMetricFamily("immer_document_subscribers", "Connections", labels=["doc"])
        size = GaugeMetricFamily("immer_document_bytes", "Serialized size (approximate)",
                                 labels=["doc"])
        depth = GaugeMetricFamily("immer_outbound_queue_messages",
                                  "Messages queued for sending, over all connections")
        deepest = GaugeMetricFamily("immer_outbound_queue_max_messages",
                                    "The longest outbound queue of one connection")
        peers = GaugeMetricFamily("immer_document_presence_peers",
                                  "Connections present in the document (all processes)",
                                  labels=["doc"])
        for doc, count in self.hub.presence.peers().items():
            peers.add_metric([doc], count)
        total = most = 0
        for doc, session in list(self.hub.sessions.items()):
            version.add_metric([doc], session.document.version)
            snapshot.add_metric([doc], session.snapshots.version)
            log_len.add_metric([doc], session.document.version - session.floor)
            subs.add_metric([doc], len(session.subscribers))
            size.add_metric([doc], session.document.size)
            for sub in session.subscribers:
                total += sub.outbox.depth
                most = max(most, sub.outbox.depth)
        depth.add_metric([], total)
        deepest.add_metric([], most)
        yield from (version, snapshot, log_len, subs, size, depth, deepest, peers)
