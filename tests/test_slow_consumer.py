"""A client that stops reading must cost the others nothing: against a real server, clients
stall while three others receive a steady stream of batches.

The server keeps each connection's outbound queue bounded (``--max-queue-messages``,
``--max-queue-bytes``) and closes a connection whose queue overflows with 1013; the client
resumes with ``since`` and its epoch and loses nothing. Checked in one test, against phases of
the same stream without stalled clients: how far the others fall behind the writer (counted in
batches: a structural bound, not a timing), the server's memory (RSS from
``/proc/PID/status``) and the server's own queue gauge.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from .clients import Message, WsClient, apply_immer
from .conftest import ServerFactory, ServerProcess

MAX_QUEUE_MESSAGES = 256
MAX_QUEUE_BYTES = 2 << 20
PAD = "x" * 16_000  # each batch carries ~16 KB: 6.4 MB/s to each client
RATE = 400  # batches a second, paced
N = 700  # batches a phase (~2 s)
ROUNDS = 2  # of one phase without and one with stalled clients
STALLED = 4  # stalled clients a phase: one reads again once cut off, the others never do
READERS = 3
MONITOR_EVERY = 0.1  # seconds between samples of RSS and /metrics


def rss_kib(server: ServerProcess) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/PID/status")


def metric(text: str, name: str) -> float:
    """One unlabelled sample (a regex: the full parser would stall the clients' event loop for
    a millisecond or two on every scrape)."""
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"no {name} in /metrics"
    return float(found.group(1))


class StalledClient:
    """A protocol-1 client on a raw socket (websockets' sans-I/O protocol, driven by hand) that
    reads its snapshot and then nothing: its receive buffer is tiny (SO_RCVBUF, and a 4 KiB
    StreamReader that pauses the transport), so the server's writes to it stall as soon as the
    kernel buffers are full. It keeps a replica of what it did read, like ``WsClient``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.state: Any = None
        self.version: int | None = None
        self.epoch = ""
        self.synced = False
        self.eof = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, port: int) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=4096)
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        await self.read_until(lambda: self.synced)

    async def read_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not done() and not self.eof:
            data = await asyncio.wait_for(self.reader.read(1 << 14),
                                          timeout=max(0.1, deadline - time.monotonic()))
            self._feed(data)
            await asyncio.sleep(0)  # read() does not yield while data is buffered: let the
            # readers being measured run between chunks

    async def drain(self) -> None:
        """Read again: everything the server sent, up to its close frame."""
        await self.read_until(lambda: self.close_code is not None, timeout=20)
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()

    def _flush(self) -> None:
        assert self.writer is not None
        for data in self.protocol.data_to_send():
            if data:
                self.writer.write(data)

    def _feed(self, data: bytes) -> None:
        if data:
            self.protocol.receive_data(data)
        else:
            self.eof = True
            self.protocol.receive_eof()
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                assert event.status_code == 101, event
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                parsed = json.loads(event.data)
                for message in parsed if isinstance(parsed, list) else [parsed]:
                    self._track(message)
            elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                close = Close.parse(event.data)
                self.close_code, self.close_reason = close.code, close.reason
        self._flush()  # pongs, the close reply

    def _track(self, message: Message) -> None:
        kind = message["type"]
        if kind == "snapshot":
            self.state, self.version = message["state"], message["version"]
            self.epoch = message["epoch"]
        elif kind == "synced":
            self.synced = True
        elif kind == "patch":
            assert self.version is not None
            assert message["version"] == self.version + 1, f"gap: {self.version} -> {message}"
            self.state, self.version = apply_immer(self.state, message["patches"]), \
                message["version"]


@dataclass
class Phase:
    sent: int = 0  # batches the writer has sent so far
    received: int = 0  # batches the readers have received, summed
    lag: int = 0  # the most batches a reader was behind the writer when it received one
    rss: list[int] = field(default_factory=list)
    queue_max: list[float] = field(default_factory=list)
    queued: list[float] = field(default_factory=list)
    slow_disconnects: float = 0.0  # during this phase


async def recv_messages(ws: ClientConnection) -> list[Message]:
    data = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
    return data if isinstance(data, list) else [data]


async def join(server: ServerProcess, doc: str) -> tuple[ClientConnection, int]:
    ws = await connect(server.ws_url(f"/ws/{doc}"), max_size=None)
    while True:
        for m in await recv_messages(ws):
            if m["type"] == "synced":
                return ws, int(m["version"])


async def read_stream(ws: ClientConnection, first: int, phase: Phase) -> None:
    """Receive versions first+1 .. first+N in order; on each, how many batches the writer had
    sent beyond it."""
    version = first
    while version < first + N:
        for m in await recv_messages(ws):
            if m["type"] != "patch":
                continue
            assert m["version"] == version + 1, f"gap: {version} -> {m['version']}"
            version = m["version"]
            phase.received += 1
            phase.lag = max(phase.lag, phase.sent - (version - first))


