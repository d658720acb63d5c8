"""The store interface: what a document's durability needs, and nothing about patch semantics.

A store keeps, per document, the op log (one :class:`LogEntry` per version) and snapshots, and
one server epoch. Writes (:meth:`Store.append`, :meth:`Store.snapshot`) return futures that
resolve in submission order once the write is durable; a store may group several into one
transaction (group commit). Reads are ordinary coroutines.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class LogEntry:
    version: int
    json_patch: bytes  # the RFC 6902 operations as applied (a JSON array)
    immer: bytes  # the same batch as Immer patches, as sent to Immer clients
    client: str | None = None
    msg_id: str | None = None  # the JSON encoding of the message id: 1 and "1" stay apart
    ts: float = 0.0


@dataclass(slots=True)
class StoredDocument:
    """What :meth:`Store.load` gives: the latest snapshot and the log after it."""

    snapshot_version: int
    snapshot: bytes
    entries: list[LogEntry] = field(default_factory=list)
    # (client, msg_id, version) of every retained log entry that carries a client id
    dedupe: list[tuple[str, str, int]] = field(default_factory=list)
    # the log holds every version after ``floor``: ``since=V`` can be served for V >= floor
    floor: int = 0


class Store(Protocol):
    @property
    def epoch(self) -> str: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise when the store cannot be reached."""

    async def load(self, doc: str) -> StoredDocument | None:
        """The latest snapshot, the log after it, and the dedupe records; None if unknown."""

    def append(self, doc: str, entry: LogEntry) -> asyncio.Future[None]:
        """Commit one log entry; resolves (in order) when durable."""

    def snapshot(self, doc: str, version: int, state: bytes, keep: int) -> asyncio.Future[int]:
        """Save a snapshot at ``version`` (ordered after earlier appends) and compact: the new
        floor is the newest snapshot at or below ``version - keep``; log entries up to it and
        older snapshots are deleted, so every version from the floor on can be rebuilt.
        Resolves with the floor."""

    async def read_log(self, doc: str, after: int) -> list[LogEntry] | None:
        """Committed entries with version > ``after``, in order; None when ``after`` < floor."""

    async def read_snapshot(self, doc: str, at_most: int) -> tuple[int, bytes] | None:
        """The newest snapshot with version <= ``at_most``."""
