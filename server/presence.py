"""Presence: who is in a document and what they look at. Memory only, never stored.

Sans-IO, like :mod:`server.protocol` and :mod:`server.document`: no sockets, no timers, no Redis.
:func:`parse_presence` checks a client's ``presence`` message; a :class:`PresenceTable` holds one
document's entries (this process's connections and, with several processes, the others') and
turns what changed since the last tick into the frames to send (:meth:`PresenceTable.tick`).
The IO around it (the tick timer, outboxes, token buckets, the Redis relay) is
:mod:`server.presence_hub`.

Wire format (README, "Presence")::

    client -> server  {"type":"presence","state":{...}|null,"version"?:V}
    server -> client  {"type":"presence","self":CONN,"peers":[{"conn","user","state"}...]}
                      {"type":"presence","peers":[{"conn","user","state"|null}...]}

A document lists at most :data:`MAX_LISTED` entries, the oldest first; past that the messages
carry ``"count"``: how many connections are present in all (the listed ones included).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import Forbidden, InvalidInput, TooLarge
from .patches import RESERVED_KEYS

MAX_STATE_BYTES = 2048
MAX_LISTED = 100


@dataclass(frozen=True, slots=True)
class PresenceUpdate:
    """``{"type":"presence","state":{...}|null,"version"?:V}``: a connection's whole state."""

    state_json: str | None  # the state, serialized once; None: the connection is leaving
    version: int | None = None


def parse_presence(message: dict[str, Any]) -> PresenceUpdate:
    """Check a decoded ``presence`` message; raises ``InvalidInput``, ``TooLarge`` or
    ``Forbidden`` (a reserved key, which would pollute a browser client's objects)."""
    if "state" not in message:
        raise InvalidInput("a presence message needs a state (an object, or null)")
    state = message["state"]
    version = message.get("version")
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 0
    ):
        raise InvalidInput("presence version must be a non-negative integer")
    if state is None:
        return PresenceUpdate(None, version)
    if not isinstance(state, dict):
        raise InvalidInput("presence state must be a JSON object or null")
    state_json = orjson.dumps(state)
    if len(state_json) > MAX_STATE_BYTES:
        raise TooLarge(f"presence state over {MAX_STATE_BYTES} bytes serialized")
    _check_keys(state)
    return PresenceUpdate(state_json.decode(), version)


def _check_keys(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if key in RESERVED_KEYS:
                    raise Forbidden(f"reserved key {key!r} in presence state")
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)


@dataclass(slots=True)
class Entry:
    """One connection present in a document."""

    conn: str
    user: str | None
    state_json: str = "{}"
    version: int | None = None
    local: bool = True  # a connection of this process (else relayed by another process)
    node: str = ""  # the process that holds the connection
    expires: float = float("inf")  # remote entries: removed after this (monotonic seconds)
    seq: int = 0  # the change number in its own process's table (heartbeats name it)
    _encoded: str = field(default="", repr=False)

    def encoded(self) -> str:
        """``{"conn","user","state"(,"version")}``, serialized once per state."""
        if not self._encoded:
            head = orjson.dumps({"conn": self.conn, "user": self.user}).decode()[:-1]
            tail = "" if self.version is None else f',"version":{self.version}'
            self._encoded = f'{head},"state":{self.state_json}{tail}}}'
        return self._encoded

    def gone(self) -> str:
        return orjson.dumps({"conn": self.conn, "user": self.user, "state": None}).decode()


@dataclass(slots=True)
class Tick:
    """What one tick sends: the delta to each local connection, and what to relay."""

    items: dict[str, str]  # conn -> its encoded entry in the delta
    count: str  # ',"count":N' when the total changed past the limit, else ""
    relay: list[Entry | str]  # local entries that changed (a str: the conn that is gone)
    seqs: dict[str, int] = field(default_factory=dict)  # conn -> the change's sequence number
    shared: str | None = None  # the delta for connections whose own entry did not change
    oldest: int = 0  # the oldest change in it

    def __post_init__(self) -> None:
        self.shared = _delta(list(self.items.values()), self.count)
        self.oldest = min(self.seqs.values(), default=0)

    @property
    def broadcast(self) -> int:
        return len(self.items)

    def frame_for(self, conn: str, seen: int = -1) -> str | None:
        """The delta for ``conn``: the sender is not echoed its own entry, and a connection
        whose full list was taken at sequence ``seen`` gets only what changed after it.
        None: nothing to send."""
        if conn not in self.items and seen < self.oldest:
            return self.shared
        return _delta([v for c, v in self.items.items() if c != conn and self.seqs[c] > seen],
                      self.count)