async def run_phase(server: ServerProcess, doc: str, stalled: list[StalledClient]) -> Phase:
    """Stream N batches to READERS clients (and to ``stalled``, which do not read). Once the
    server has cut all of them off, the first reads again, to find its close frame; the others
    stay as they are (a server that never cut them off would keep queueing for them)."""
    phase = Phase()
    for client in stalled:
        await client.open(server.port)
    readers = [await join(server, doc) for _ in range(READERS)]
    writer, first = await join(server, doc)
    assert all(v == first for _, v in readers)
    done = asyncio.Event()
    resumed: list[asyncio.Task[None]] = []

    async def acks() -> None:
        acked = 0
        while acked < N:
            acked += sum(m["type"] == "ack" for m in await recv_messages(writer))

    async def write() -> None:
        # a steady stream: batch i leaves at start + i / RATE (pacing the load, not waiting
        # for anything)
        start = time.perf_counter()
        for i in range(N):
            delay = start + i / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            value = {"seq": i, "pad": PAD}
            await writer.send(json.dumps({"type": "patch", "id": i, "patches": [
                {"op": "replace", "path": ["tick"], "value": value}]}))
            phase.sent += 1
            await asyncio.sleep(0)  # a late writer catching up still lets the readers run

    async def monitor() -> None:
        # the same sampling in both kinds of phase, so it loads the server the same way
        async with httpx.AsyncClient() as http:
            before = None
            while not done.is_set():
                phase.rss.append(rss_kib(server))
                text = (await http.get(f"{server.url}/metrics")).text
                phase.queue_max.append(metric(text, "immer_outbound_queue_max_messages"))
                phase.queued.append(metric(text, "immer_outbound_queue_messages"))
                cut = metric(text, "immer_slow_consumer_disconnects_total")
                before = cut if before is None else before
                phase.slow_disconnects = cut - before
                if stalled and phase.slow_disconnects >= len(stalled) and not resumed:
                    # the server gave up on them: one reads again at once, and must find
                    # the close frame after what was already in flight
                    resumed.append(asyncio.create_task(stalled[0].drain()))
                await asyncio.sleep(MONITOR_EVERY)  # a sampling interval, not a wait

    monitoring = asyncio.create_task(monitor())
    try:
        await asyncio.wait_for(asyncio.gather(
            write(), acks(), *(read_stream(ws, first, phase) for ws, _ in readers)), timeout=60)
    finally:
        done.set()
        await monitoring
        for ws in [writer, *(ws for ws, _ in readers)]:
            await ws.close()
    if resumed:
        await asyncio.wait_for(resumed[0], timeout=30)
    return phase


