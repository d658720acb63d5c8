"""Per-document sessions: the single writer of a document in this process.

Each :class:`Session` owns its :class:`Document` through one task, the *writer loop*. Batches
submitted by connections or HTTP are queued (:meth:`Session.submit` never blocks); the loop takes
everything queued, applies it to the document (each batch validates against the ones before it),
commits the whole round through the store (one group commit), and then publishes the round in
version order: the ack to each sender, the ``patch`` message to every other subscriber
(serialized once per format, enqueued per client without awaiting), rejects after the versions
they were checked against. Between rounds the document holds exactly the committed state, so
joins and reads, queued the same way, only ever see durable versions.

With a shared store (several server processes), a round first catches up with the versions
other processes committed; a commit that lost the race is taken back (:meth:`Document.revert`)
and its batches go through the loop again against the new head.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from .config import Limits, Settings
from .document import Applied, Document
from .errors import CloseCode, ErrorCode, ServerError, StoreUnavailable
from .messages import (
    Format,
    MessageId,
    PatchRequest,
    coalesce_bare,
    encode_ack,
    encode_reject,
    encode_snapshot,
    encode_synced,
)
from .metrics import Metrics
from .outbox import Outbox
from .patches import parse_json_patch
from .presence_hub import Presence
from .presence_relay import open_relay
from .schema import checker
from .store import LogEntry, Store
from .window import Dedupe, RecentLog, Record, SnapshotPolicy

log = logging.getLogger("server.hub")

# replaying our own log needs no input limits: it was validated when it was accepted
_REPLAY_LIMITS = Limits(10**12, 10**12, 10**6, 10**12, 10**12, 10**15)
# the most batches one round applies and commits together
_MAX_ROUND = 1024


@dataclass(eq=False)
class Subscriber:
    """A connection as the session sees it: a format, a mode and an outbox."""

    outbox: Outbox
    fmt: Format = "immer"
    lesson: bool = False
    client: str | None = None
    read_only: bool = False
    context: Any = None  # for the hooks: who is connected (see SessionHooks)

    def frame(self, record: Record) -> str:
        if self.lesson:
            return record.immer
        return record.immer_message if self.fmt == "immer" else record.json_patch_message


class SessionHooks(Protocol):
    """The application's hooks as sessions see them (implemented by ``server.hooks``); the
    ``context`` of a batch is opaque here: what the connection or request passed to submit."""

    async def load(self, doc: str) -> Any: ...

    async def validate(self, doc: str, context: Any, request_id: MessageId | None,
                       applied: Applied, version: int, state: Any) -> None: ...

    def committed(self, doc: str, version: int, json_patch: str, context: Any) -> None: ...


@dataclass(slots=True)
class _Submit:
    request: PatchRequest
    origin: Subscriber | None
    client: str | None
    result: asyncio.Future[int]
    started: float
    context: Any = None  # for the hooks: who sent it (see SessionHooks)


@dataclass(slots=True)
class _Task:
    """Work that needs the committed state (a join, a read): runs between rounds."""

    fn: Callable[[], Awaitable[Any]]
    done: asyncio.Future[Any]

    async def run(self) -> None:
        try:
            value = await self.fn()
        except Exception as exc:  # the caller gets it; the writer loop goes on
            if not self.done.done():
                self.done.set_exception(exc)
        else:
            if not self.done.done():
                self.done.set_result(value)


@dataclass(slots=True)
class _Snapshot:
    version: int
    state_json: str
    message: str = ""  # its snapshot message, built once: every newcomer gets this same text


@dataclass(slots=True)
class _Staged:
    """A batch applied in this round, waiting for its commit."""

    item: _Submit
    applied: Applied
    entry: LogEntry
    record: Record
    key: tuple[str, str] | None
    snapshot: bytes | None = None  # the state at this version, when a snapshot is due


class Session:
    """One document in memory: its state, its subscribers and its writer loop."""

    def __init__(self, hub: Hub, doc_id: str, document: Document, *, stored: bool,
                 floor: int, snapshot: _Snapshot, dedupe: list[tuple[str, str, int]]) -> None:
        self.hub = hub
        self.doc_id = doc_id
        self.document = document
        self.settings = hub.settings
        self.store = hub.store
        self.metrics = hub.metrics
        self.check = checker(self.settings.schemas, doc_id)
        self.subscribers: set[Subscriber] = set()
        self.published = document.version  # the newest version durable and sent
        self.floor = floor
        self.stored = stored  # a snapshot of this document exists in the store
        self.snapshots = SnapshotPolicy(self.settings.snapshot_every, snapshot.version,
                                        len(snapshot.state_json))
        self.cache = snapshot  # the newest serialized committed state
        self.recent = RecentLog(max(self.settings.snapshot_every, self.settings.max_join_tail))
        self.dedupe = Dedupe(dedupe)
        self.inbox: deque[_Submit | _Task] = deque()
        self.wakeup = asyncio.Event()
        self.remote = False  # a shared store told us others committed
        self.broken: ServerError | None = None
        self.last_used = time.monotonic()
        self.writer = asyncio.create_task(self._run(), name=f"writer:{doc_id}")
        self.follower = (
            asyncio.create_task(self._follow(), name=f"follower:{doc_id}")
            if self.store.shared else None
        )

    # -- queueing (called from connections and HTTP; never blocks) -----------------------------

    def submit(self, request: PatchRequest, origin: Subscriber | None = None,
               client: str | None = None, context: Any = None) -> asyncio.Future[int]:
        """Queue a batch. The future gives its version once it is durable and published (to
        ``origin`` as an ack, to the others as a patch), or raises the ServerError it was
        rejected with (``origin`` is sent the reject)."""
        if self.broken is not None:
            raise self.broken
        self.last_used = time.monotonic()
        result: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.inbox.append(_Submit(request, origin, client, result, time.monotonic(), context))
        self.wakeup.set()
        return result

    async def _between_rounds(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``fn`` in the writer loop, when the document holds only committed versions."""
        if self.broken is not None:
            raise self.broken
        self.last_used = time.monotonic()
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.inbox.append(_Task(fn, done))
        self.wakeup.set()
        return await done

    def reject_now(self, origin: Subscriber, msg_id: MessageId | None,
                   error: ServerError) -> None:
        """Answer a batch refused before it reached the document (malformed, rate limited,
        read-only). Everything published so far is already in the origin's queue."""
        self.metrics.rejected.labels(error.code.value).inc()
        if not origin.lesson:
            origin.outbox.put(encode_reject(msg_id, self.published, error))
            return
        # a lesson client gets the state again, taken between rounds so it is committed state

        async def resend() -> None:
            origin.outbox.put(self.lesson_snapshot())

        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.inbox.append(_Task(resend, done))
        self.wakeup.set()

    # -- the writer loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                if not self.inbox and not self.remote:
                    self.wakeup.clear()
                    await self.wakeup.wait()
                    continue
                head = self.inbox[0] if self.inbox else None
                if self.store.shared:
                    # started after ``head`` was queued: a read sees every commit acknowledged
                    # (by any process) before it was asked for
                    await self._catch_up()
                if head is None:
                    continue
                if isinstance(head, _Task):
                    self.inbox.popleft()
                    await head.run()
                    continue
                items: list[_Submit] = []
                while self.inbox and len(items) < _MAX_ROUND:
                    nxt = self.inbox[0]
                    if not isinstance(nxt, _Submit):
                        break
                    items.append(nxt)
                    self.inbox.popleft()
                await self._round(items)
                await asyncio.sleep(0)  # let the senders drain what this round queued
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a store failure: nothing of this round was acknowledged
            self._fail(exc)

    async def _round(self, items: list[_Submit]) -> None:
        """Apply, commit and publish one round of batches."""
        # outcome per item: a staged batch, or an answer (version, error or None for an ack)
        outcomes: list[_Staged | tuple[int, ServerError | None, str | None]] = []
        staged: list[_Staged] = []
        for item in items:
            outcome = await self._stage(item)
            outcomes.append(outcome)
            if isinstance(outcome, _Staged):
                staged.append(outcome)
        if staged and not self.stored:  # pin the initial state before the first version
            await self.store.snapshot(self.doc_id, 0, self.hub.initial_json.encode(),
                                      self.settings.retain_versions)
            self.stored = True
        results = (await self.store.commit(self.doc_id, [s.entry for s in staged])
                   if staged else [])
        failed = next((i for i, r in enumerate(results) if r is not None), None)
        if failed is not None:
            # a shared store: another process committed first (Stale), or this very batch was
            # committed through another process before (Duplicate). Take back what was not
            # committed, catch up, and run those batches again: a duplicate then meets its
            # original in the dedupe index and is acknowledged in version order.
            self.metrics.commit_races.inc()
            for lost in reversed(staged[failed:]):
                self.document.revert(lost.applied)
                if lost.key is not None:
                    self.dedupe.forget(lost.key)
            cut = next(i for i, o in enumerate(outcomes) if o is staged[failed])
            self.inbox.extendleft(reversed(items[cut:]))
            self.remote = True
            outcomes = outcomes[:cut]
        for outcome, item in zip(outcomes, items, strict=False):
            if isinstance(outcome, _Staged):
                self._publish(outcome.record, item, outcome.applied.rewritten)
            else:
                self._answer(item, *outcome)
        for done in staged[:failed]:
            if done.snapshot is not None:
                await self._save_snapshot(done.entry.version, done.snapshot)

    async def _stage(self, item: _Submit
                     ) -> _Staged | tuple[int, ServerError | None, str | None]:
        request = item.request
        key = None
        if item.client is not None and request.id is not None:
            key = (item.client, orjson.dumps(request.id).decode())
            seen = self.dedupe.get(key)
            if seen is not None:  # a resend: acknowledge the original, apply nothing
                return seen, None, None
        started = time.monotonic()
        head = self.document.version
        hooks = self.hub.hooks
        try:
            applied = self.document.apply(request.ops, request.base, self.check)
            if hooks is not None and not applied.empty:
                await self._validate(hooks, item, applied)
        except ServerError as exc:
            snapshot = self.lesson_snapshot() if item.origin and item.origin.lesson else None
            return self.document.version, exc, snapshot
        self.metrics.apply_seconds.observe(time.monotonic() - started)
        if applied.rewritten and request.base is not None and request.base < head:
            self.metrics.rebased.inc()
        version = self.document.version
        if applied.empty:
            return version, None, None
        immer = orjson.dumps(applied.immer)
        json_patch = orjson.dumps(applied.json_patch)
        entry = LogEntry(version, json_patch, immer, item.client, key[1] if key else None,
                         time.time())
        if key is not None:
            self.dedupe.remember(key, version)
        record = Record(version, immer.decode(), json_patch.decode())
        return _Staged(item, applied, entry, record, key, self._snapshot_if_due(len(json_patch)))

    def _answer(self, item: _Submit, version: int, error: ServerError | None,
                lesson_frame: str | None) -> None:
        origin, result = item.origin, item.result
        if error is None:
            if origin is not None and item.request.id is not None:
                origin.outbox.put(encode_ack(item.request.id, version))
            if not result.done():
                result.set_result(version)
            return
        self.metrics.rejected.labels(error.code.value).inc()
        if origin is not None:
            if origin.lesson:  # the lesson client converges back instead of diverging
                origin.outbox.put(lesson_frame or self.lesson_snapshot())
            else:
                origin.outbox.put(encode_reject(item.request.id, version, error))
        if not result.done():
            result.set_exception(error)
            result.exception()  # a WebSocket sender does not await it

    def _publish(self, record: Record, item: _Submit | None, rewritten: bool = False) -> None:
        """Send a durable version: an ack to its sender, the patch to everyone else. The ack
        carries the patches as applied when they differ from what the sender sent (rebased,
        compacted or normalised), so its replica takes the server's version of its change."""
        self.published = record.version
        self.recent.add(record)
        origin = item.origin if item is not None else None
        for sub in self.subscribers:
            if sub is origin:
                if item is not None and item.request.id is not None:
                    patches = None
                    if rewritten:
                        patches = record.immer if sub.fmt == "immer" else record.json_patch
                    sub.outbox.put(encode_ack(item.request.id, record.version, patches))
            else:
                sub.outbox.put(sub.frame(record))
        self.metrics.accepted.inc()
        if item is not None and self.hub.hooks is not None:  # on_commit, queued
            self.hub.hooks.committed(self.doc_id, record.version, record.json_patch, item.context)
        if item is not None:
            if not item.result.done():
                item.result.set_result(record.version)
            self.metrics.commit_seconds.observe(time.monotonic() - item.started)

    def _fail(self, error: BaseException) -> None:
        """The store failed: the in-memory document may be ahead of it. Drop this session (the
        next use reloads it from the store) and disconnect its clients, who resume."""
        log.error("doc=%s store failure, dropping the session: %s", self.doc_id, error)
        self.broken = StoreUnavailable(f"the store failed: {error}")
        self.hub.forget(self)
        for work in self.inbox:
            waiter = work.result if isinstance(work, _Submit) else work.done
            if not waiter.done():
                waiter.set_exception(self.broken)
                waiter.exception()  # a WebSocket sender does not await it
        self.inbox.clear()
        for sub in self.subscribers:
            sub.outbox.shutdown(CloseCode.INTERNAL_ERROR, "store failure: reconnect and resume")
        self.subscribers.clear()
        if self.follower is not None:
            self.follower.cancel()

    async def _validate(self, hooks: SessionHooks, item: _Submit, applied: Applied) -> None:
        """The application's validate hook, on the document with the batch applied; on any
        failure the batch is taken back (the document is unchanged) and the error raised."""
        try:
            await hooks.validate(self.doc_id, item.context, item.request.id, applied,
                                 self.document.version, self.document.state)
        except BaseException:
            self.document.revert(applied)
            raise

    # -- shared stores -------------------------------------------------------------------------

    async def _follow(self) -> None:
        """Wake the writer loop whenever another process commits to this document."""
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                try:
                    async for head in self.store.follow(self.doc_id, self.document.version):
                        if head > self.document.version:
                            self.remote = True
                            self.wakeup.set()
                except StoreUnavailable as exc:
                    log.warning("doc=%s following the log failed: %s", self.doc_id, exc)
                    await asyncio.sleep(0.5)  # back off before reconnecting to the store

    async def _catch_up(self) -> None:
        """Apply and publish, in order, the versions other processes committed."""
        self.remote = False
        entries = await self.store.read_log(self.doc_id, self.document.version)
        if entries is None:
            raise StoreUnavailable("this document's log was compacted past our version")
        for entry in entries:
            if entry.version != self.document.version + 1:
                raise StoreUnavailable(f"gap in the log at version {entry.version}")
            applied = self.document.apply(
                parse_json_patch(orjson.loads(entry.json_patch), _REPLAY_LIMITS), compacting=False
            )
            if applied.empty or self.document.version != entry.version:
                raise StoreUnavailable(f"log entry {entry.version} does not apply")
            if entry.client is not None and entry.msg_id is not None:
                self.dedupe.remember((entry.client, entry.msg_id), entry.version)
            self._publish(Record.from_entry(entry), None)
            self.stored = True
            state = self._snapshot_if_due(len(entry.json_patch))
            if state is not None:
                await self._save_snapshot(entry.version, state)

    # -- bookkeeping ---------------------------------------------------------------------------

    def _snapshot_if_due(self, log_bytes: int) -> bytes | None:
        """Account for a new version; the serialized state when a snapshot is due."""
        state = self.snapshots.due(self.document.version, log_bytes, self.document.state)
        if state is not None:
            self.document.size = len(state)  # re-anchor the size estimate
        return state

    async def _save_snapshot(self, version: int, state: bytes) -> None:
        """Write a snapshot of a committed version, and forget what compaction removed."""
        if version == self.document.version:
            self.cache = _Snapshot(version, state.decode())
        floor = await self.store.snapshot(self.doc_id, version, state,
                                          self.settings.retain_versions)
        if floor > self.floor:
            self.floor = floor
            self.dedupe.trim(floor)

    # -- reads ---------------------------------------------------------------------------------

    def _state_json(self) -> _Snapshot:
        """The committed state, serialized at most once per version (call between rounds)."""
        if self.cache.version != self.document.version:
            self.cache = _Snapshot(
                self.document.version, orjson.dumps(self.document.state).decode()
            )
        return self.cache

    def _recent_after(self, version: int) -> list[Record] | None:
        """Published records version+1.., or None when memory does not reach back."""
        return self.recent.after(version, self.published, self.floor)

    def _snapshot_frames(self, sub: Subscriber) -> list[str]:
        """A newcomer's catch-up: the cached snapshot plus a short tail, else a fresh one."""
        if sub.lesson:
            return [self.lesson_snapshot()]
        cache = self.cache
        tail = self._recent_after(cache.version)
        if tail is None or len(tail) > self.settings.max_join_tail or (
            sum(r.size for r in tail) > len(cache.state_json) // 2
        ):
            cache, tail = self._state_json(), []
        if not cache.message:
            cache.message = encode_snapshot(self.doc_id, cache.version, self.store.epoch,
                                            cache.state_json)
        frames = [cache.message]
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
        """Subscribe ``sub``: its catch-up, then every version after it, in order."""

        async def start() -> None:
            frames: list[str] | None = None
            if since is not None and not sub.lesson and epoch in (None, self.store.epoch):
                frames = await self._resume_frames(sub, since)
            if frames is None:
                frames = self._snapshot_frames(sub)
            if not sub.lesson:
                frames.append(encode_synced(self.published))
            sub.outbox.put_backlog(frames)
            self.subscribers.add(sub)

        await self._between_rounds(start)

    async def _resume_frames(self, sub: Subscriber, since: int) -> list[str] | None:
        """The versions after ``since``, or None when a snapshot is due instead: the client is
        ahead of this store, its version was compacted away, or the tail (as for joins)
        is longer than ``max_join_tail`` or weighs more than the state."""
        if since > self.published or self.published - since > self.settings.max_join_tail:
            return None
        records = self._recent_after(since)
        if records is None:
            entries = await self.store.read_log(self.doc_id, since)
            if entries is None:
                return None
            records = [Record.from_entry(e) for e in entries if e.version <= self.published]
            if [r.version for r in records] != list(range(since + 1, self.published + 1)):
                return None
        if sum(len(r.immer if sub.fmt == "immer" else r.json_patch)
               for r in records) > self.document.size:
            return None
        return [sub.frame(r) for r in records]

    def leave(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        self.last_used = time.monotonic()

    async def read_state(self) -> tuple[int, str]:
        """The newest committed state, serialized."""

        async def read() -> tuple[int, str]:
            snap = self._state_json()
            return snap.version, snap.state_json

        result: tuple[int, str] = await self._between_rounds(read)
        return result

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
        if version == self.published:
            state_version, state = await self.read_state()
            if state_version == version:
                return state
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
            doc.apply(parse_json_patch(orjson.loads(entry.json_patch), _REPLAY_LIMITS),
                      compacting=False)
        if doc.version != version:
            raise ServerError(f"version {version} is not in the log", ErrorCode.GONE)
        return orjson.dumps(doc.state).decode()

    async def committed(self) -> None:
        """Wait until everything queued so far is committed and published."""

        async def nothing() -> None:
            return None

        await self._between_rounds(nothing)

    @property
    def idle(self) -> bool:
        return not self.subscribers and not self.inbox

    async def close(self) -> None:
        for task in (self.writer, self.follower):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


@dataclass
class Hub:
    """All documents of one server process, loaded on first use and evicted when idle."""

    settings: Settings
    store: Store
    sessions: dict[str, Session] = field(default_factory=dict)
    _loading: dict[str, asyncio.Future[Session]] = field(default_factory=dict)
    initial_json: str = "{}"
    hooks: SessionHooks | None = None

    def __post_init__(self) -> None:
        self.initial_json = orjson.dumps(self.settings.initial_state).decode()
        self.metrics = Metrics(self)
        self.presence = Presence(self.settings, self.metrics, open_relay(self.settings.store_url))

    def new_document(self, state: Any, version: int) -> Document:
        limits = self.settings.limits
        # a batch as applied may be 4x the frame it came in (move, copy and length expand it)
        return Document(state, version, self.settings.max_base_lag, limits.max_document_bytes,
                        limits.max_depth, limits.max_ops, 4 * limits.max_frame_bytes)

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
        loaded = await self.hooks.load(doc_id) if stored is None and self.hooks else None
        if loaded is not None:  # the application's initial state, pinned as version 0 at once
            state = orjson.dumps(loaded)
            await self.store.snapshot(doc_id, 0, state, self.settings.retain_versions)
            return Session(self, doc_id, self.new_document(orjson.loads(state), 0), stored=True,
                           floor=0, snapshot=_Snapshot(0, state.decode()), dedupe=[])
        if stored is None:
            document = self.new_document(orjson.loads(self.initial_json), 0)
            return Session(self, doc_id, document, stored=False, floor=0,
                           snapshot=_Snapshot(0, self.initial_json), dedupe=[])
        document = self.new_document(orjson.loads(stored.snapshot), stored.snapshot_version)
        snapshot = _Snapshot(stored.snapshot_version, stored.snapshot.decode())
        records = []
        for entry in stored.entries:
            document.apply(parse_json_patch(orjson.loads(entry.json_patch), _REPLAY_LIMITS),
                           compacting=False)
            if document.version != entry.version:
                raise StoreUnavailable(
                    f"log of {doc_id!r} is not contiguous at version {entry.version}"
                )
            records.append(Record.from_entry(entry))
        session = Session(self, doc_id, document, stored=True, floor=stored.floor,
                          snapshot=snapshot, dedupe=stored.dedupe)
        for record in records:
            session.recent.add(record)
            session.snapshots.log_bytes += len(record.json_patch)
        log.info("doc=%s loaded at version %d (snapshot %d + %d entries) in %.1f ms", doc_id,
                 document.version, stored.snapshot_version, len(stored.entries),
                 (time.perf_counter() - started) * 1000)
        return session

    def forget(self, session: Session) -> None:
        if self.sessions.get(session.doc_id) is session:
            del self.sessions[session.doc_id]

    async def evict_idle(self) -> int:
        now = time.monotonic()
        idle = [s for s in self.sessions.values()
                if s.idle and now - s.last_used > self.settings.idle_seconds]
        for session in idle:
            self.forget(session)
            await session.close()
        return len(idle)

    async def run_evictions(self, interval: float = 5.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.evict_idle()
            except Exception:  # eviction must never stop; the next pass retries
                log.exception("evicting idle documents failed")

    async def close(self) -> None:
        """Finish what was queued (bounded), then stop every writer loop."""
        for session in list(self.sessions.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.committed(), timeout=10)
            await session.close()
