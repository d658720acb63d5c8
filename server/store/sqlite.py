"""``sqlite:///path/to/file.db``: the default, durable store (Python's sqlite3, WAL mode).

All writes go through one writer thread. It takes every write queued while the previous
transaction was committing (from any document) and commits them together (group commit), then
resolves their futures on the event loop. Reads use their own connections in worker threads
(WAL lets them run beside the writer). ``synchronous`` defaults to FULL: with WAL, a committed
(acknowledged) batch
survives both a process crash and a power loss. ``?synchronous=normal`` survives a process crash
but may lose the last transactions on power loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from ..errors import StoreUnavailable
from .base import CommitResult, LogEntry, StoredDocument

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs (doc TEXT PRIMARY KEY, floor INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS log (
    doc TEXT NOT NULL,
    version INTEGER NOT NULL,
    json_patch BLOB NOT NULL,
    immer BLOB NOT NULL,
    client TEXT,
    msg_id TEXT,
    ts REAL NOT NULL,
    PRIMARY KEY (doc, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS log_client ON log (doc, client, msg_id) WHERE client IS NOT NULL;
CREATE TABLE IF NOT EXISTS snapshots (
    doc TEXT NOT NULL,
    version INTEGER NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (doc, version)
) WITHOUT ROWID;
"""

SYNCHRONOUS = {"off": "OFF", "normal": "NORMAL", "full": "FULL", "extra": "EXTRA"}
MAX_GROUP = 4096

Write = Callable[[sqlite3.Connection], Any]