@pytest.fixture
def fast_store(tmp_path: Path) -> Iterator[str]:
    """SQLite, so the log does not live in the server's memory and RSS shows the queues; on
    tmpfs when there is one, so the fsync of a WAL checkpoint does not stall the stream."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() and os.access(shm, os.W_OK)
                                     else tmp_path) as tmp:
        yield f"sqlite:///{tmp}/slow.db?synchronous=normal"


def test_stalled_clients_are_cut_off_without_slowing_the_others(
    server_factory: ServerFactory, fast_store: str
) -> None:
    server = server_factory(
        "--max-queue-messages", str(MAX_QUEUE_MESSAGES), "--max-queue-bytes",
        str(MAX_QUEUE_BYTES), "--rate", "0", "--snapshot-every", "64",
        "--retain-versions", "100000", store=fast_store)
    doc = "stream"
    baseline: list[Phase] = []
    phases: list[Phase] = []
    stalled: list[list[StalledClient]] = []

    async def rounds(count: int) -> None:
        # phases without and with stalled clients alternate (A B, B A, A B, ...), so whatever
        # else the machine does at the time is spread over both conditions
        for _ in range(count):
            order = (False, True) if len(phases) % 2 == 0 else (True, False)
            for with_stalled in order:
                if with_stalled:
                    clients = [StalledClient(server.ws_url(f"/ws/{doc}")) for _ in range(STALLED)]
                    stalled.append(clients)
                    phases.append(await run_phase(server, doc, clients))
                else:
                    baseline.append(await run_phase(server, doc, []))

    async def measure() -> None:
        try:
            await rounds(ROUNDS)
        finally:
            for clients in stalled:
                for client in clients:
                    client.close()

    asyncio.run(measure())

    # every stalled client was cut off (1013 for the one that read again, after what it read,
    # in order), and none of the others was
    assert all(p.slow_disconnects == 0 for p in baseline)
    assert all(p.slow_disconnects == STALLED for p in phases)
    for clients in stalled:
        assert clients[0].close_code == 1013, (
            f"closed with {clients[0].close_code} (None: no close frame)")
        assert clients[0].version is not None and clients[0].synced
    # the queues never grew past the bound, and the gauges saw the stalled ones fill up
    queue_max = max(q for p in baseline + phases for q in p.queue_max)
    assert queue_max <= MAX_QUEUE_MESSAGES, queue_max
    assert all(max(p.queue_max) > 0 and max(p.queued) > 0 for p in phases)
    # memory. A server that queued without bound for the stalled clients (which stay
    # connected to the end) would hold ~16 KB per batch per client: STALLED * 16 KB * N =
    # 45 MB in the first stalled phase, less the few MB the socket buffers take, and more in
    # each later phase. Bounded, each costs at most MAX_QUEUE_BYTES; the rest of the variation
    # is the allocator, and the queues of readers running late on a loaded machine.
    reference = max(baseline[0].rss)  # before any client stalled
    growth_mib = (max(r for p in baseline + phases for r in p.rss) - reference) / 1024
    assert growth_mib < 40, f"RSS grew {growth_mib:.1f} MiB with stalled clients"

    # the others did not wait for the stalled ones. A server that waited for a stalled client
    # before serving the others would hold every reader at the stalled client's position until
    # it cut that client off, at least MAX_QUEUE_MESSAGES batches behind the writer (plus what
    # the socket buffers hold); the readers here were never more than half that behind (at the
    # paced rate, 0.3 s: a wide margin for a loaded machine, where a timing would flake).
    assert all(p.received == READERS * N for p in baseline + phases)
    worst = max(p.lag for p in phases)
    assert worst < MAX_QUEUE_MESSAGES // 2, (
        f"a reader was {worst} batches behind the writer with stalled clients "
        f"(without: {max(p.lag for p in baseline)})")

    # each resumes where it stopped and loses nothing
    head = (len(baseline) + len(phases)) * N
    for clients in stalled:
        client = clients[0]
        last = client.version
        url = server.ws_url(f"/ws/{doc}?since={last}&epoch={client.epoch}")
        with WsClient(url) as resumed:
            resumed.state, resumed.version = client.state, last
            try:
                # the versions it missed, or a snapshot when they outweigh the state
                first = resumed.recv()
                assert first["type"] in ("patch", "synced", "snapshot"), first["type"]
                if first["type"] != "synced":
                    resumed.until(lambda m: m["type"] == "synced", timeout=30)
            except ConnectionClosed as closed:
                raise AssertionError(
                    f"resuming {head - last} versions behind was cut off again: {closed}"
                ) from None
            r = httpx.get(f"{server.url}/docs/{doc}/state")
            assert resumed.version == int(r.headers["etag"].removeprefix("W/").strip('"')) == head
            assert resumed.state == r.json()


def test_resuming_a_backlog_longer_than_the_queue_bound(server_factory: ServerFactory) -> None:
    """A client cut off with 1013 is, by construction, further behind than the queue bound.
    Resuming with ``since`` must not queue the whole backlog at once and overflow again (the
    server may stream it, or send a snapshot instead): the protocol promises it loses nothing."""
    server = server_factory("--max-queue-messages", "16", "--rate", "0")
    with WsClient(server.ws_url("/ws/backlog")) as c:
        snapshot = c.expect("snapshot")
        c.expect("synced")
    url = f"{server.url}/docs/backlog/state"
    for i in range(100):
        assert httpx.patch(url, json=[{"op": "add", "path": [f"k{i}"], "value": i}]
                           ).status_code == 200
    with WsClient(server.ws_url(f"/ws/backlog?since=0&epoch={snapshot['epoch']}")) as resumed:
        resumed.state, resumed.version = snapshot["state"], 0
        try:
            resumed.until(lambda m: m["type"] == "synced", timeout=30)
        except ConnectionClosed as closed:
            raise AssertionError(f"resuming 100 versions behind was cut off: {closed}") from None
        assert resumed.version == 100
        assert resumed.state == httpx.get(url).json()


def test_a_burst_does_not_cut_off_clients_that_read(server_factory: ServerFactory) -> None:
    """A client that pipelines more batches than --max-queue-messages, and a client that
    watches, both reading everything promptly, are not slow consumers: what is queued for
    them goes out coalesced in one frame. Neither may be cut off with 1013."""
    server = server_factory("--max-queue-messages", "16", "--rate", "0")
    url = f"{server.url}/docs/burst/state"
    with WsClient(server.ws_url("/ws/burst")) as writer, \
            WsClient(server.ws_url("/ws/burst")) as watcher:
        for client in (writer, watcher):
            client.expect("snapshot")
            client.expect("synced")
        for i in range(100):
            writer.patch(i, [{"op": "add", "path": [f"k{i}"], "value": i}])
        for name, client, kind in (("writer", writer, "ack"), ("watcher", watcher, "patch")):
            try:
                for _ in range(100):
                    client.until(lambda m, kind=kind: m["type"] == kind)
            except ConnectionClosed as closed:
                raise AssertionError(f"the {name} was cut off while reading: {closed}") from None
        assert writer.version == watcher.version == 100
        assert writer.state == watcher.state == httpx.get(url).json()
