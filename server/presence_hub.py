"""Presence in this process: per document a :class:`~server.presence.PresenceTable`, the tick
that broadcasts it, and the relay to other processes.

A connection takes part once it asks (``presence=1`` on the URL, or its first ``presence``
message): it is listed (state ``{}`` until it sets one) and gets the full list, then deltas.
Changes are collected per document and sent once per tick (``--presence-tick``, 50 ms) through
the connections' outboxes, coalesced with everything else; the sender is not echoed.

Liveness: an entry goes the moment its socket closes (:meth:`Member.leave`). A socket that stops
answering is closed by uvicorn's WebSocket keepalive: the CLI sets its ping interval and pong
timeout to half of ``--presence-ttl`` each, so a dead socket's entry is gone within the TTL of
its last answered ping, and clients send no renewal traffic. ASGI does not pass pings and pongs
to the application, which is why liveness is delegated to the server's own pings. Entries of
other processes (Redis) live until ``expires``, refreshed by their process's heartbeat every
third of the TTL: a process that dies takes its entries with it after at most the TTL.

Relay messages (JSON, one channel per document)::

    {"n":NODE,"u":[{"s":SEQ,"e":{"conn","user","state"|null,"version"?}}...]}  changed entries
    {"n":NODE,"hb":{CONN:SEQ...}}  heartbeat: NODE's live connections and the change number of
                                   each (others of NODE are gone; one we do not know, or know
                                   at another change, was missed while Redis was away: ask)
    {"n":NODE,"ask":1}             a process started following the document: send your entries
    {"n":NODE,"bye":1}             a process is shutting down: its entries are gone
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import orjson

from .errors import Forbidden
from .messages import encode_error
from .outbox import Outbox
from .presence import Entry, PresenceTable, PresenceUpdate
from .presence_relay import Relay
from .ratelimit import TokenBucket

if TYPE_CHECKING:
    from .config import Settings
    from .metrics import Metrics

log = logging.getLogger("server.presence")


class Member:
    """One protocol-1 connection as presence sees it."""

    def __init__(self, presence: Presence, doc: str, outbox: Outbox, user: str | None,
                 read_only: bool) -> None:
        self.presence = presence
        self.doc = doc
        self.outbox = outbox
        self.user = user
        self.read_only = read_only
        self.conn = f"{presence.node}.{next(presence.ids)}"
        settings = presence.settings
        self.bucket = (TokenBucket(settings.presence_rate, settings.presence_burst)
                       if settings.presence_rate > 0 else None)
        self.joined = False
        self.seen = -1  # the table's sequence number when this member got its full list
        self.warned = False

    def join(self) -> None:
        """Take part: listed with ``{}``, and sent the full list (after ``synced``)."""
        if self.joined:
            return
        self.joined = True
        room = self.presence.room(self.doc)
        room.members[self.conn] = self
        room.table.put(self._entry("{}", None))
        self.outbox.put(room.table.full(self.conn))
        self.seen = room.table.seq
        room.changed()

    def update(self, update: PresenceUpdate) -> None:
        """A ``presence`` message: over the rate it is dropped and counted, never an error."""
        metrics = self.presence.metrics
        metrics.presence_in.inc()
        if self.read_only and not self.presence.settings.presence_read_only:
            metrics.presence_dropped.labels("read_only").inc()
            if not self.warned:
                self.warned = True
                off = Forbidden("presence is off for read-only connections")
                self.outbox.put(encode_error(off))
            return
        if self.bucket is not None and self.bucket.take() > 0:
            metrics.presence_dropped.labels("rate").inc()
            return
        self.join()
        room = self.presence.room(self.doc)
        if update.state_json is None:
            room.table.remove(self.conn)
        else:
            room.table.put(self._entry(update.state_json, update.version))
        room.changed()

    def leave(self) -> None:
        if not self.joined:
            return
        self.joined = False
        room = self.presence.rooms.get(self.doc)
        if room is None:
            return
        room.members.pop(self.conn, None)
        room.table.remove(self.conn)
        room.changed()

    def _entry(self, state_json: str, version: int | None) -> Entry:
        return Entry(self.conn, self.user, state_json, version, local=True,
                     node=self.presence.node)


class Room:
    """One document's presence in this process."""

    def __init__(self, presence: Presence, doc: str) -> None:
        self.presence = presence
        self.doc = doc
        self.table = PresenceTable()
        self.members: dict[str, Member] = {}
        self.timer: asyncio.TimerHandle | None = None

    def changed(self) -> None:
        if not self.table.dirty:
            self.presence.drop_if_empty(self)
            return
        tick = self.presence.settings.presence_tick
        if tick <= 0:
            self.flush()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(tick, self.flush)

    def flush(self) -> None:
        """One tick: the latest state of each changed entry to every member but its own."""
        self.timer = None
        tick = self.table.tick()
        metrics = self.presence.metrics
        if tick.items:
            metrics.presence_broadcast.inc(tick.broadcast)
            for member in self.members.values():
                frame = tick.frame_for(member.conn, member.seen)
                if frame is not None:
                    member.outbox.put(frame)
        elif tick.shared is not None:  # only the count changed
            for member in self.members.values():
                member.outbox.put(tick.shared)
        if tick.relay:
            items = ",".join(
                f'{{"s":{e.seq},"e":{e.encoded()}}}' if isinstance(e, Entry) else _gone(e)
                for e in tick.relay
            )
            self.presence.publish(self.doc, f'"u":[{items}]')
        self.presence.drop_if_empty(self)


