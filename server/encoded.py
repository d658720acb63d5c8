"""Bytes derived from a serialized text, built once and shared: compressed HTTP bodies and
prepared WebSocket frames.

The hub serializes each version once (a snapshot, a ``patch`` message) and hands the very same
``str`` object to every reader of that version. :class:`DerivedCache` keys what is derived from
a text by that object's identity (it holds the text, so the identity cannot be reused while the
entry lives) plus a variant (a content coding, a frame's extension), so N readers of one version
cost one compression. It is bounded by entries and bytes, least recently used first out.

Also here: ``Accept-Encoding`` negotiation, and the codings for HTTP bodies: brotli (Google's
``brotli`` bindings) and gzip.
"""

from __future__ import annotations

import asyncio
import gzip
from collections import OrderedDict
from collections.abc import Callable, Hashable

import brotli  # type: ignore[import-untyped]

# a body shorter than this is sent as it is: compressing it saves too little to pay for itself
MIN_COMPRESS_BYTES = 1024
# bodies at least this long are compressed in a worker thread (zlib releases the GIL), so a
# megabyte snapshot does not hold the event loop for the ten milliseconds it takes
THREAD_BYTES = 64 << 10
GZIP_LEVEL = 6
# quality 5 of 11: the 100,000-edit gift list in 14% fewer bytes than gzip -6, at about its
# speed (qualities 9-11 save a few percent more for 4x to 100x the time)
BROTLI_QUALITY = 5

Build = Callable[[str], bytes]


def gzip_text(text: str) -> bytes:
    """gzip of the UTF-8 text, byte for byte the same on every call (no timestamp)."""
    return gzip.compress(text.encode(), GZIP_LEVEL, mtime=0)


def brotli_text(text: str) -> bytes:
    """brotli of the UTF-8 text."""
    data: bytes = brotli.compress(text.encode(), quality=BROTLI_QUALITY, mode=brotli.MODE_TEXT)
    return data


# the codings offered, each with its encoder, in order of preference among codings the client
# accepts equally
ENCODERS: dict[str, Build] = {"br": brotli_text, "gzip": gzip_text}
CODINGS = tuple(ENCODERS)


def identity_text(text: str) -> bytes:
    return text.encode()


def negotiate(accept_encoding: str | None) -> str | None:
    """The content coding to use (one of :data:`CODINGS`), or None for the identity.

    RFC 9110 12.5.3: codings with ``q=0`` are refused, ``*`` matches any coding not named, and
    among those accepted the highest q wins (ties: our order of preference)."""
    if not accept_encoding:
        return None
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        name, _, params = item.partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        weights[name] = q
    best: tuple[float, str] | None = None
    for coding in CODINGS:
        q = weights.get(coding, weights.get("*", 0.0))
        if q > 0 and (best is None or q > best[0]):
            best = (q, coding)
    return best[1] if best else None


class DerivedCache:
    """What was derived from a text object, per variant, bounded (LRU)."""

    def __init__(self, max_entries: int = 4096, max_bytes: int = 64 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.builds = 0  # how many values were built (the rest were hits)
        self._entries: OrderedDict[tuple[int, Hashable], tuple[str, bytes]] = OrderedDict()
        self._building: dict[tuple[int, Hashable], tuple[str, asyncio.Future[bytes]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, text: str, variant: Hashable) -> bytes | None:
        key = (id(text), variant)
        entry = self._entries.get(key)
        if entry is None or entry[0] is not text:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, text: str, variant: Hashable, value: bytes) -> None:
        # the text counts too: an entry may be the last thing that keeps it alive
        size = len(text) + len(value)
        if size > self.max_bytes // 4:
            return  # too large to keep: it would push out everything else
        key = (id(text), variant)
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old[0]) + len(old[1])
        self._entries[key] = (text, value)
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _, (old_text, evicted) = self._entries.popitem(last=False)
            self.bytes -= len(old_text) + len(evicted)

    def get(self, text: str, variant: Hashable, build: Build, *, keep: bool = True) -> bytes:
        """The value for (text, variant), built now (on this thread) if it is not cached."""
        value = self.peek(text, variant)
        if value is None:
            value = build(text)
            self.builds += 1
            if keep:
                self.put(text, variant, value)
        return value

    async def get_async(self, text: str, variant: Hashable, build: Build) -> bytes:
        """Like :meth:`get`, but a large text is built in a worker thread, and concurrent
        requests for the same (text, variant) wait for one build."""
        value = self.peek(text, variant)
        if value is not None:
            return value
        if len(text) < THREAD_BYTES:
            return self.get(text, variant, build)
        key = (id(text), variant)
        pending = self._building.get(key)
        if pending is None or pending[0] is not text:
            future = asyncio.get_running_loop().run_in_executor(None, build, text)
            pending = (text, future)
            self._building[key] = pending
            self.builds += 1

            def done(f: asyncio.Future[bytes]) -> None:
                if self._building.get(key) is pending:
                    del self._building[key]
                if not f.cancelled() and f.exception() is None:
                    self.put(text, variant, f.result())

            future.add_done_callback(done)
        # shielded: a reader that goes away does not cancel the build the others wait for
        return await asyncio.shield(pending[1])
