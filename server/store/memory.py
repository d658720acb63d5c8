"""``memory://``: the store for tests and ephemeral use. Same retention as the durable stores."""

from __future__ import annotations

import bisect
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

from .base import CommitResult, LogEntry, StoredDocument


class _Doc:
    __slots__ = ("entries", "floor", "snapshots")

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []
        self.snapshots: list[tuple[int, bytes]] = []
        self.floor = 0


class MemoryStore:
    shared = False

    def __init__(self) -> None:
        self._epoch = uuid.uuid4().hex
        self._docs: dict[str, _Doc] = {}

    @property
    def epoch(self) -> str:
        return self._epoch

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def load(self, doc: str) -> StoredDocument | None:
        d = self._docs.get(doc)
        if d is None or not d.snapshots:
            return None
        version, state = d.snapshots[-1]
        return StoredDocument(
            snapshot_version=version,
            snapshot=state,
            entries=[e for e in d.entries if e.version > version],
            dedupe=[(e.client, e.msg_id, e.version) for e in d.entries
                    if e.client is not None and e.msg_id is not None],
            floor=d.floor,
        )

    async def commit(self, doc: str, entries: list[LogEntry]) -> list[CommitResult]:
        # exact-size copies: orjson's output keeps its (larger) buffer, about 1 KiB each
        self._docs.setdefault(doc, _Doc()).entries.extend(
            replace(e, json_patch=memoryview(e.json_patch).tobytes(),
                    immer=memoryview(e.immer).tobytes())
            for e in entries
        )
        return [None] * len(entries)

    async def snapshot(self, doc: str, version: int, state: bytes, keep: int) -> int:
        d = self._docs.setdefault(doc, _Doc())
        if not d.snapshots or d.snapshots[-1][0] < version:
            d.snapshots.append((version, state))
        first = max((i for i, (v, _) in enumerate(d.snapshots) if v <= version - keep),
                    default=0)
        floor = d.snapshots[first][0]
        if floor > d.floor:
            d.floor = floor
            cut = bisect.bisect_right([e.version for e in d.entries], floor)
            del d.entries[:cut]
            del d.snapshots[:first]
        return d.floor

    async def read_log(self, doc: str, after: int) -> list[LogEntry] | None:
        d = self._docs.get(doc)
        if d is None:
            return [] if after >= 0 else None
        if after < d.floor:
            return None
        return [e for e in d.entries if e.version > after]

    async def read_snapshot(self, doc: str, at_most: int) -> tuple[int, bytes] | None:
        d = self._docs.get(doc)
        if d is None:
            return None
        candidates = [s for s in d.snapshots if s[0] <= at_most]
        return candidates[-1] if candidates else None

    async def follow(self, doc: str, after: int) -> AsyncIterator[int]:
        raise NotImplementedError("memory:// is not shared between processes")
        yield after  # pragma: no cover - makes this an async generator