class PresenceTable:
    """One document's presence. Entries keep their join order; the first ``limit`` are listed.

    Every change is recorded; :meth:`tick` collects the latest state of each listed entry that
    changed since the previous tick (an entry updated ten times in a tick is sent once)."""

    def __init__(self, limit: int = MAX_LISTED) -> None:
        self.limit = limit
        self.entries: dict[str, Entry] = {}
        self.listed: set[str] = set()
        self._changed: dict[str, Entry | None] = {}  # listed conns -> latest (None: gone)
        self._gone: dict[str, str] = {}  # conn -> its "gone" encoding, for removed listed ones
        self._outgoing: dict[str, Entry | None] = {}  # local conns to relay
        self._seqs: dict[str, int] = {}  # listed conns -> sequence number of their last change
        self._count_changed = False
        self.seq = 0  # counts changes: what a full list taken now already holds
        # local conns -> the change number last relayed to other processes (heartbeats)
        self.relayed: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def dirty(self) -> bool:
        return bool(self._changed or self._outgoing or self._count_changed)

    def put(self, entry: Entry) -> None:
        """Add a connection, or replace its state (its place in the order is kept)."""
        old = self.entries.get(entry.conn)
        self.entries[entry.conn] = entry
        self.seq += 1
        if entry.local:
            entry.seq = self.seq
        if old is None:
            self._counted(len(self.entries) - 1)
            if len(self.listed) < self.limit:
                self.listed.add(entry.conn)
        if entry.conn in self.listed:
            self._changed[entry.conn] = entry
            self._seqs[entry.conn] = self.seq
            self._gone.pop(entry.conn, None)
        if entry.local:
            self._outgoing[entry.conn] = entry

    def remove(self, conn: str) -> bool:
        entry = self.entries.pop(conn, None)
        if entry is None:
            return False
        self._counted(len(self.entries) + 1)
        self.seq += 1
        if entry.local:
            self._outgoing[conn] = None
        if conn in self.listed:
            self.listed.discard(conn)
            self._changed[conn] = None
            self._seqs[conn] = self.seq
            self._gone[conn] = entry.gone()
            for other in self.entries:  # the oldest unlisted entry takes the free place
                if other not in self.listed:
                    self.listed.add(other)
                    self._changed[other] = self.entries[other]
                    self._seqs[other] = self.seq
                    break
        return True

    def _counted(self, before: int) -> None:
        if before > self.limit or len(self.entries) > self.limit:
            self._count_changed = True

    # -- remote entries (other processes) ------------------------------------------------------

    def refresh(self, node: str, conns: set[str], expires: float) -> list[str]:
        """A heartbeat from ``node`` naming its live connections: they live until ``expires``,
        its other entries are gone. Returns the removed conns."""
        removed = []
        for entry in list(self.entries.values()):
            if entry.node != node or entry.local:
                continue
            if entry.conn in conns:
                entry.expires = expires
            else:
                removed.append(entry.conn)
        for conn in removed:
            self.remove(conn)
        return removed

    def expire(self, now: float) -> list[str]:
        """Remove remote entries whose process stopped refreshing them."""
        dead = [e.conn for e in self.entries.values() if not e.local and e.expires < now]
        for conn in dead:
            self.remove(conn)
        return dead

    def local_entries(self) -> list[Entry]:
        return [e for e in self.entries.values() if e.local]

    def relay_all(self) -> None:
        """Relay every local entry at the next tick (another process asked for them)."""
        for entry in self.local_entries():
            self._outgoing[entry.conn] = entry

    # -- frames --------------------------------------------------------------------------------

    def full(self, self_conn: str) -> str:
        """The full list a connection gets when it starts: every listed entry but its own."""
        peers = ",".join(
            self.entries[c].encoded() for c in self.entries if c in self.listed and c != self_conn
        )
        count = f',"count":{len(self.entries)}' if len(self.entries) > self.limit else ""
        return f'{{"type":"presence","self":"{self_conn}","peers":[{peers}]{count}}}'

    def tick(self) -> Tick:
        """Take what changed since the previous tick."""
        items = {
            conn: (entry.encoded() if entry is not None else self._gone[conn])
            for conn, entry in self._changed.items()
        }
        count = f',"count":{len(self.entries)}' if self._count_changed else ""
        relay: list[Entry | str] = [
            e if e is not None else conn for conn, e in self._outgoing.items()
        ]
        for item in relay:
            if isinstance(item, Entry):
                self.relayed[item.conn] = item.seq
            else:
                self.relayed.pop(item, None)
        seqs = self._seqs
        self._changed, self._gone, self._outgoing, self._seqs = {}, {}, {}, {}
        self._count_changed = False
        return Tick(items, count, relay, seqs)


def _delta(items: list[str], count: str) -> str | None:
    if not items and not count:
        return None
    return f'{{"type":"presence","peers":[{",".join(items)}]{count}}}'