def _gone(conn: str) -> str:
    return orjson.dumps({"e": {"conn": conn, "state": None}}).decode()


class Presence:
    """Every document's presence in this process."""

    def __init__(self, settings: Settings, metrics: Metrics, relay: Relay | None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.relay = relay
        self.node = secrets.token_hex(4)
        self.ids = itertools.count(1)
        self.rooms: dict[str, Room] = {}
        self._heartbeat: asyncio.Task[None] | None = None

    def member(self, doc: str, outbox: Outbox, user: str | None, read_only: bool) -> Member:
        return Member(self, doc, outbox, user, read_only)

    def room(self, doc: str) -> Room:
        room = self.rooms.get(doc)
        if room is None:
            room = self.rooms[doc] = Room(self, doc)
            if self.relay is not None:
                self.relay.subscribe(doc)
                self.publish(doc, '"ask":1')
        return room

    def drop_if_empty(self, room: Room) -> None:
        """A document nobody here takes part in is forgotten (and no longer followed)."""
        if room.members or room.timer is not None or room.table.dirty:
            return
        if self.rooms.get(room.doc) is room:
            del self.rooms[room.doc]
            if self.relay is not None:
                self.relay.unsubscribe(room.doc)

    def peers(self) -> dict[str, int]:
        return {doc: len(room.table) for doc, room in self.rooms.items()}

    # -- other processes -----------------------------------------------------------------------

    def publish(self, doc: str, body: str) -> None:
        if self.relay is not None:
            self.relay.publish(doc, f'{{"n":"{self.node}",{body}}}'.encode())

    def on_relay(self, doc: str, payload: bytes) -> None:
        room = self.rooms.get(doc)
        message: Any = orjson.loads(payload)
        node = message.get("n")
        if room is None or not isinstance(node, str) or node == self.node:
            return
        expires = time.monotonic() + self.settings.presence_ttl
        table = room.table
        if "u" in message:
            for item in message["u"]:
                e = item["e"]
                if e.get("state") is None:
                    table.remove(e["conn"])
                else:
                    table.put(Entry(e["conn"], e.get("user"), orjson.dumps(e["state"]).decode(),
                                    e.get("version"), local=False, node=node, expires=expires,
                                    seq=item.get("s", 0)))
        elif "hb" in message:
            live: dict[str, int] = message["hb"]
            table.refresh(node, set(live), expires)
            known = table.entries
            if any(c not in known or known[c].seq != s for c, s in live.items()):
                self.publish(doc, '"ask":1')  # we missed some (Redis was away): ask again
        elif "ask" in message:
            table.relay_all()
        elif "bye" in message:
            table.refresh(node, set(), expires)
        room.changed()

    async def start(self) -> None:
        if self.relay is not None:
            await self.relay.open(self.on_relay)
        self._heartbeat = asyncio.create_task(self._beat(), name="presence:heartbeat")

    async def _beat(self) -> None:
        """Every third of the TTL: tell the other processes who is still here, and forget the
        entries of processes that stopped telling."""
        while True:
            await asyncio.sleep(self.settings.presence_ttl / 3)
            now = time.monotonic()
            for room in list(self.rooms.values()):
                try:
                    if self.relay is not None:
                        # what was relayed so far: the others hold exactly that
                        live = orjson.dumps(room.table.relayed).decode()
                        self.publish(room.doc, f'"hb":{live}')
                    if room.table.expire(now):
                        room.changed()
                except Exception:  # the heartbeat must go on
                    log.exception("presence heartbeat failed for doc=%s", room.doc)

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        for room in self.rooms.values():
            if room.timer is not None:
                room.timer.cancel()
            self.publish(room.doc, '"bye":1')
        if self.relay is not None:
            await self.relay.close()
