"""``redis://HOST:PORT/DB``: the shared store, for several server processes (redis-py asyncio).

Per document (keys carry a ``{doc}`` hash tag, so one document lives in one cluster slot):

- ``ips:{doc}:log``     a Stream; entry ID ``<version>-0``, fields jp, im, c, m, ts
- ``ips:{doc}:head``    the newest committed version
- ``ips:{doc}:dedupe``  hash ``client \\n msg_id`` -> version, for every retained entry
- ``ips:{doc}:snaps``   sorted set of snapshot versions; ``ips:{doc}:snapdata`` their states
- ``ips:{doc}:floor``   the log holds every version after it
- ``ips:epoch``         the server epoch

A commit is one Lua script: for each entry, in order, it answers a duplicate (client, msg_id)
with the version it was committed as, refuses the entry if the head is no longer the version
before it, or appends it, records its (client, msg_id) and moves the head; all atomically.
Ordering comes from the stream IDs, never from clocks. What an acknowledgement means on a Redis
crash depends on Redis' AOF setting (``appendfsync always``: nothing acknowledged is lost).

Reads (and ``PING``) are retried on a connection error: after Redis restarts, each pooled
connection fails its first command, and a read is safe to repeat. Writes are not: a commit whose
reply was lost may have been applied, so its failure drops the document's session and the
clients resume (a resend meets its (client, msg_id) in the dedupe index).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from ..errors import StoreUnavailable
from .base import CommitResult, Duplicate, LogEntry, Stale, StoredDocument

COMMIT = """
local head = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local b = 2 + i * 6
  local v = tonumber(ARGV[b])
  local client, mid = ARGV[b + 3], ARGV[b + 4]
  if client ~= '' then
    local seen = redis.call('HGET', KEYS[3], client .. '\\n' .. mid)
    if seen then
      redis.call('SET', KEYS[1], head)
      return {i, 2, tonumber(seen)}
    end
  end
  if v ~= head + 1 then
    redis.call('SET', KEYS[1], head)
    return {i, 1, head}
  end
  redis.call('XADD', KEYS[2], v .. '-0', 'jp', ARGV[b + 1], 'im', ARGV[b + 2],
             'c', client, 'm', mid, 'ts', ARGV[b + 5])
  if client ~= '' then
    redis.call('HSET', KEYS[3], client .. '\\n' .. mid, v)
  end
  head = v
end
redis.call('SET', KEYS[1], head)
return {n, 0, head}
"""

SNAPSHOT = """
local version, keep = tonumber(ARGV[1]), tonumber(ARGV[3])
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[1], version, ARGV[1])
end
local below = redis.call('ZREVRANGEBYSCORE', KEYS[1], version - keep, '-inf', 'LIMIT', 0, 1)
local floor = tonumber(below[1] or '0')
local current = tonumber(redis.call('GET', KEYS[3]) or '0')
if floor <= current then
  return current
end
redis.call('SET', KEYS[3], floor)
for _, e in ipairs(redis.call('XRANGE', KEYS[4], '-', floor .. '-0')) do
  local f = e[2]
  local client, mid = '', ''
  for j = 1, #f, 2 do
    if f[j] == 'c' then client = f[j + 1] elseif f[j] == 'm' then mid = f[j + 1] end
  end
  if client ~= '' then redis.call('HDEL', KEYS[5], client .. '\\n' .. mid) end
end
redis.call('XTRIM', KEYS[4], 'MINID', (floor + 1) .. '-0')
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. floor)) do
  redis.call('HDEL', KEYS[2], old)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. floor)
