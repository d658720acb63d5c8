"""Prepared frames and shared permessage-deflate (``server.wsfast``), against a real server:
clients that negotiate compression and clients that do not see the same messages; the frames
on the wire are what RFC 6455 and RFC 7692 say, read by a client written here on a raw socket."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import zlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)

from server.cli import WS_PROTOCOL
from server.wsfast import PreparedFrameProtocol, _Flag, _ReceiveQueue, _Timers

from .clients import Message, WsClient
from .conftest import ServerFactory, ServerProcess

BIG = [{"id": f"g{i}", "description": f"gift number {i}", "reservedBy": None}
       for i in range(3000)]


class RawClient:
    """A WebSocket client on a bare socket: the handshake, then frames as they come, with
    their RSV1 bit. Compressed messages are inflated here with zlib, as RFC 7692 7.2.2 says."""

    def __init__(self, server: ServerProcess, path: str, deflate: bool) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}",
                 "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13"]
        if deflate:
            lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.response = head.decode()
        assert self.response.startswith("HTTP/1.1 101"), self.response
        self.rsv1: list[bool] = []

    def _recv(self) -> bytes:
        data = self.sock.recv(1 << 16)
        assert data, "connection closed"
        return data

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += self._recv()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self) -> tuple[int, bool, bytes]:
        b0, b1 = self._read(2)
        assert b0 & 0x80 and not b1 & 0x80, "a final, unmasked frame"
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read(8))[0]
        return b0 & 0x0F, bool(b0 & 0x40), self._read(length)

    def messages(self) -> list[Message]:
        """The messages of the next data frame."""
        opcode, rsv1, payload = self.frame()
        assert opcode == 1, f"a text frame, got opcode {opcode}"
        self.rsv1.append(rsv1)
        if rsv1:
            payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
        data = json.loads(payload)
        return data if isinstance(data, list) else [data]

    def until(self, kind: str) -> list[Message]:
        seen: list[Message] = []
        while not any(m["type"] == kind for m in seen):
            seen.extend(self.messages())
        return seen

    def close(self) -> None:
        self.sock.close()


def drain(client: WsClient, version: int) -> list[Message]:
    """Every message up to the patch (or ack) of ``version``."""
    client.until(lambda m: m.get("version") == version and m["type"] in ("patch", "ack"))
    return [m for m in client.seen if m["type"] != "snapshot"]


def test_compressing_and_plain_clients_receive_the_same_messages(server: ServerProcess) -> None:
    url = server.ws_url("/ws/same")
    with WsClient(url) as zipped, WsClient(url, compression=None) as plain, \
            WsClient(url, compression=None) as writer:
        ext = zipped.ws.protocol.extensions
        assert len(ext) == 1 and isinstance(ext[0], PerMessageDeflate)
        assert ext[0].remote_no_context_takeover and ext[0].local_no_context_takeover
        assert plain.ws.protocol.extensions == []
        for c in (zipped, plain, writer):
            c.until(lambda m: m["type"] == "synced")
        writer.patch(1, [{"op": "add", "path": ["gifts"], "value": BIG}])
        for i in range(2, 40):  # small and large batches, some coalesced under load
            value = "x" * (10 if i % 3 else 2000)
            writer.patch(i, [{"op": "add", "path": [f"k{i}"], "value": value}])
        writer.until(lambda m: m["type"] == "ack" and m["id"] == 39)
        assert drain(zipped, 39) == drain(plain, 39)
        assert zipped.state == plain.state and zipped.state["gifts"] == BIG


def test_frames_on_the_wire(server: ServerProcess) -> None:
    url = f"{server.url}/docs/wire/state"
    httpx.patch(url, json=[{"op": "add", "path": ["gifts"], "value": BIG}]).raise_for_status()
    zipped = RawClient(server, "/ws/wire", deflate=True)
    plain = RawClient(server, "/ws/wire", deflate=False)
    try:
        assert "server_no_context_takeover" in zipped.response
        assert "client_no_context_takeover" in zipped.response
        assert "permessage-deflate" not in plain.response.lower()
        got = [c.until("synced") for c in (zipped, plain)]
        assert got[0] == got[1] and got[0][0]["state"]["gifts"] == BIG
        assert zipped.rsv1[0] and not any(plain.rsv1)  # the snapshot was compressed
        httpx.patch(url, json=[{"op": "add", "path": ["a"], "value": 1}])  # small: as it is
        httpx.patch(url, json=[{"op": "add", "path": ["b"], "value": "y" * 4000}])
        got = [c.until("patch") + c.until("patch") for c in (zipped, plain)]
        assert got[0] == got[1] and [m["version"] for m in got[0]] == [2, 3]
        assert zipped.rsv1[-2:] == [False, True] and not any(plain.rsv1)
    finally:
        zipped.close()
        plain.close()


def test_many_joiners_of_one_version_get_the_same_snapshot(server: ServerProcess) -> None:
    url = f"{server.url}/docs/many/state"
    httpx.patch(url, json=[{"op": "add", "path": ["gifts"], "value": BIG}]).raise_for_status()
    clients = [WsClient(server.ws_url("/ws/many"), compression=None if i % 2 else "deflate")
               for i in range(6)]
    try:
        snaps: list[Any] = [c.expect("snapshot") for c in clients]
        assert all(s == snaps[0] for s in snaps) and snaps[0]["version"] == 1
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("flags", [["--no-ws-prepared-frames"], ["--no-ws-deflate"]])
def test_without_prepared_frames_or_deflate(server_factory: ServerFactory,
                                            flags: list[str]) -> None:
    server = server_factory(*flags)
    url = server.ws_url("/ws/plain")
    with WsClient(url) as a, WsClient(url) as b:
        assert a.ws.protocol.extensions == []  # offered, not negotiated
        for c in (a, b):
            c.until(lambda m: m["type"] == "synced")
        a.patch(1, [{"op": "add", "path": ["x"], "value": "z" * 1000}])
        assert b.until(lambda m: m["type"] == "patch")["version"] == 1
        assert a.expect("ack")["version"] == 1


def test_a_compressed_frame_over_the_limit_is_1009(server_factory: ServerFactory) -> None:
    """The limit applies to the message as decompressed: 20 KB of one letter deflate to a
    few dozen bytes, and are still refused."""
    server = server_factory("--max-frame-bytes", "1000")
    with WsClient(server.ws_url("/ws/limit")) as c:
        assert c.ws.protocol.extensions  # the client compresses what it sends
        c.until(lambda m: m["type"] == "synced")
        c.send('{"type":"patch","id":1,"patches":[],"pad":"' + "x" * 20_000 + '"}')
        with pytest.raises(ConnectionClosed) as closed:
            c.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_graceful_shutdown_closes_with_1012(server_factory: ServerFactory) -> None:
    server = server_factory()
    url = server.ws_url("/ws/bye")
    with WsClient(url) as zipped, WsClient(url, compression=None) as plain:
        for c in (zipped, plain):
            c.until(lambda m: m["type"] == "synced")
        zipped.patch(1, [{"op": "add", "path": ["a"], "value": "z" * 500}])
        assert plain.until(lambda m: m["type"] == "patch")["version"] == 1
        server.stop()  # SIGTERM: uvicorn closes every WebSocket with 1012, then exits
        assert "Finished server process" in server.log()
        for c in (zipped, plain):
            with pytest.raises(ConnectionClosed) as closed:
                c.until(lambda m: False)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012


def test_the_light_receive_queue_and_flag_behave_as_asyncio_queue_and_event() -> None:
    """uvicorn's protocol reads from these as from an asyncio.Queue and an asyncio.Event."""

    async def main() -> None:
        queue = _ReceiveQueue()
        assert queue.empty()
        getter = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        queue.put_nowait(1)
        assert await getter == 1 and queue.empty()
        for i in range(200):  # in order, across the compaction of consumed items
            queue.put_nowait(i)
        assert [await queue.get() for _ in range(150)] == list(range(150))
        queue.put_nowait(200)
        assert queue.qsize() == 51
        assert [await queue.get() for _ in range(51)] == list(range(150, 201))
        cancelled = asyncio.create_task(queue.get())  # a cancelled get loses nothing
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        queue.put_nowait("kept")
        assert await queue.get() == "kept"

        flag = _Flag()
        assert flag.is_set() and await flag.wait()
        flag.clear()
        waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)
        waiters[0].cancel()
        flag.set()
        await asyncio.sleep(0)
        assert waiters[0].cancelled() and all(w.result() for w in waiters[1:])

    asyncio.run(main())


