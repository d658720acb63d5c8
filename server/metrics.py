"""Prometheus metrics (``GET /metrics``), one registry per application.

Counters and histograms are updated on the hot path (a few microseconds each); per-document and
per-connection gauges are computed only when scraped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .hub import Hub

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5)


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
        self.commit_races = Counter(
            "immer_commit_races", "Commits refused because another process moved the head "
            "first (shared stores); their batches are validated again", registry=r)
        self.slow_disconnects = Counter(
            "immer_slow_consumer_disconnects", "Connections closed for an overflowing queue",
            registry=r)
        self.hook_errors = Counter(
            "hook_errors", "Hook calls that raised or ran over their time budget",
            ["hook"], registry=r)
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
        total = most = 0
        for doc, session in list(self.hub.sessions.items()):
            version.add_metric([doc], session.document.version)
            snapshot.add_metric([doc], session.snapshot_version)
            log_len.add_metric([doc], session.document.version - session.floor)
            subs.add_metric([doc], len(session.subscribers))
            size.add_metric([doc], session.document.size)
            for sub in session.subscribers:
                total += sub.outbox.depth
                most = max(most, sub.outbox.depth)
        depth.add_metric([], total)
        deepest.add_metric([], most)
        yield from (version, snapshot, log_len, subs, size, depth, deepest)
