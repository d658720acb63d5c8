"""A connection's outbound side: a bounded queue that coalesces under load.

The apply path only ever calls :meth:`Outbox.put`, which appends to a deque and never awaits, so
one slow client cannot delay a document or the other clients. A sender task takes everything
queued since its last send and writes it as one frame: a JSON array of messages (protocol 1) or
one concatenated bare array (lesson mode). The task exists only while something is queued: an
idle connection holds no task and no event, only this object. A client whose queue exceeds its
bounds while its socket is backed up is closed with 1013; it can resume with ``since`` and lose
nothing. :meth:`Outbox.shutdown` (a close code, or the client gone because a send failed) calls
``on_done`` once: the connection's handler stops reading and closes the socket.

With a ``write_now`` callable (the transport's :class:`~server.wsfast.FrameWriter`), messages
put while the queue is empty and nothing is being sent are written at the end of the current
turn of the event loop (one callback per turn for every connection of the process, no task
woken): one message as it is (its frame is shared with every subscriber), several (a round of
publications) coalesced as the sender would; the same messages coalesced for many connections
give the very same text object (:meth:`_EndOfTurn.coalesced`), so its frame too is built once. When
``write_now`` refuses (the socket is backed up) they are queued as without it. Messages of
:data:`LARGE` characters or more (snapshots) are then sent as frames of their own, so their
prepared frame is shared by every newcomer to that version.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from .errors import CloseCode
from .messages import coalesce, coalesce_bare

SendText = Callable[[str], Awaitable[None]]


class WriteNow(Protocol):
    """Write a text now, or refuse (False). ``shared``: the text is a message that other
    connections get too (worth preparing once), not a coalesced frame for this one only."""

    def __call__(self, text: str, shared: bool = True, /) -> bool: ...


# at most this many characters go into one coalesced frame (a single larger message still goes)
MAX_COALESCED = 1 << 20
# with ``write_now``, a message this large is never coalesced with others
LARGE = 64 << 10
# coalesced texts kept for the other connections of the same round, per event loop (by count;
# only texts under LARGE are kept, so this holds at most a few MB)
SHARED_COALESCED = 256

log = logging.getLogger(__name__)


def _coalesce(frames: list[str], lesson: bool) -> str:
    """Messages as one frame's text: a JSON array of messages, or one bare array (lesson)."""
    return coalesce_bare(frames) if lesson else coalesce(frames)


class _EndOfTurn:
    """The outboxes put to during this turn of an event loop, written by one callback at its
    end: a publication to N connections schedules one callback, not N. Also the loop's
    recently coalesced texts (:meth:`coalesced`, the newest :data:`SHARED_COALESCED`). It
    holds no reference to its loop, so the entry of a loop that is gone goes with it."""

    __slots__ = ("coalesced_texts", "pending")

    def __init__(self) -> None:
        self.pending: list[Outbox] = []
        self.coalesced_texts: dict[tuple[bool, tuple[str, ...]], str] = {}

    def add(self, outbox: Outbox) -> None:
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.run)
        self.pending.append(outbox)

    def coalesced(self, frames: list[str], lesson: bool) -> tuple[str, bool]:
        """``frames`` as one frame's text (a JSON array of messages, or one bare array in
        lesson mode), and whether another connection had the same round (the same text
        objects) before: then the very same text object, whose frame is worth building once
        and sharing. A round with a message for one connection only (an ack) is unique to it:
        its text is kept in case, but its frame is neither compressed nor cached."""
        key = (lesson, tuple(frames))
        texts = self.coalesced_texts
        text = texts.get(key)
        if text is not None:
            return text, True
        text = _coalesce(frames, lesson)
        if len(text) < LARGE:
            if len(texts) >= SHARED_COALESCED:
                del texts[next(iter(texts))]
            texts[key] = text
        return text, False

    def run(self) -> None:
        pending, self.pending = self.pending, []
        for outbox in pending:
            try:
                outbox._write_turn()
            except Exception:  # one connection's failure must not cost the others their turn
                log.exception("writing to a connection failed")
                outbox.shutdown(None)


_END_OF_TURN: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _EndOfTurn] = (
    weakref.WeakKeyDictionary())


def _end_of_turn() -> _EndOfTurn:
    loop = asyncio.get_running_loop()
    turn = _END_OF_TURN.get(loop)
    if turn is None:
        turn = _END_OF_TURN[loop] = _EndOfTurn()
    return turn