class SQLiteStore:
    shared = False

    def __init__(self, path: str, synchronous: str = "full") -> None:
        if synchronous.lower() not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS)}")
        self.path = path
        self.synchronous = SYNCHRONOUS[synchronous.lower()]
        self._epoch = ""
        self._queue: queue.SimpleQueue[
            tuple[Write, asyncio.Future[Any]] | None
        ] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._local = threading.local()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def epoch(self) -> str:
        return self._epoch

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        if row is None:
            self._epoch = uuid.uuid4().hex
            conn.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?)", (self._epoch,))
        else:
            self._epoch = row[0]
        self._writer = threading.Thread(
            target=self._write_loop, args=(conn,), name="sqlite-writer", daemon=True
        )
        self._writer.start()

    async def close(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None

    # -- writes: one thread, group commit ------------------------------------------------------

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                group = [item]
                stop = False
                while len(group) < MAX_GROUP:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    group.append(nxt)
                self._commit(conn, group)
                if stop:
                    return
        finally:
            conn.close()

    def _commit(
        self, conn: sqlite3.Connection, group: list[tuple[Write, asyncio.Future[Any]]]
    ) -> None:
        error: BaseException | None = None
        results: list[Any] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [write(conn) for write, _ in group]
            conn.execute("COMMIT")
        except BaseException as exc:  # the whole group failed: report it to every waiter
            error = exc
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        assert self._loop is not None
        futures = [f for _, f in group]
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(_resolve, futures, results, error)

    def _submit(self, write: Write) -> asyncio.Future[Any]:
        assert self._loop is not None, "store is not open"
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((write, future))
        return future

    async def commit(self, doc: str, entries: list[LogEntry]) -> list[CommitResult]:
        now = time.time()
        rows = [(doc, e.version, e.json_patch, e.immer, e.client, e.msg_id, e.ts or now)
                for e in entries]

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT INTO log VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

        await self._submit(write)
        return [None] * len(entries)

    async def snapshot(self, doc: str, version: int, state: bytes, keep: int) -> int:
        def write(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT OR IGNORE INTO snapshots (doc, version, state) VALUES (?, ?, ?)",
                (doc, version, state),
            )
            # the floor is a snapshot, so every version after it can be rebuilt from it
            (floor,) = conn.execute(
                "SELECT coalesce(max(version), 0) FROM snapshots WHERE doc = ? AND version <= ?",
                (doc, version - keep),
            ).fetchone()
            row = conn.execute("SELECT floor FROM docs WHERE doc = ?", (doc,)).fetchone()
            if row is None:
                conn.execute("INSERT INTO docs (doc, floor) VALUES (?, ?)", (doc, floor))
            elif floor > row[0]:
                conn.execute("UPDATE docs SET floor = ? WHERE doc = ?", (floor, doc))
            else:
                return int(row[0])
            conn.execute("DELETE FROM log WHERE doc = ? AND version <= ?", (doc, floor))
            conn.execute("DELETE FROM snapshots WHERE doc = ? AND version < ?", (doc, floor))
            return int(floor)

        floor: int = await self._submit(write)
        return floor

    async def follow(self, doc: str, after: int) -> AsyncIterator[int]:
        raise NotImplementedError("sqlite:// is not shared between processes")
        yield after  # pragma: no cover - makes this an async generator

    # -- reads ---------------------------------------------------------------------------------

    async def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        def run() -> Any:
            conn = self._reader()
            conn.execute("BEGIN")  # one consistent view for the whole read
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        try:
            return await asyncio.to_thread(run)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"store read failed: {exc}") from exc

    async def ping(self) -> None:
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def load(self, doc: str) -> StoredDocument | None:
        def fn(conn: sqlite3.Connection) -> StoredDocument | None:
            snap = conn.execute(
                "SELECT version, state FROM snapshots WHERE doc = ? ORDER BY version DESC LIMIT 1",
                (doc,),
            ).fetchone()
            if snap is None:
                return None
            floor_row = conn.execute("SELECT floor FROM docs WHERE doc = ?", (doc,)).fetchone()
            entries = _entries(conn, doc, snap[0])
            dedupe = conn.execute(
                "SELECT client, msg_id, version FROM log WHERE doc = ? AND client IS NOT NULL "
                "AND msg_id IS NOT NULL ORDER BY version",
                (doc,),
            ).fetchall()
            return StoredDocument(
                snapshot_version=snap[0],
                snapshot=snap[1],
                entries=entries,
                dedupe=[(c, m, v) for c, m, v in dedupe],
                floor=floor_row[0] if floor_row else 0,
            )

        result: StoredDocument | None = await self._read(fn)
        return result

    async def read_log(self, doc: str, after: int) -> list[LogEntry] | None:
        def fn(conn: sqlite3.Connection) -> list[LogEntry] | None:
            row = conn.execute("SELECT floor FROM docs WHERE doc = ?", (doc,)).fetchone()
            if after < (row[0] if row else 0) or after < 0:
                return None
            return _entries(conn, doc, after)

        result: list[LogEntry] | None = await self._read(fn)
        return result

    async def read_snapshot(self, doc: str, at_most: int) -> tuple[int, bytes] | None:
        def fn(conn: sqlite3.Connection) -> tuple[int, bytes] | None:
            row = conn.execute(
                "SELECT version, state FROM snapshots WHERE doc = ? AND version <= ? "
                "ORDER BY version DESC LIMIT 1",
                (doc, at_most),
            ).fetchone()
            return (row[0], row[1]) if row else None

        result: tuple[int, bytes] | None = await self._read(fn)
        return result


def _entries(conn: sqlite3.Connection, doc: str, after: int) -> list[LogEntry]:
    rows = conn.execute(
        "SELECT version, json_patch, immer, client, msg_id, ts FROM log "
        "WHERE doc = ? AND version > ? ORDER BY version",
        (doc, after),
    ).fetchall()
    return [LogEntry(v, jp, im, c, m, ts) for v, jp, im, c, m, ts in rows]


def _resolve(futures: list[asyncio.Future[Any]], results: list[Any],
             error: BaseException | None) -> None:
    for i, future in enumerate(futures):
        if future.done():
            continue
        if error is None:
            future.set_result(results[i])
        else:
            future.set_exception(StoreUnavailable(f"commit failed: {error}"))
