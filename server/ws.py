"""WebSocket endpoints: protocol 1 (``/ws``, ``/ws/{doc}``) and lesson mode (``/``).

Thin: check who is connecting, read frames, hand each to :mod:`server.protocol` and the request
to the document's :class:`~server.hub.Session`. Everything sent goes through the connection's
:class:`~server.outbox.Outbox`, drained by its own task; when the outbox is shut down (slow
consumer, store failure) the connection is closed with the code it recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Coroutine
from typing import Any

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from .access import Handshake, Role, origin_allowed, presence_user
from .auth import Authenticator
from .config import CLIENT_ID_RE, DEFAULT_DOC, DOC_ID_RE
from .errors import CloseCode, ErrorCode, Forbidden, InvalidInput, RateLimited, ServerError
from .hooks import HookContext, HookRunner
from .hub import Hub, Session, Subscriber
from .messages import FORMATS, Format, PatchRequest, encode_error
from .outbox import Outbox
from .presence import PresenceUpdate
from .presence_hub import Member
from .protocol import RejectedRequest, parse_frame, parse_lesson_frame
from .ratelimit import TokenBucket
from .wsfast import frame_writer

logger = logging.getLogger("server.ws")
_ids = itertools.count(1)
BEARER_PREFIX = "bearer."
EXPIRED = "unauthorized: the token has expired"


class ConnectionLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Every line about a connection carries its id, document and client."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"conn={extra['conn']} doc={extra['doc']} client={extra['client']} {msg}", kwargs


class _Params:
    def __init__(self, websocket: WebSocket, lesson: bool) -> None:
        query = websocket.query_params
        self.doc = DEFAULT_DOC if lesson else websocket.path_params.get("doc", DEFAULT_DOC)
        self.subprotocol: str | None = None
        self.token = query.get("token") or None
        for offered in websocket.scope.get("subprotocols", []):
            if offered.startswith(BEARER_PREFIX):
                self.token, self.subprotocol = offered[len(BEARER_PREFIX):], offered
        if not DOC_ID_RE.match(self.doc):
            raise InvalidInput("document id must be 1-128 characters of [A-Za-z0-9._-]")
        fmt = "immer" if lesson else query.get("format", "immer")
        if fmt not in FORMATS:
            raise InvalidInput("format must be immer or json-patch")
        self.fmt: Format = "immer" if fmt == "immer" else "json-patch"
        self.since = None if lesson else _int_param(query.get("since"), "since")
        self.epoch = None if lesson else (query.get("epoch") or None)
        self.client = None if lesson else (query.get("client") or None)
        self.presence = not lesson and query.get("presence") in ("1", "true")
        if self.client is not None and not CLIENT_ID_RE.match(self.client):
            raise InvalidInput("client must be 1-128 characters of [A-Za-z0-9._:-]")


def _int_param(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit():
        raise InvalidInput(f"{name} must be a non-negative integer")
    return int(raw)


async def endpoint(websocket: WebSocket, lesson: bool) -> None:
    hub: Hub = websocket.app.state.hub
    settings = hub.settings
    if not origin_allowed(websocket.headers.get("origin"), websocket.headers.get("host"),
                          settings.allow_origins):
        logger.warning("refused upgrade from origin %s", websocket.headers.get("origin"))
        await websocket.close(CloseCode.POLICY_VIOLATION)  # before accept: HTTP 403
        return
    try:
        params = _Params(websocket, lesson)
    except ServerError as exc:
        await websocket.accept()
        await _refuse(websocket, exc)
        return
    await websocket.accept(subprotocol=params.subprotocol)
    # no frame is read before the client is admitted (authentication, authorization, on_connect)
    auth: Authenticator = websocket.app.state.auth
    hooks: HookRunner = websocket.app.state.hooks
    conn = next(_ids)
    try:
        principal, role = await auth.admit(Handshake(
            "websocket", params.doc, params.token, websocket.headers, websocket.query_params,
            params.client))
        session = await hub.session(params.doc)
        context = HookContext(principal, params.doc, str(conn))
        await hooks.connect(context)
    except ServerError as exc:
        await _refuse(websocket, exc)
        return
    log = ConnectionLog(logger, {"conn": conn, "doc": params.doc,
                                 "client": params.client or "-"})
    writer = frame_writer(websocket.scope)  # prepared frames, when the server offers them
    outbox = Outbox(writer.send if writer else websocket.send_text, lesson=lesson,
                    max_messages=settings.max_queue_messages, max_bytes=settings.max_queue_bytes,
                    on_sent=hub.metrics.bytes_out_per_turn.inc,
                    write_now=writer.try_write if writer else None)
    sub = Subscriber(outbox, params.fmt, lesson, params.client, read_only=role is Role.READ,
                     context=context)
    bucket = TokenBucket(settings.rate, settings.burst) if settings.rate > 0 else None
    member = None if lesson else hub.presence.member(params.doc, outbox, presence_user(principal),
                                                     role is Role.READ)
    mode = "lesson" if lesson else "protocol"
    hub.metrics.connections.labels(mode).inc()
    log.info("connected mode=%s format=%s role=%s since=%s", mode, params.fmt, role.value,
             params.since)
    expiry = None
    if principal.expires is not None:  # readers too: the connection ends with its credential
        loop = asyncio.get_running_loop()
        expiry = loop.call_at(loop.time() + max(0.0, principal.expires - time.time()),
                              outbox.shutdown, CloseCode.POLICY_VIOLATION, EXPIRED)
    try:
        await _serve(websocket, session, sub, params, bucket, log, member)
    finally:
        if expiry is not None:
            expiry.cancel()
        hub.metrics.connections.labels(mode).dec()
        await hooks.disconnect(context)


async def _refuse(websocket: WebSocket, exc: ServerError) -> None:
    code = CloseCode.INTERNAL_ERROR if exc.http_status >= 500 else CloseCode.POLICY_VIOLATION
    logger.warning("refused path=%s code=%s: %s", websocket.url.path, exc.code.value, exc.message)
    with contextlib.suppress(Exception):
        await websocket.send_text(encode_error(exc))
        await websocket.close(code, exc.message[:120])


async def _serve(websocket: WebSocket, session: Session, sub: Subscriber, params: _Params,
                 bucket: TokenBucket | None, log: ConnectionLog, member: Member | None) -> None:
    """Join the session, then read the client's frames in this (the connection's) task until
    the client leaves or the outbox shuts down; then close. No other task is kept per
    connection: the outbox starts a sender only while something is queued."""
    outbox = sub.outbox
    task = asyncio.current_task()
    assert task is not None
    reading = _Reading(task)
    outbox.on_done = reading.interrupt
    try:
        await session.join(sub, params.since, params.epoch)  # the catch-up is queued first
        if member is not None and params.presence:
            member.join()  # the full presence list, after synced
        await _receive(websocket, session, sub, bucket, member, reading)
    except asyncio.CancelledError:
        if not reading.interrupted or task.uncancel() > 0:
            raise  # cancelled from outside (not by the outbox): let it through
    except ServerError as exc:  # the store failed while catching up: the reason says so
        outbox.shutdown(CloseCode.INTERNAL_ERROR, exc.message[:120])
    except Exception:  # a bug: logged, and the client told (1011), as any server error
        log.exception("unexpected error on this connection")
        outbox.shutdown(CloseCode.INTERNAL_ERROR, "internal error: reconnect and resume")
    finally:
        outbox.on_done = None
        session.leave(sub)
        if member is not None:
            member.leave()
        code = outbox.close_code
        if code is None:  # the client went away, or a send failed: nothing more to send
            outbox.shutdown(None)
            await outbox.stop()
            log.info("disconnected frames_sent=%d", outbox.sent_frames)
        else:
            await outbox.stop()  # it may be stuck sending to a client that does not read
            if code == CloseCode.TRY_AGAIN_LATER:
                session.metrics.slow_disconnects.inc()
            log.warning("closing code=%d reason=%s", code, outbox.close_reason)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(code, outbox.close_reason), timeout=2)


class _Reading:
    """The connection's task while it waits for a frame (``waiting``, set by :func:`_receive`):
    the outbox's ``on_done`` interrupts that wait (cancels it), and nothing else. A shutdown
    from within the task itself (while handling a frame) is seen by the loop's check of
    ``outbox.closed`` instead."""

    __slots__ = ("interrupted", "task", "waiting")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.waiting = False
        self.interrupted = False

    def interrupt(self) -> None:
        if self.waiting and not self.interrupted:
            self.interrupted = True
            self.task.cancel()


async def _receive(websocket: WebSocket, session: Session, sub: Subscriber,
                   bucket: TokenBucket | None, member: Member | None, reading: _Reading) -> None:
    metrics = session.metrics
    while not sub.outbox.closed:
        reading.waiting = True  # (inline: a coroutine per connection less, ~200 bytes)
        try:
            message = await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            reading.waiting = False
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            metrics.bytes_in.inc(len(message.get("bytes") or b""))
            metrics.frame_errors.inc()
            if sub.lesson:
                session.reject_now(sub, None, InvalidInput("frames must be JSON text"))
            else:
                sub.outbox.put(encode_error(InvalidInput("frames must be JSON text")))
            continue
        metrics.bytes_in.inc(len(text))
        _handle(session, sub, text, bucket, member)


def _handle(session: Session, sub: Subscriber, text: str, bucket: TokenBucket | None,
            member: Member | None = None) -> None:
    limits = session.settings.limits
    request: PatchRequest | PresenceUpdate
    try:
        if sub.lesson:
            request = parse_lesson_frame(text, limits)
        else:
            request = parse_frame(text, sub.fmt, limits)
    except RejectedRequest as rejected:
        session.reject_now(sub, rejected.msg_id, rejected.error)
        return
    except ServerError as exc:
        if sub.lesson:
            session.reject_now(sub, None, exc)
        else:
            session.metrics.frame_errors.inc()
            sub.outbox.put(encode_error(exc))
        return
    if sub.context is not None and sub.context.principal.expired():
        # the credential expired during the session: nothing of this batch is applied; the
        # client reconnects with a fresh token and resends it (resume and exactly-once)
        session.metrics.rejected.labels(ErrorCode.UNAUTHORIZED.value).inc()
        sub.outbox.shutdown(CloseCode.POLICY_VIOLATION, EXPIRED)
        return
    if isinstance(request, PresenceUpdate):  # its own bucket, in the member
        if member is not None:
            member.update(request)
        return
    if bucket is not None:
        wait = bucket.take()
        if wait > 0:
            session.reject_now(sub, request.id, RateLimited(
                "too many batches: slow down", retry_after=math.ceil(wait * 1000) / 1000))
            return
    if sub.read_only:
        session.reject_now(sub, request.id, Forbidden("this connection is read-only"))
        return
    try:
        session.submit(request, sub, sub.client, sub.context)
    except ServerError as exc:  # the session failed; the connection is being closed
        session.reject_now(sub, request.id, exc)


class WebSocketEndpoint:
    """A WebSocket route's ASGI app. A plain ASGI class rather than a ``func(websocket)``:
    Starlette then adds no per-connection wrapper (its exception-handler closures and their
    frames stay alive as long as the connection, about 2 KiB each); exceptions still reach
    Starlette's ServerErrorMiddleware and uvicorn as before. ``__call__`` returns the handler's
    coroutine (awaited by the caller) instead of awaiting it in a frame of its own."""

    __slots__ = ("lesson",)

    def __init__(self, lesson: bool) -> None:
        self.lesson = lesson

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
        return endpoint(WebSocket(scope, receive=receive, send=send), self.lesson)


protocol_endpoint = WebSocketEndpoint(lesson=False)
# the Immer course lesson's client: bare arrays of Immer patches on ``/``
lesson_endpoint = WebSocketEndpoint(lesson=True)
