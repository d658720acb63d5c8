"""Presence across processes: one Redis pub/sub channel per document (``ips:{doc}:presence``).

Presence is never stored, so it does not go through the store: processes that share a Redis
store tell each other about their connections over pub/sub. Messages are small JSON objects made
and read by :mod:`server.presence_hub`; this module only moves bytes. Publishing never blocks
the caller: messages go out in order from one task. With a store that is not shared there is no
relay (:func:`open_relay` gives None).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

log = logging.getLogger("server.presence")

OnMessage = Callable[[str, bytes], None]  # (document id, payload)


class Relay(Protocol):
    async def open(self, on_message: OnMessage) -> None: ...

    async def close(self) -> None: ...

    def subscribe(self, doc: str) -> None:
        """Start receiving the document's channel (queued, in order with publications)."""

    def unsubscribe(self, doc: str) -> None: ...

    def publish(self, doc: str, payload: bytes) -> None:
        """Queue ``payload`` for the document's channel (never blocks; sent in order)."""


def channel(doc: str) -> str:
    return f"ips:{{{doc}}}:presence"


def open_relay(store_url: str) -> Relay | None:
    if urlsplit(store_url).scheme in ("redis", "rediss", "unix"):
        return RedisRelay(store_url)
    return None


class RedisRelay:
    def __init__(self, url: str) -> None:
        self.url = url
        self._redis: Any = None
        self._pubsub: Any = None
        # (command, channel, payload): subscriptions and publications, in the order asked
        self._outgoing: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue(maxsize=10_000)
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        self._on_message: OnMessage = lambda doc, payload: None

    async def open(self, on_message: OnMessage) -> None:
        import redis.asyncio as aioredis

        self._on_message = on_message
        self._redis = aioredis.from_url(self.url, decode_responses=False,
                                        health_check_interval=10)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        self._tasks = [asyncio.create_task(self._read(), name="presence:read"),
                       asyncio.create_task(self._write(), name="presence:write")]

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):  # the goodbyes queued last go out first
            await asyncio.wait_for(self._outgoing.join(), timeout=1.0)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            if self._pubsub is not None:
                await self._pubsub.aclose()
            if self._redis is not None:
                await self._redis.aclose()

    def subscribe(self, doc: str) -> None:
        self._queue("subscribe", doc, b"")

    def unsubscribe(self, doc: str) -> None:
        self._queue("unsubscribe", doc, b"")

    def publish(self, doc: str, payload: bytes) -> None:
        self._queue("publish", doc, payload)

    def _queue(self, command: str, doc: str, payload: bytes) -> None:
        try:
            self._outgoing.put_nowait((command, channel(doc), payload))
        except asyncio.QueueFull:  # Redis is gone or slow: presence is best effort
            log.warning("presence relay queue full, dropping a %s for doc=%s", command, doc)

    async def _write(self) -> None:
        while True:
            command, name, payload = await self._outgoing.get()
            try:
                if command == "publish":
                    await self._redis.publish(name, payload)
                elif command == "subscribe":
                    await self._pubsub.subscribe(name)
                    self._subscribed.set()
                else:
                    await self._pubsub.unsubscribe(name)
            except Exception as exc:  # the next tick or heartbeat sends newer state
                log.warning("presence relay %s failed: %s", command, exc)
            finally:
                self._outgoing.task_done()

    async def _read(self) -> None:
        from redis.exceptions import RedisError

        while True:
            await self._subscribed.wait()
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except (RedisError, OSError) as exc:  # reconnects and re-subscribes on the next call
                log.warning("presence relay read failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            if message is None or message.get("type") != "message":
                continue
            name = message["channel"].decode()
            doc = name[len("ips:{"):-len("}:presence")]
            try:
                self._on_message(doc, message["data"])
            except Exception:  # a bad message must not stop the relay
                log.exception("presence relay message failed")
