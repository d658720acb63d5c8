"""WebSocket endpoints: protocol 1 (``/ws``, ``/ws/{doc}``) and lesson mode (``/``).

Thin: read a frame, hand it to :mod:`server.protocol`, hand the request to the document's
session; everything sent goes through the connection's :class:`~server.outbox.Outbox`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect

from .config import CLIENT_ID_RE, DEFAULT_DOC, DOC_ID_RE, Limits
from .errors import CloseCode, InvalidInput, ServerError
from .hub import Hub, Session, Subscriber
from .messages import FORMATS, Format, encode_error
from .outbox import Outbox
from .protocol import RejectedRequest, parse_frame, parse_lesson_frame

log = logging.getLogger("server.ws")


class _Params:
    def __init__(self, websocket: WebSocket) -> None:
        query = websocket.query_params
        self.doc = websocket.path_params.get("doc", DEFAULT_DOC)
        if not DOC_ID_RE.match(self.doc):
            raise InvalidInput("document id must be 1-128 characters of [A-Za-z0-9._-]")
        fmt = query.get("format", "immer")
        if fmt not in FORMATS:
            raise InvalidInput("format must be immer or json-patch")
        self.fmt: Format = "immer" if fmt == "immer" else "json-patch"
        self.since = _int_param(query.get("since"), "since")
        self.epoch = query.get("epoch") or None
        self.client = query.get("client") or None
        if self.client is not None and not CLIENT_ID_RE.match(self.client):
            raise InvalidInput("client must be 1-128 characters of [A-Za-z0-9._:-]")


def _int_param(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit():
        raise InvalidInput(f"{name} must be a non-negative integer")
    return int(raw)


def _make_outbox(websocket: WebSocket, hub: Hub, lesson: bool) -> Outbox:
    async def close(code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await websocket.close(code, reason)

    return Outbox(websocket.send_text, close, lesson=lesson,
                  max_messages=hub.settings.max_queue_messages,
                  max_bytes=hub.settings.max_queue_bytes)


async def _serve(websocket: WebSocket, session: Session, sub: Subscriber,
                 since: int | None, epoch: str | None) -> None:
    sender = asyncio.create_task(sub.outbox.run())
    limits = session.settings.limits
    try:
        await session.join(sub, since, epoch)
        while not sub.outbox.closed:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None:
                if sub.lesson:
                    sub.outbox.put(session.lesson_snapshot())
                else:
                    sub.outbox.put(encode_error(InvalidInput("frames must be JSON text")))
                continue
            _handle(session, sub, text, limits)
    except (WebSocketDisconnect, RuntimeError):
        pass
    except ServerError as exc:  # the document could not be loaded or the store failed
        sub.outbox.put(encode_error(exc))
        sub.outbox.shutdown(CloseCode.INTERNAL_ERROR, exc.message[:120])
    finally:
        session.leave(sub)
        sub.outbox.shutdown(CloseCode.NORMAL, "")
        with contextlib.suppress(asyncio.TimeoutError, Exception):
            await asyncio.wait_for(sender, timeout=5)
        sender.cancel()


def _handle(session: Session, sub: Subscriber, text: str, limits: Limits) -> None:
    try:
        if sub.lesson:
            request = parse_lesson_frame(text, limits)
        else:
            request = parse_frame(text, sub.fmt, limits)
    except RejectedRequest as rejected:
        session.reject(sub, rejected.msg_id, rejected.error)
        return
    except ServerError as exc:
        if sub.lesson:
            session.reject(sub, None, exc)
        else:
            sub.outbox.put(encode_error(exc))
        return
    try:
        session.submit(request, sub, sub.client)
    except ServerError as exc:
        session.reject(sub, request.id, exc)


async def protocol_endpoint(websocket: WebSocket) -> None:
    hub: Hub = websocket.app.state.hub
    await websocket.accept()
    try:
        params = _Params(websocket)
        session = await hub.session(params.doc)
    except ServerError as exc:
        await websocket.send_text(encode_error(exc))
        await websocket.close(CloseCode.POLICY_VIOLATION, exc.message[:120])
        return
    sub = Subscriber(_make_outbox(websocket, hub, False), params.fmt, False, params.client)
    await _serve(websocket, session, sub, params.since, params.epoch)


async def lesson_endpoint(websocket: WebSocket) -> None:
    """The Immer course lesson's client: bare arrays of Immer patches on ``/``."""
    hub: Hub = websocket.app.state.hub
    await websocket.accept()
    session = await hub.session(DEFAULT_DOC)
    sub = Subscriber(_make_outbox(websocket, hub, True), "immer", True, None)
    await _serve(websocket, session, sub, None, None)
