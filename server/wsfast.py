"""Prepared WebSocket frames: a uvicorn protocol that lets the app write frame bytes directly.

uvicorn's WebSocket protocols build and write a frame per ``send``, per connection. A server
frame is unmasked, so the frame of a message is the same bytes for every connection that
negotiated the same extensions: this module builds it once (per text object and extension
variant, cached in :class:`~server.encoded.DerivedCache`) and writes those bytes.

:class:`PreparedFrameProtocol` is uvicorn's sans-I/O ``websockets`` protocol with three changes,
selected with uvicorn's ``ws`` setting by import string (``server.wsfast:PreparedFrameProtocol``):

- when ``ws_per_message_deflate`` is on, permessage-deflate is negotiated with
  ``server_no_context_takeover`` (each message is compressed on its own, so one compressed
  frame serves every compressing connection) and ``client_no_context_takeover`` (no inflater
  kept per idle connection); messages under :data:`MIN_DEFLATE` bytes are sent uncompressed;
- the ASGI scope gets the extension :data:`EXTENSION`: ``{"writer": FrameWriter}``;
- an idle connection costs less memory: uvicorn's receive queue (an ``asyncio.Queue``: three
  deques and an event, about 3 KiB) and its ``writable`` event become :class:`_ReceiveQueue`
  and :class:`_Flag`; the handshake's request and response (their headers, about 4 KiB) are
  let go once the connection is accepted (the ASGI scope keeps the request's headers); what
  all connections of a server share (config, app, logger, ...) is kept once, in
  :class:`_Server`, rather than in each connection's attributes (a connection then has few
  enough for CPython's compact instance layout: about 1 KiB less); keepalive pings fall due on
  one loop timer per quarter second (:class:`_Timers`), not on a timer handle per connection.

Everything else (routing, handshake, ping/pong, close codes, ``ws_max_size``, graceful
shutdown) is uvicorn's. An app that finds no extension in the scope (another server, a test
client) sends through ASGI as before; see :func:`frame_writer`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import weakref
import zlib
from collections.abc import Callable, MutableMapping
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from .encoded import THREAD_BYTES, DerivedCache

EXTENSION = "immer.prepared_frames"
# a message shorter than this (in characters) is sent uncompressed even when deflate is on: a
# small message saves a few hundred bytes at most, and costs every client an inflate. At 256,
# rounds coalesced under load crossed it, and 5,000 Node clients (whose ws inflates through a
# thread pool) fell further behind with every compressed round, the server's writes to their
# full sockets growing costlier in turn. 1024 is also the default threshold of Node's ws.
MIN_DEFLATE = 1024
# a frame shared by many (a publication, a snapshot) is compressed once, at level 6; a
# coalesced frame is built for one connection under load, and sent uncompressed unless large
SHARED_LEVEL = 6

# frames by (text object, variant): variant 0 is uncompressed, 9..15 deflate with that window
# A publication's frame is needed while it fans out (and by subscribers that send it a little
# later from their queue), so the cache of small frames is small; snapshots (large texts) get
# their own, so that a stream of publications does not push them out.
FRAMES = DerivedCache(max_entries=256, max_bytes=8 << 20)
LARGE_FRAMES = DerivedCache(max_entries=16, max_bytes=128 << 20)  # a 16 MiB document fits


def _cache(text: str) -> DerivedCache:
    return LARGE_FRAMES if len(text) >= THREAD_BYTES else FRAMES

_DEFLATE = ServerPerMessageDeflateFactory(
    server_no_context_takeover=True,
    client_no_context_takeover=True,
)


def _header(length: int, rsv1: bool) -> bytes:
    first = 0xC1 if rsv1 else 0x81  # FIN, (RSV1), text
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def text_frame(text: str) -> bytes:
    """An unmasked, unfragmented, uncompressed text frame."""
    payload = text.encode()
    return _header(len(payload), False) + payload


def deflate_frame(text: str, wbits: int, level: int = SHARED_LEVEL) -> bytes:
    """A permessage-deflate text frame compressed on its own (RFC 7692 7.2.1: a sync flush with
    its final ``00 00 ff ff`` removed); uncompressed (RSV1 clear) when that is not smaller."""
    payload = text.encode()
    compressor = zlib.compressobj(level, zlib.DEFLATED, -wbits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    data = data[:-4]
    if len(data) >= len(payload):
        return _header(len(payload), False) + payload
    return _header(len(data), True) + data


def _builder(variant: int, level: int = SHARED_LEVEL) -> Callable[[str], bytes]:
    if variant == 0:
        return text_frame
    return lambda text: deflate_frame(text, variant, level)


# the frame written last, as (text, variant, frame): a publication is written to every
# subscriber in a row, so the cache is looked up once per publication, not once per connection.
# Replaced in one assignment: a reader in another thread's event loop sees a consistent triple.
_last: tuple[str | None, int, bytes] = (None, -1, b"")


class FrameWriter:
    """Writes a text message to one connection as a prepared frame shared with others."""

    __slots__ = ("_protocol", "_wbits")

    def __init__(self, protocol: PreparedFrameProtocol, wbits: int) -> None:
        self._protocol = protocol
        self._wbits = wbits  # 0: no compression negotiated

    def _variant(self, text: str) -> int:
        return self._wbits if self._wbits and len(text) >= MIN_DEFLATE else 0

    def _open(self) -> bool:
        p = self._protocol
        return not (p.close_sent or p.disconnected or p.conn.state is not State.OPEN
                    or p.transport.is_closing())

    def try_write(self, text: str, shared: bool = True) -> bool:
        """Write ``text`` now, if the connection is open and its transport is not backed up
        (and its frame is at hand, or cheap to build here); False: nothing was written.
        ``shared``: other connections get the same text (its frame is cached); else it is a
        coalesced frame for this connection only, sent uncompressed (compressing it per
        connection is what shared frames avoid) unless it is large."""
        p = self._protocol
        if not p.writable.is_set() or not self._open():
            return False
        variant = self._variant(text)
        if not shared:
            if variant and len(text) >= THREAD_BYTES:
                return False  # the sender compresses it, off the event loop
            p.transport.write(text_frame(text))
            return True
        global _last
        last = _last
        if text is last[0] and variant == last[1]:  # the rest of a fan-out
            frame = last[2]
        else:
            cache = _cache(text)
            peeked = cache.peek(text, variant)
            if peeked is None:
                if variant and len(text) >= THREAD_BYTES:
                    return False  # compressing it would hold the event loop: the sender does
                peeked = cache.get(text, variant, _builder(variant))
            _last = (text, variant, peeked)
            frame = peeked
        p.transport.write(frame)
        return True

    async def send(self, text: str) -> None:
        """Write ``text`` once the transport accepts more (like an ASGI ``websocket.send``).

        The sender task's path: a queued publication (whose frame is usually built already),
        a snapshot (built in a worker thread, once per version), or a coalesced frame (for
        this connection only: not kept, and uncompressed unless large)."""
        p = self._protocol
        variant = self._variant(text)
        frame = _cache(text).peek(text, variant)
        if frame is None:
            if len(text) >= THREAD_BYTES:
                frame = await LARGE_FRAMES.get_async(text, variant, _builder(variant))
            else:
                frame = text_frame(text)
        await p.writable.wait()
        if not self._open():
            raise ClientDisconnected()
        p.transport.write(frame)


class _ReceiveQueue:
    """What uvicorn's protocol uses of ``asyncio.Queue`` (``put_nowait``, ``get``, ``empty``),
    for its one consumer, the ASGI app's ``receive``; empty, it holds two attributes."""

    __slots__ = ("_head", "_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._head = 0
        self._waiter: asyncio.Future[None] | None = None

    def empty(self) -> bool:
        return self._head >= len(self._items)

    def qsize(self) -> int:
        return len(self._items) - self._head

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while self.empty():
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        item = self._items[self._head]
        self._head += 1
        if self._head == len(self._items):
            self._items.clear()
            self._head = 0
        elif self._head >= 64:
            del self._items[:self._head]
            self._head = 0
        return item


class _Flag:
    """What uvicorn's protocol uses of ``asyncio.Event`` for ``writable`` (``set``, ``clear``,
    ``is_set``, ``wait``), with no deque until somebody waits."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


class _Timer:
    """A keepalive timer of :class:`_Timers` (what uvicorn's protocol uses of a TimerHandle:
    ``cancel``)."""

    __slots__ = ("_tick", "_timers", "callback")

    def __init__(self, timers: _Timers, tick: int, callback: Callable[[], None]) -> None:
        self._timers = timers
        self._tick = tick
        self.callback = callback

    def cancel(self) -> None:
        due = self._timers.due.get(self._tick)
        if due is not None:
            due.discard(self)


class _Timers:
    """The keepalive pings of one event loop's connections, by the tick (:attr:`TICK` seconds)
    they fall due in: one loop timer per tick for all the connections that ping in it, instead of
    one per connection (a uvloop timer handle, kept by every idle connection between two pings,
    is about 0.5 KiB). A ping is sent up to one tick late."""

    TICK = 0.25

    def __init__(self) -> None:
        self.due: dict[int, set[_Timer]] = {}

    def call_later(self, loop: asyncio.AbstractEventLoop, delay: float,
                   callback: Callable[[], None]) -> _Timer:
        tick = math.ceil((loop.time() + delay) / self.TICK)
        timer = _Timer(self, tick, callback)
        due = self.due.get(tick)
        if due is None:
            due = self.due[tick] = set()
            loop.call_at(tick * self.TICK, self._fire, tick)
        due.add(timer)
        return timer

    def _fire(self, tick: int) -> None:
        for timer in self.due.pop(tick, ()):
            try:
                timer.callback()
            except Exception:  # one connection's failure does not skip the others' pings
                logging.getLogger("uvicorn.error").exception("keepalive ping failed")


# per event loop (not holding it: the loop's scheduled callbacks hold the _Timers)
_TIMERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Timers] = (
    weakref.WeakKeyDictionary())


def _timers(loop: asyncio.AbstractEventLoop) -> _Timers:
    timers = _TIMERS.get(loop)
    if timers is None:
        timers = _TIMERS[loop] = _Timers()
    return timers


class _Server:
    """What every connection of one uvicorn server has in common: uvicorn's protocol keeps it in
    each connection's own attributes. Kept once, it leaves a connection 27 attributes of its
    own (24, and the handshake's request, response and scope), few enough for CPython to store
    them as a compact array of values (about 0.3 KiB) instead of a dictionary of its own (about
    1.3 KiB over 30 attributes). Not here: the server's ``default_headers`` (uvicorn replaces
    that list every second, with a new ``Date``), which each connection takes when it is made,
    as uvicorn's protocol does."""

    __slots__ = ("app", "app_state", "asgi_version", "config", "connections", "logger",
                 "ping_interval", "ping_timeout", "root_path", "tasks")

    def __init__(self, config: Config, server_state: ServerState,
                 app_state: dict[str, Any]) -> None:
        self.config = config
        self.app = config.loaded_app
        self.logger = logging.getLogger("uvicorn.error")
        self.root_path = config.root_path
        self.asgi_version = config.asgi_version
        self.app_state = app_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.ping_interval = config.ws_ping_interval
        self.ping_timeout = config.ws_ping_timeout


# per uvicorn server (its state object lives as long as the server)
_SERVERS: weakref.WeakKeyDictionary[ServerState, _Server] = weakref.WeakKeyDictionary()


def _server(config: Config, server_state: ServerState, app_state: dict[str, Any]) -> _Server:
    shared = _SERVERS.get(server_state)
    if shared is None or shared.config is not config or shared.app_state is not app_state:
        shared = _SERVERS[server_state] = _Server(config, server_state, app_state)
    return shared


class _Shared:
    """An attribute of uvicorn's protocol read from the connection's :class:`_Server`."""

    __slots__ = ("name",)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, protocol: PreparedFrameProtocol | None, owner: type) -> Any:
        if protocol is None:
            return self
        return getattr(protocol._server, self.name)


class PreparedFrameProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O websockets protocol, with shared deflate and a :class:`FrameWriter`
    in the ASGI scope.

    ``__init__`` is uvicorn's, less what every connection of a server shares (read through
    :class:`_Shared` from one :class:`_Server`), with the lighter queue and flag and our deflate
    settings; ``tests/test_wsfast.py`` checks that it sets every attribute uvicorn's does."""

    config = _Shared()
    app = _Shared()
    logger = _Shared()
    root_path = _Shared()
    asgi_version = _Shared()
    app_state = _Shared()
    connections = _Shared()
    tasks = _Shared()
    ping_interval = _Shared()
    ping_timeout = _Shared()
    close_timeout = 10.0

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not config.loaded:
            config.load()
        self._server = _server(config, server_state, app_state)
        self.loop = _loop or asyncio.get_event_loop()
        self.default_headers = server_state.default_headers  # the current Date: not shared
        # connection state
        self.transport = None  # type: ignore[assignment]
        self.server = None
        self.client = None
        self.scheme = None  # type: ignore[assignment]
        # WebSocket state
        self.queue = _ReceiveQueue()  # type: ignore[assignment]
        self.handshake_initiated = False
        self.handshake_complete = False
        self.close_sent = False
        self.disconnected = False
        self.close_timer = None
        self.initial_response = None
        self.conn = ServerProtocol(
            extensions=[_DEFLATE] if config.ws_per_message_deflate else [],
            max_size=config.ws_max_size, logger=self._server.logger)
        self.read_paused = False
        self.writable = _Flag()  # type: ignore[assignment]
        # keepalive state
        self.ping_timer = None
        self.pong_timer = None
        self.pending_ping_payload = None
        self.ping_sent_at = 0.0
        self.last_ping_rtt = 0.0
        # incoming message state
        self.frames = []
        self.curr_msg_data_type = "bytes"

    def schedule_ping(self) -> None:
        """uvicorn's, on the loop's shared keepalive timers (:class:`_Timers`)."""
        assert self.ping_interval is not None
        delay = max(0.0, self.ping_interval - self.last_ping_rtt)
        self.ping_timer = _timers(self.loop).call_later(  # type: ignore[assignment]
            self.loop, delay, self.send_keepalive_ping)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code != 101:
            return
        wbits = 0
        for extension in self.conn.extensions:
            if isinstance(extension, PerMessageDeflate) and extension.local_no_context_takeover:
                wbits = extension.local_max_window_bits
        # the ASGI task starts on the next loop iteration: it sees this in its scope
        self.scope["extensions"][EXTENSION] = {"writer": FrameWriter(self, wbits)}

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and message["type"] == "websocket.accept":
            # the response is sent; neither it nor the request is read again (websockets'
            # parser keeps the request object as a local variable: empty its headers)
            self.request.headers.clear()
            self.request = self.response = None  # type: ignore[assignment]


def frame_writer(scope: MutableMapping[str, Any]) -> FrameWriter | None:
    """The connection's :class:`FrameWriter`, or None when the server is not running
    :class:`PreparedFrameProtocol`."""
    extension = (scope.get("extensions") or {}).get(EXTENSION)
    return extension.get("writer") if extension else None