class Outbox:
    def __init__(
        self,
        send_text: SendText,
        *,
        lesson: bool = False,
        max_messages: int = 10_000,
        max_bytes: int = 16 << 20,
        on_sent: Callable[[int], None] | None = None,
        write_now: WriteNow | None = None,
    ) -> None:
        self._send_text = send_text
        self._write_now = write_now
        self.lesson = lesson
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._on_sent = on_sent
        # created when first needed and dropped when drained: an idle connection has none
        self._queue: deque[str] | None = None
        self._turn: list[str] = []  # put in this turn of the loop, written at its end
        self._eot: _EndOfTurn | None = None  # the loop's end-of-turn writer, once needed
        self._bytes = 0
        # the catch-up at the front of the queue is not counted against the bounds: it is
        # bounded by the retention window, and a resuming client is by definition behind
        self._backlog = 0
        self._backlog_bytes = 0
        self._sending = False
        self._task: asyncio.Task[None] | None = None  # the sender, while something is queued
        self.closed = False
        # called once, by the first shutdown: the connection's handler stops and closes
        self.on_done: Callable[[], None] | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.sent_frames = 0
        self.sent_bytes = 0

    @property
    def depth(self) -> int:
        return len(self._queue) if self._queue else 0

    def put(self, frame: str) -> None:
        """Queue one live message (never blocks).

        A client is too slow when its queue is over the bounds while a send to it is still in
        progress (its socket is backed up): it is closed with 1013. A queue that only grew
        because the sender has not been scheduled yet is not a slow client."""
        if self.closed:
            return
        if self._turn or (self._write_now is not None and not self._queue
                          and not self._sending):
            if not self._turn:
                if self._eot is None:
                    self._eot = _end_of_turn()
                self._eot.add(self)
            self._turn.append(frame)
            return
        queue = self._queue_for_writing()
        queue.append(frame)
        self._bytes += len(frame)
        if self._sending and (
            len(queue) - self._backlog > self.max_messages
            or self._bytes - self._backlog_bytes > self.max_bytes
        ):
            self.shutdown(CloseCode.TRY_AGAIN_LATER, "outbound queue overflow: resume with since")
            return
        self._kick()

    def put_backlog(self, frames: list[str]) -> None:
        """Queue a catch-up (snapshot or resumed patches) ahead of any live message."""
        if self.closed:
            return
        if self._turn:  # live messages waiting for the end of this turn: the catch-up first
            self._queue_for_writing().extend(self._turn)
            self._bytes += sum(map(len, self._turn))
            self._turn = []
        if not self._queue and not self._sending:
            written = 0
            while written < len(frames) and self._write(frames[written]):
                written += 1
            frames = frames[written:]
            if not frames:
                return
        # behind any earlier backlog, ahead of live messages (the catch-up comes first)
        queue = self._queue_for_writing()
        live = [queue.pop() for _ in range(len(queue) - self._backlog)]
        for frame in frames:
            queue.append(frame)
            self._bytes += len(frame)
            self._backlog += 1
            self._backlog_bytes += len(frame)
        queue.extend(reversed(live))
        if queue:
            self._kick()

    def shutdown(self, code: int | None, reason: str = "") -> None:
        """Drop what is queued and stop; ``code`` (if any) is the close code the connection
        should be closed with. Safe from any context; the first call wins."""
        if self.closed:
            return
        self.closed = True
        self.close_code, self.close_reason = code, reason
        self._queue = None
        self._turn = []
        self._bytes = self._backlog = self._backlog_bytes = 0
        done, self.on_done = self.on_done, None
        if done is not None:
            done()

    def _write_turn(self) -> None:
        """Write what was put during this turn of the loop, grouped as :meth:`_take` would;
        what ``write_now`` refuses is queued for the sender task."""
        frames, self._turn = self._turn, []
        if len(frames) == 1 and not self.closed and self._write(frames[0]):
            return  # the usual case: one publication
        start = 0
        while start < len(frames) and not self.closed:
            end = _group_end(frames, start)
            group = frames[start:end]
            if len(group) == 1:
                text, shared = group[0], True
            else:
                assert self._eot is not None  # set by the put that started this turn
                text, shared = self._eot.coalesced(group, self.lesson)
            if not self._write(text, shared):
                break
            start = end
        if start < len(frames) and not self.closed:
            self._queue_for_writing().extend(frames[start:])
            self._bytes += sum(len(f) for f in frames[start:])
            self._kick()

    def _write(self, frame: str, shared: bool = True) -> bool:
        """Write one frame's text now through ``write_now``, if it accepts it."""
        if self._write_now is None or not self._write_now(frame, shared):
            return False
        self._sent(len(frame))
        return True

    def _sent(self, size: int) -> None:
        self.sent_frames += 1
        self.sent_bytes += size
        if self._on_sent is not None:
            self._on_sent(size)

    def _queue_for_writing(self) -> deque[str]:
        if self._queue is None:
            self._queue = deque()
        return self._queue

    def _take(self) -> str:
        frames: list[str] = []
        size = 0
        alone = self._write_now is not None  # large messages go in frames of their own
        queue = self._queue_for_writing()
        while queue and (not frames or size + len(queue[0]) <= MAX_COALESCED):
            if alone and frames and (len(frames[0]) >= LARGE or len(queue[0]) >= LARGE):
                break
            frame = queue.popleft()
            size += len(frame)
            frames.append(frame)
            if self._backlog:
                self._backlog -= 1
                self._backlog_bytes -= len(frame)
        self._bytes -= size
        return _coalesce(frames, self.lesson)

    def _kick(self) -> None:
        """Start the sender task, unless it is running (it sends everything queued)."""
        if self._task is None and not self.closed:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Send what is queued, coalesced, until the queue is empty or the outbox shut down. A
        failed send means the client is gone: the outbox shuts down without a close code."""
        try:
            while self._queue and not self.closed:
                frame = self._take()
                self._sending = True
                try:
                    await self._send_text(frame)
                finally:
                    self._sending = False
                self._sent(len(frame))
        except Exception:
            self.shutdown(None)
        finally:
            self._task = None
            if not self._queue:
                self._queue = None

    async def stop(self) -> None:
        """Cancel a send in progress (it may be stuck on a client that does not read) and wait
        for the sender task to end. Closing the socket is the caller's job."""
        task = self._task
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the caller itself is being cancelled, not only the sender


def _group_end(frames: Sequence[str], start: int) -> int:
    """The end of the group of messages from ``start`` that go in one frame: at most
    :data:`MAX_COALESCED` characters, and a message of :data:`LARGE` or more alone."""
    end, size = start, 0
    while end < len(frames):
        frame = frames[end]
        if end > start and (size + len(frame) > MAX_COALESCED or len(frames[start]) >= LARGE
                            or len(frame) >= LARGE):
            break
        size += len(frame)
        end += 1
    return end
