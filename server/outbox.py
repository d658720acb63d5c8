"""A connection's outbound side: a bounded queue that coalesces under load.

The apply path only ever calls :meth:`Outbox.put`, which appends to a deque and never awaits, so
one slow client cannot delay a document or the other clients. A per-connection sender task
(:meth:`Outbox.run`) takes everything queued since its last send and writes it as one frame: a
JSON array of messages (protocol 1) or one concatenated bare array (lesson mode). A client whose
queue exceeds its bounds is closed with 1013; it can resume with ``since`` and lose nothing.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from .errors import CloseCode
from .messages import coalesce, coalesce_bare

SendText = Callable[[str], Awaitable[None]]

# at most this many characters go into one coalesced frame (a single larger message still goes)
MAX_COALESCED = 1 << 20


class Outbox:
    def __init__(
        self,
        send_text: SendText,
        *,
        lesson: bool = False,
        max_messages: int = 10_000,
        max_bytes: int = 16 << 20,
    ) -> None:
        self._send_text = send_text
        self.lesson = lesson
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._queue: deque[str] = deque()
        self._bytes = 0
        self._wakeup = asyncio.Event()
        self.closed = False
        self.done = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self.sent_frames = 0
        self.sent_bytes = 0

    @property
    def depth(self) -> int:
        return len(self._queue)

    def put(self, frame: str) -> None:
        """Queue one message (never blocks). Over the bounds, the connection is closed."""
        if self.closed:
            return
        self._queue.append(frame)
        self._bytes += len(frame)
        if len(self._queue) > self.max_messages or self._bytes > self.max_bytes:
            self.shutdown(CloseCode.TRY_AGAIN_LATER, "outbound queue overflow: resume with since")
            return
        self._wakeup.set()

    def shutdown(self, code: int | None, reason: str = "") -> None:
        """Drop what is queued and stop; ``code`` (if any) is the close code the connection
        should be closed with. Safe from any context; the first call wins."""
        if self.closed:
            return
        self.closed = True
        self.close_code, self.close_reason = code, reason
        self._queue.clear()
        self._bytes = 0
        self._wakeup.set()
        self.done.set()

    def _take(self) -> str:
        frames = [self._queue.popleft()]
        size = len(frames[0])
        while self._queue and size + len(self._queue[0]) <= MAX_COALESCED:
            frame = self._queue.popleft()
            size += len(frame)
            frames.append(frame)
        self._bytes -= size
        return coalesce_bare(frames) if self.lesson else coalesce(frames)

    async def run(self) -> None:
        """Send what is queued, coalesced, until shut down. Closing the socket is the caller's
        job: it waits on ``done`` and may cancel this task if a send is stuck."""
        while not self.closed:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue and not self.closed:
                frame = self._take()
                await self._send_text(frame)
                self.sent_frames += 1
                self.sent_bytes += len(frame)