@pytest.mark.parametrize("deflate", [False, True])
def test_the_protocol_has_every_attribute_uvicorns_sets(deflate: bool) -> None:
    """PreparedFrameProtocol writes its own ``__init__`` (what a server's connections share is
    kept once): every attribute uvicorn's ``__init__`` sets must be there, equal but for the
    objects replaced on purpose, or uvicorn's methods would fail on it at run time (a guard for
    uvicorn upgrades). And it must stay under CPython's 30 attributes for a compact instance."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    async def main() -> None:
        config = Config(app, ws=WS_PROTOCOL, ws_per_message_deflate=deflate, ws_max_size=12345,
                        ws_ping_interval=7.0, ws_ping_timeout=3.0, root_path="/r")
        config.load()
        state, app_state = ServerState(), {"k": 1}
        theirs = WebSocketsSansIOProtocol(config, state, app_state)
        ours = PreparedFrameProtocol(config, state, app_state)
        replaced = {"queue", "writable", "conn"}
        for name, value in vars(theirs).items():
            assert hasattr(ours, name), name
            if name not in replaced:
                assert getattr(ours, name) == value, name
        assert ours.conn.max_message_size == theirs.conn.max_message_size == 12345
        assert [type(e) for e in ours.conn.available_extensions] == (
            [ServerPerMessageDeflateFactory] if deflate else [])
        # the second connection of the server shares the first one's common part, but takes
        # the server's default headers as they are when it is made (uvicorn replaces the list
        # every second with a new Date)
        state.default_headers = [(b"date", b"a second later")]
        second = PreparedFrameProtocol(config, state, app_state)
        assert second._server is ours._server
        assert second.default_headers == [(b"date", b"a second later")]
        # under 30 with the three the handshake adds (request, response, scope)
        assert len(vars(ours)) + 3 < 30, sorted(vars(ours))

    asyncio.run(main())


def test_keepalive_timers_fire_by_tick_and_cancel() -> None:
    """The shared keepalive timers: every callback fires once, no earlier than its delay; a
    cancelled one never does; one that raises does not keep the others of its tick from
    running."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        timers = _Timers()
        fired: dict[str, float] = {}
        start = loop.time()

        def record(name: str) -> Callable[[], None]:
            return lambda: fired.setdefault(name, loop.time() - start)

        def fail() -> None:
            raise RuntimeError("one connection's failure")

        timers.call_later(loop, 0.05, fail)
        timers.call_later(loop, 0.05, record("a"))
        timers.call_later(loop, 0.06, record("b"))  # very likely the same tick as a
        timers.call_later(loop, 0.4, record("c"))  # a later tick
        timers.call_later(loop, 0.05, record("cancelled")).cancel()
        await asyncio.sleep(0.4 + 2 * _Timers.TICK)
        assert set(fired) == {"a", "b", "c"}
        early = 0.002  # an event loop may run a timer up to its clock resolution early
        assert fired["a"] >= 0.05 - early and fired["b"] >= 0.06 - early
        assert fired["c"] >= 0.4 - early
        assert timers.due == {}  # nothing left behind

    asyncio.run(main())