return floor
"""


def _key(doc: str, part: str) -> str:
    return f"ips:{{{doc}}}:{part}"


def _entry(stream_id: bytes, fields: dict[bytes, bytes]) -> LogEntry:
    client = fields.get(b"c", b"").decode() or None
    msg_id = fields.get(b"m", b"").decode() or None
    return LogEntry(
        version=int(stream_id.split(b"-", 1)[0]),
        json_patch=fields[b"jp"],
        immer=fields[b"im"],
        client=client,
        msg_id=msg_id if client else None,
        ts=float(fields.get(b"ts", b"0")),
    )


class RedisStore:
    shared = True

    def __init__(self, url: str) -> None:
        self.url = url
        # a read meeting a dead pooled connection: the connection is dropped and the read runs
        # again on a fresh one (at most 3 more times, within about a second)
        self._reads = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 3)
        self._epoch = ""
        self._redis: aioredis.Redis | None = None
        self._commit: Any = None
        self._snapshot: Any = None

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def redis(self) -> aioredis.Redis:
        assert self._redis is not None, "store is not open"
        return self._redis

    async def open(self) -> None:
        # a Redis that does not answer a connection attempt is down: say so within seconds
        self._redis = aioredis.from_url(self.url, decode_responses=False,
                                        health_check_interval=10, socket_connect_timeout=5)
        try:
            await self.redis.set("ips:epoch", uuid.uuid4().hex, nx=True)
            epoch: Any = await self.redis.get("ips:epoch")
            self._epoch = epoch.decode()
        except RedisError as exc:
            raise StoreUnavailable(f"cannot reach Redis at {self.url}: {exc}") from exc
        self._commit = self.redis.register_script(COMMIT)
        self._snapshot = self.redis.register_script(SNAPSHOT)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def ping(self) -> None:
        try:
            await self._reads.call_with_retry(self.redis.ping, _ignore)
        except RedisError as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc

    async def commit(self, doc: str, entries: list[LogEntry]) -> list[CommitResult]:
        args: list[Any] = [len(entries)]
        for e in entries:
            args += [e.version, e.json_patch, e.immer, e.client or "", e.msg_id or "", e.ts]
        keys = [_key(doc, "head"), _key(doc, "log"), _key(doc, "dedupe")]
        try:
            done, kind, value = await self._commit(keys=keys, args=args)
        except RedisError as exc:
            raise StoreUnavailable(f"Redis commit failed: {exc}") from exc
        results: list[CommitResult] = [None] * int(done)
        if int(kind) == 1:
            results.append(Stale(int(value)))
        elif int(kind) == 2:
            results.append(Duplicate(int(value)))
        results += [Stale(int(value))] * (len(entries) - len(results))
        return results

    async def snapshot(self, doc: str, version: int, state: bytes, keep: int) -> int:
        keys = [_key(doc, "snaps"), _key(doc, "snapdata"), _key(doc, "floor"), _key(doc, "log"),
                _key(doc, "dedupe")]
        try:
            floor = await self._snapshot(keys=keys, args=[version, state, keep])
        except RedisError as exc:
            raise StoreUnavailable(f"Redis snapshot failed: {exc}") from exc
        return int(floor)

    async def _transaction(self, build: Any) -> list[Any]:
        async def run() -> list[Any]:
            async with self.redis.pipeline(transaction=True) as pipe:
                build(pipe)
                result: list[Any] = await pipe.execute()
                return result

        try:
            return await self._reads.call_with_retry(run, _ignore)
        except RedisError as exc:
            raise StoreUnavailable(f"Redis read failed: {exc}") from exc

    async def load(self, doc: str) -> StoredDocument | None:
        newest = await self._transaction(
            lambda p: p.zrevrange(_key(doc, "snaps"), 0, 0))
        if not newest[0]:
            return None
        version = int(newest[0][0])
        snap, raw, dedupe, floor = await self._transaction(lambda p: (
            p.hget(_key(doc, "snapdata"), str(version)),
            p.xrange(_key(doc, "log"), f"{version + 1}-0", "+"),
            p.hgetall(_key(doc, "dedupe")),
            p.get(_key(doc, "floor")),
        ))
        if snap is None:  # compacted between the two reads: start over
            return await self.load(doc)
        records = []
        for field, v in dedupe.items():
            client, _, msg_id = field.decode().partition("\n")
            records.append((client, msg_id, int(v)))
        return StoredDocument(version, snap, [_entry(i, f) for i, f in raw], records,
                              int(floor or 0))

    async def read_log(self, doc: str, after: int) -> list[LogEntry] | None:
        floor, raw = await self._transaction(lambda p: (
            p.get(_key(doc, "floor")),
            p.xrange(_key(doc, "log"), f"{after + 1}-0", "+"),
        ))
        if after < int(floor or 0) or after < 0:
            return None
        return [_entry(i, f) for i, f in raw]

    async def read_snapshot(self, doc: str, at_most: int) -> tuple[int, bytes] | None:
        found = await self._transaction(
            lambda p: p.zrevrangebyscore(_key(doc, "snaps"), at_most, "-inf", start=0, num=1))
        if not found[0]:
            return None
        version = int(found[0][0])
        (state,) = await self._transaction(lambda p: p.hget(_key(doc, "snapdata"), str(version)))
        return None if state is None else (version, state)

    async def follow(self, doc: str, after: int) -> AsyncIterator[int]:
        """Block on the stream; yield the newest version each time entries arrive."""
        last = f"{after}-0" if after > 0 else "0-0"
        while True:
            try:
                got: Any = await self.redis.xread({_key(doc, "log"): last}, count=1000,
                                                  block=5000)
            except RedisError as exc:
                raise StoreUnavailable(f"Redis follow failed: {exc}") from exc
            except asyncio.CancelledError:
                raise
            for _, entries in got or ():
                if entries:
                    last = entries[-1][0].decode()
                    yield int(last.split("-", 1)[0])


async def _ignore(error: Exception) -> None:
    """A failed read's connection is already closed by redis-py: nothing more to do."""
