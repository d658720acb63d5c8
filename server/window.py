"""What a document's session keeps of its recent past, besides the document itself.

- :class:`Record`: one published version, serialized once per format.
- :class:`RecentLog`: the newest published records, so a join or a resume is served from memory
  (bounded by count and bytes; older versions are read from the store).
- :class:`Dedupe`: which ``(client, msg_id)`` was committed as which version, so a resent batch
  is acknowledged with its original version instead of being applied twice; entries go when
  compaction removes their version from the store.
- :class:`SnapshotPolicy`: when the next snapshot is due (every ``snapshot_every`` versions, or
  when the log since the last one outweighs it).

Plain Python, no I/O: the session (``hub.py``) owns one of each and tells them what happened.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from .messages import encode_patch
from .store import LogEntry

# the byte rule for snapshots applies only after this many versions, so a tiny document with
# large patches is not snapshotted on every version
MIN_SNAPSHOT_GAP = 8
RECENT_MAX_BYTES = 32 << 20

DedupeKey = tuple[str, str]  # (client, msg_id as JSON)


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


class RecentLog:
    """The newest published records, in version order: at most ``max_records`` of them and
    :data:`RECENT_MAX_BYTES` in all."""

    __slots__ = ("_bytes", "_records", "max_records")

    def __init__(self, max_records: int) -> None:
        self.max_records = max_records
        self._records: deque[Record] = deque()
        self._bytes = 0

    def add(self, record: Record) -> None:
        self._records.append(record)
        self._bytes += record.size
        while self._records and (len(self._records) > self.max_records
                                 or self._bytes > RECENT_MAX_BYTES):
            self._bytes -= self._records.popleft().size

    def after(self, version: int, published: int, floor: int) -> list[Record] | None:
        """The records ``version+1..published``, or None when memory does not reach back that
        far (or ``version`` is below the store's ``floor``)."""
        if version >= published:
            return []
        records = self._records
        if version < floor or not records or records[0].version > version + 1:
            return None
        start = version + 1 - records[0].version
        return [records[i] for i in range(start, len(records))]


class Dedupe:
    """``(client, msg_id)`` -> the version that batch was committed as."""

    __slots__ = ("_order", "_versions")

    def __init__(self, entries: Iterable[tuple[str, str, int]] = ()) -> None:
        self._versions: dict[DedupeKey, int] = {}
        self._order: deque[tuple[int, DedupeKey]] = deque()
        for client, msg_id, version in entries:
            self.remember((client, msg_id), version)

    def get(self, key: DedupeKey) -> int | None:
        return self._versions.get(key)

    def remember(self, key: DedupeKey, version: int) -> None:
        self._versions[key] = version
        self._order.append((version, key))

    def forget(self, key: DedupeKey) -> None:
        """A commit of ``key`` was taken back (it lost a race): not committed after all."""
        self._versions.pop(key, None)  # its _order entry goes at the next trim

    def trim(self, floor: int) -> None:
        """Forget the batches committed at or below ``floor``: the store no longer has them."""
        while self._order and self._order[0][0] <= floor:
            _, key = self._order.popleft()
            if self._versions.get(key, floor + 1) <= floor:
                del self._versions[key]

    def __len__(self) -> int:
        return len(self._versions)


class SnapshotPolicy:
    """When the next snapshot is due: every ``every`` versions, or (after
    :data:`MIN_SNAPSHOT_GAP` versions) when the log since the last snapshot has more bytes than
    that snapshot."""

    __slots__ = ("every", "log_bytes", "size", "version")

    def __init__(self, every: int, version: int, size: int) -> None:
        self.every = every
        self.version = version  # of the newest snapshot
        self.size = size  # its serialized size
        self.log_bytes = 0  # log bytes since it

    def due(self, version: int, log_bytes: int, state: Any) -> bytes | None:
        """Account for ``version`` (``log_bytes`` of log); the serialized ``state`` when a
        snapshot of it is due, else None."""
        self.log_bytes += log_bytes
        gap = version - self.version
        if gap < self.every and not (gap >= MIN_SNAPSHOT_GAP and self.log_bytes > self.size):
            return None
        serialized = orjson.dumps(state)
        self.version, self.size, self.log_bytes = version, len(serialized), 0
        return serialized
