"""Per-document sessions: apply, commit through the store, publish in version order.

The path of a batch: :meth:`Session.submit` applies it to the in-memory :class:`Document` at
once (so the next batch validates against it), hands the log entry to the store and queues a
*publication* behind the commits already in flight. Publications run strictly in order, each
only when everything before it is durable: the ack to the sender and the ``patch`` message to
every other subscriber (serialized once per format, enqueued per client without awaiting). A
newcomer's catch-up, a reject and an HTTP read are queued the same way, so nobody ever sees a
version that is not committed, and every connection sees versions in order with no gaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .config import Limits, Settings
from .document import Document
from .errors import CloseCode, ErrorCode, ServerError, StoreUnavailable
from .messages import (
    Format,
    MessageId,
    PatchRequest,
    coalesce_bare,
    encode_ack,
    encode_patch,
    encode_reject,
    encode_snapshot,
    encode_synced,
)
from .metrics import Metrics
from .outbox import Outbox
from .patches import parse_json_patch
from .schema import checker
from .store import LogEntry, Store

log = logging.getLogger("server.hub")

# replaying our own log needs no input limits: it was validated when it was accepted
_REPLAY_LIMITS = Limits(10**12, 10**12, 10**6, 10**12, 10**12)
# the byte rule for snapshots applies only after this many versions, so a tiny document with
# large patches is not snapshotted on every version
_MIN_SNAPSHOT_GAP = 8
_RECENT_MAX_BYTES = 32 << 20


@dataclass(slots=True)
class Record:
    """One published version, serialized once per format."""

    version: int
    immer: str  # the Immer patches (a JSON array): also the lesson-mode frame
    json_patch: str
    immer_message: str = ""
    json_patch_message: str = ""

    def __post_init__(self) -> None:
        self.immer_message = encode_patch(self.version, self.immer)
        self.json_patch_message = encode_patch(self.version, self.json_patch)

    @classmethod
    def from_entry(cls, entry: LogEntry) -> Record:
        return cls(entry.version, entry.immer.decode(), entry.json_patch.decode())

    @property
    def size(self) -> int:
        return len(self.immer) + len(self.json_patch)


@dataclass(eq=False)
class Subscriber:
    """A connection as the session sees it: a format, a mode and an outbox."""

    outbox: Outbox
    fmt: Format = "immer"
    lesson: bool = False
    client: str | None = None
    read_only: bool = False

    def frame(self, record: Record) -> str:
        if self.lesson:
            return record.immer
        return record.immer_message if self.fmt == "immer" else record.json_patch_message


@dataclass(slots=True)
class _Step:
    """A publication waiting for the commits queued before it."""

    future: asyncio.Future[Any] | None
    action: Callable[[], None]
    result: asyncio.Future[int] | None = None


@dataclass(slots=True)
class _Snapshot:
    version: int
    state_json: str


class Session:
    """One document in memory: its state, its subscribers and its publication pipeline."""

    def __init__(self, hub: Hub, doc_id: str, document: Document, *, stored: bool,
                 floor: int, snapshot: _Snapshot, dedupe: list[tuple[str, str, int]]) -> None:
        self.hub = hub
        self.doc_id = doc_id
        self.document = document
        self.settings = hub.settings
        self.store = hub.store
        self.subscribers: set[Subscriber] = set()
        self.published = document.version  # the newest version that is durable and sent
        self.floor = floor
        self.stored = stored  # a snapshot of this document exists in the store
        self.snapshot_version = snapshot.version
        self.snapshot_size = len(snapshot.state_json)
        self.cache = snapshot  # the newest serialized state (not necessarily durable yet)
        self.log_bytes = 0  # log bytes since the last snapshot
        self.recent: deque[Record] = deque()
        self.recent_bytes = 0
        self.dedupe: dict[tuple[str, str], int] = {}
        self.dedupe_order: deque[tuple[int, tuple[str, str]]] = deque()
        for client, msg_id, version in dedupe:
            self._remember(client, msg_id, version)
        self.pipeline: deque[_Step] = deque()
        self.broken: ServerError | None = None
        self.last_used = time.monotonic()
        self.check = checker(self.settings.schemas, doc_id)
        self.metrics = hub.metrics

    # -- the pipeline --------------------------------------------------------------------------

    def after_commits(self, action: Callable[[], None]) -> None:
        """Run ``action`` once everything submitted so far is durable (now if it is)."""
        if not self.pipeline:
            action()
        else:
            self.pipeline.append(_Step(None, action))

    def _queue(self, future: asyncio.Future[Any], action: Callable[[], None],
               result: asyncio.Future[int] | None = None) -> None:
        self.pipeline.append(_Step(future, action, result))
        future.add_done_callback(self._drain)

    def _drain(self, _: object = None) -> None:
        while self.pipeline:
            step = self.pipeline[0]
            if step.future is not None:
                if not step.future.done():
                    return
                error = step.future.exception()
                if error is not None:
                    self._fail(error)
                    return
            self.pipeline.popleft()
            step.action()

    def _fail(self, error: BaseException) -> None:
        """A commit failed: the in-memory document is ahead of the store. Drop this session
        (the next use reloads it from the store) and disconnect its clients, who resume."""
        log.error("doc=%s commit failed, dropping the session: %s", self.doc_id, error)
        self.broken = StoreUnavailable(f"the store failed: {error}")
        self.hub.forget(self)
        for step in self.pipeline:
            if step.result is not None and not step.result.done():
                step.result.set_exception(self.broken)
                step.result.exception()  # a WebSocket sender does not await it
        self.pipeline.clear()
        for sub in self.subscribers:
            sub.outbox.shutdown(CloseCode.INTERNAL_ERROR, "store failure: reconnect and resume")
        self.subscribers.clear()

    # -- writes --------------------------------------------------------------------------------

    def submit(self, request: PatchRequest, origin: Subscriber | None = None,
               client: str | None = None) -> asyncio.Future[int]:
        """Apply ``request`` now and commit it. The future gives its version once it is durable
        and published (to ``origin`` as an ack, to the others as a patch). Raises ServerError
        (the document unchanged) when the batch does not apply."""
        if self.broken is not None:
            raise self.broken
        started = self.last_used = time.monotonic()
        loop = asyncio.get_running_loop()
        result: asyncio.Future[int] = loop.create_future()
        key = None
        if client is not None and request.id is not None:
            key = (client, orjson.dumps(request.id).decode())
            seen = self.dedupe.get(key)
            if seen is not None:  # a resend: acknowledge the original, apply nothing
                self.after_commits(lambda: self._ack(origin, request.id, seen, result))
                return result
        applied = self.document.apply(request.ops, request.base, self.check)
        version = self.document.version
        self.metrics.apply_seconds.observe(time.monotonic() - started)
        if applied.empty:
            self.after_commits(lambda: self._ack(origin, request.id, version, result))
            return result
        immer = orjson.dumps(applied.immer)
        json_patch = orjson.dumps(applied.json_patch)
        entry = LogEntry(version, json_patch, immer, client, key[1] if key else None, time.time())
        record = Record(version, immer.decode(), json_patch.decode())
        if key is not None:
            self._remember(key[0], key[1], version)
        self._add_recent(record)
        if not self.stored:
            keep = self.settings.retain_versions
            self._queue(self.store.snapshot(self.doc_id, 0, self._initial_bytes(), keep), _noop)
            self.stored = True
        self._queue(
            self.store.append(self.doc_id, entry),
            lambda: self._publish(record, origin, request.id, result, started),
            result,
        )
        self.log_bytes += len(json_patch)
        self._maybe_snapshot()
        return result

    def _initial_bytes(self) -> bytes:
        assert self.cache.version == 0 or self.snapshot_version == 0
        return self.hub.initial_json.encode()

    def _ack(self, origin: Subscriber | None, msg_id: MessageId | None, version: int,
             result: asyncio.Future[int]) -> None:
        if origin is not None and msg_id is not None:
            origin.outbox.put(encode_ack(msg_id, version))
        if not result.done():
            result.set_result(version)

    def _publish(self, record: Record, origin: Subscriber | None, msg_id: MessageId | None,
                 result: asyncio.Future[int], started: float) -> None:
        self.published = record.version
        self._trim_recent()
        for sub in self.subscribers:
            if sub is origin:
                if msg_id is not None:
                    sub.outbox.put(encode_ack(msg_id, record.version))
            else:
                sub.outbox.put(sub.frame(record))
        if not result.done():
            result.set_result(record.version)
        self.metrics.accepted.inc()
        self.metrics.commit_seconds.observe(time.monotonic() - started)

    def reject(self, origin: Subscriber, msg_id: MessageId | None, error: ServerError) -> None:
        """Answer a refused batch, after the versions it was checked against are delivered."""
        self.metrics.rejected.labels(error.code.value).inc()
        version = self.document.version
        if origin.lesson:
            frame = self.lesson_snapshot()  # the lesson client converges back, not diverges
            self.after_commits(lambda: origin.outbox.put(frame))
        else:
            frame = encode_reject(msg_id, version, error)
            self.after_commits(lambda: origin.outbox.put(frame))

    def _remember(self, client: str, msg_id: str, version: int) -> None:
        key = (client, msg_id)
        self.dedupe[key] = version
        self.dedupe_order.append((version, key))

    def _add_recent(self, record: Record) -> None:
        self.recent.append(record)
        self.recent_bytes += record.size
        self._trim_recent()

    def _trim_recent(self) -> None:
        """Keep the recent records within bounds; only published ones may go."""
        limit = max(self.settings.snapshot_every, self.settings.max_join_tail)
        while self.recent and (
            len(self.recent) > limit or self.recent_bytes > _RECENT_MAX_BYTES
        ) and self.recent[0].version <= self.published:
            self.recent_bytes -= self.recent.popleft().size

    def _maybe_snapshot(self) -> None:
        version = self.document.version
        gap = version - self.snapshot_version
        if gap < self.settings.snapshot_every and not (
            gap >= _MIN_SNAPSHOT_GAP and self.log_bytes > self.snapshot_size
        ):
            return
        state = orjson.dumps(self.document.state)
        written = self.store.snapshot(self.doc_id, version, state, self.settings.retain_versions)
        self._queue(written, lambda: self._compacted(written.result()))
        self.snapshot_version = version
        self.snapshot_size = len(state)
        self.cache = _Snapshot(version, state.decode())
        self.log_bytes = 0

    def _compacted(self, floor: int) -> None:
        """The store compacted its log up to ``floor``: forget what it no longer holds."""
        if floor <= self.floor:
            return
        self.floor = floor
        while self.dedupe_order and self.dedupe_order[0][0] <= floor:
            _, key = self.dedupe_order.popleft()
            if self.dedupe.get(key, floor + 1) <= floor:
                del self.dedupe[key]

    # -- reads ---------------------------------------------------------------------------------

    def _state_json(self) -> tuple[int, str]:
        """The state at the head, serialized at most once per version."""
        if self.cache.version != self.document.version:
            self.cache = _Snapshot(
                self.document.version, orjson.dumps(self.document.state).decode()
            )
        return self.cache.version, self.cache.state_json

    def _recent_after(self, version: int) -> list[Record] | None:
        """Records version+1..head from memory, or None when memory does not reach back."""
        head = self.document.version
        if version >= head:
            return []
        if version < self.floor or not self.recent or self.recent[0].version > version + 1:
            return None
        start = version + 1 - self.recent[0].version
        return [self.recent[i] for i in range(start, len(self.recent))]

    def snapshot_frames(self, sub: Subscriber) -> list[str]:
        """A newcomer's catch-up: the cached snapshot plus a short tail, else a fresh one."""
        if sub.lesson:
            return [self.lesson_snapshot()]
        cache = self.cache
        tail = self._recent_after(cache.version)
        if tail is None or len(tail) > self.settings.max_join_tail or (
            sum(r.size for r in tail) > len(cache.state_json) // 2
        ):
            _version, _state_json = self._state_json()
            cache, tail = self.cache, []
        frames = [encode_snapshot(self.doc_id, cache.version, self.store.epoch, cache.state_json)]
        frames.extend(sub.frame(r) for r in tail)
        return frames

    def lesson_snapshot(self) -> str:
        state = self.document.state
        if isinstance(state, dict):
            patches = [{"op": "replace", "path": [k], "value": v} for k, v in state.items()]
        else:
            patches = [{"op": "replace", "path": [], "value": state}]
        return orjson.dumps(patches).decode()

    async def join(self, sub: Subscriber, since: int | None = None,
                   epoch: str | None = None) -> None:
        """Subscribe ``sub``: send its catch-up, then every version after it, in order."""
        if self.broken is not None:
            raise self.broken
        self.last_used = time.monotonic()
        frames: list[str] | None = None
        if since is not None and not sub.lesson and (epoch is None or epoch == self.store.epoch):
            frames = await self._resume_frames(sub, since)
        if frames is None:
            frames = self.snapshot_frames(sub)
        if not sub.lesson:
            frames.append(encode_synced(self.document.version))

        def start() -> None:
            for frame in frames:
                sub.outbox.put(frame)
            self.subscribers.add(sub)

        self.after_commits(start)

    async def _resume_frames(self, sub: Subscriber, since: int) -> list[str] | None:
        if since > self.document.version:
            return None  # the client is ahead of this store: it must take a snapshot
        records = self._recent_after(since)
        if records is None:
            entries = await self.store.read_log(self.doc_id, since)
            if entries is None:
                return None
            last = entries[-1].version if entries else since
            rest = self._recent_after(last)
            if rest is None:
                return None
            records = [Record.from_entry(e) for e in entries] + rest
            if any(r.version != since + 1 + i for i, r in enumerate(records)):
                return None
        return [sub.frame(r) for r in records]

    def leave(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        self.last_used = time.monotonic()

    async def read_state(self) -> tuple[int, str]:
        """The state as of the newest submitted version, once that version is durable."""
        version, state_json = self._state_json()
        await self.committed()
        return version, state_json

    async def committed(self) -> None:
        """Wait until everything submitted so far is durable and published."""
        if not self.pipeline:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.after_commits(lambda: _resolve(done))
        await done

    async def read_patches(self, since: int, fmt: Format) -> tuple[int, str] | int:
        """The operations after ``since`` up to the published version as one JSON array, or the
        floor (an int) when ``since`` was compacted away."""
        head = self.published
        if since >= head:
            return head, "[]"
        records = self._recent_after(since)
        if records is None:
            entries = await self.store.read_log(self.doc_id, since)
            if entries is None:
                return self.floor
            records = [Record.from_entry(e) for e in entries]
        chosen = [r for r in records if r.version <= head]
        arrays = [r.immer if fmt == "immer" else r.json_patch for r in chosen]
        return (chosen[-1].version if chosen else since), coalesce_bare(arrays) if arrays else "[]"

    async def read_state_at(self, version: int) -> str:
        """The document as it was at ``version``: from memory at the head, else rebuilt from the
        nearest snapshot at or below it plus the log."""
        if version == self.document.version:
            return (await self.read_state())[1]
        if version > self.published:
            raise ServerError(f"version {version} does not exist yet", ErrorCode.NOT_FOUND)
        if version < self.floor:
            raise ServerError(
                f"version {version} was compacted away (oldest is {self.floor})", ErrorCode.GONE
            )
        snap = await self.store.read_snapshot(self.doc_id, version)
        if snap is None:
            if version == 0 and not self.stored:
                return self.hub.initial_json
            raise ServerError(f"no snapshot at or below version {version}", ErrorCode.GONE)
        doc = Document(orjson.loads(snap[1]), snap[0], max_base_lag=1)
        entries = await self.store.read_log(self.doc_id, snap[0])
        if entries is None:
            raise ServerError(f"version {version} was compacted away", ErrorCode.GONE)
        for entry in entries:
            if entry.version > version:
                break
            doc.apply(parse_json_patch(orjson.loads(entry.json_patch), _REPLAY_LIMITS))
        if doc.version != version:
            raise ServerError(f"version {version} is not in the log", ErrorCode.GONE)
        return orjson.dumps(doc.state).decode()

    @property
    def idle(self) -> bool:
        return not self.subscribers and not self.pipeline


def _noop() -> None:
    return None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass
class Hub:
    """All documents of one server process, loaded on first use and evicted when idle."""

    settings: Settings
    store: Store
    sessions: dict[str, Session] = field(default_factory=dict)
    _loading: dict[str, asyncio.Future[Session]] = field(default_factory=dict)
    initial_json: str = "{}"

    def __post_init__(self) -> None:
        self.initial_json = orjson.dumps(self.settings.initial_state).decode()
        self.metrics = Metrics(self)

    def new_document(self, state: Any, version: int) -> Document:
        return Document(state, version, self.settings.max_base_lag,
                        self.settings.limits.max_document_bytes)

    async def session(self, doc_id: str) -> Session:
        session = self.sessions.get(doc_id)
        if session is not None:
            return session
        loading = self._loading.get(doc_id)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
        self._loading[doc_id] = future
        try:
            session = await self._load(doc_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            del self._loading[doc_id]
        self.sessions[doc_id] = session
        future.set_result(session)
        return session

    async def _load(self, doc_id: str) -> Session:
        started = time.perf_counter()
        stored = await self.store.load(doc_id)
        if stored is None:
            document = self.new_document(orjson.loads(self.initial_json), 0)
            session = Session(self, doc_id, document, stored=False, floor=0,
                              snapshot=_Snapshot(0, self.initial_json), dedupe=[])
            return session
        document = self.new_document(orjson.loads(stored.snapshot), stored.snapshot_version)
        snapshot = _Snapshot(stored.snapshot_version, stored.snapshot.decode())
        for entry in stored.entries:
            document.apply(parse_json_patch(orjson.loads(entry.json_patch), _REPLAY_LIMITS))
            if document.version != entry.version:
                raise StoreUnavailable(
                    f"log of {doc_id!r} is not contiguous at version {entry.version}"
                )
        session = Session(self, doc_id, document, stored=True, floor=stored.floor,
                          snapshot=snapshot, dedupe=stored.dedupe)
        for entry in stored.entries:
            session._add_recent(Record.from_entry(entry))
            session.log_bytes += len(entry.json_patch)
        log.info("doc=%s loaded at version %d (snapshot %d + %d entries) in %.1f ms", doc_id,
                 document.version, stored.snapshot_version, len(stored.entries),
                 (time.perf_counter() - started) * 1000)
        return session

    def forget(self, session: Session) -> None:
        if self.sessions.get(session.doc_id) is session:
            del self.sessions[session.doc_id]

    def evict_idle(self) -> int:
        now = time.monotonic()
        idle = [s for s in self.sessions.values()
                if s.idle and now - s.last_used > self.settings.idle_seconds]
        for session in idle:
            self.forget(session)
        return len(idle)

    async def run_evictions(self, interval: float = 5.0) -> None:
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                self.evict_idle()

    async def drain(self) -> None:
        """Wait until every submitted batch is durable (for shutdown)."""
        for session in list(self.sessions.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.committed(), timeout=10)



