"""The store interface: what a document's durability needs, and nothing about patch semantics.

A store keeps, per document, the op log (one :class:`LogEntry` per version), snapshots, and one
server epoch. :meth:`Store.commit` appends a run of consecutive versions atomically per entry:
an entry is committed only if the document's head is still the version before it and its
(client, msg_id) pair was never committed (a compare-and-set; single-writer stores always
succeed). A store may group commits of several documents into one transaction (group commit).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
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


@dataclass(frozen=True, slots=True)
class Stale:
    """Not committed: another writer moved the head first (shared stores only)."""

    head: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Not committed: this (client, msg_id) was committed before, as ``version``."""

    version: int


CommitResult = None | Stale | Duplicate  # None: committed


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

    @property
    def shared(self) -> bool:
        """True when other server processes may commit to the same documents."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise when the store cannot be reached."""

    async def load(self, doc: str) -> StoredDocument | None:
        """The latest snapshot, the log after it, and the dedupe records; None if unknown."""

    async def commit(self, doc: str, entries: list[LogEntry]) -> list[CommitResult]:
        """Commit consecutive entries, in order; durable when this returns. After the first
        entry that is not committed, none of the following ones is."""

    async def snapshot(self, doc: str, version: int, state: bytes, keep: int) -> int:
        """Save a snapshot at ``version`` (kept if one exists) and compact: the new floor is the
        newest snapshot at or below ``version - keep``; log entries up to it and older
        snapshots are deleted, so every version from the floor on can be rebuilt. Returns the
        floor."""

    async def read_log(self, doc: str, after: int) -> list[LogEntry] | None:
        """Committed entries with version > ``after``, in order; None when ``after`` < floor."""

    async def read_snapshot(self, doc: str, at_most: int) -> tuple[int, bytes] | None:
        """The newest snapshot with version <= ``at_most``."""

    def follow(self, doc: str, after: int) -> AsyncIterator[int]:
        """Shared stores: yield the head version whenever others commit after ``after``."""
