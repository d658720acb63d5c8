"""Frames in, typed requests out: the parsing half of protocol 1 and of lesson mode.

No sockets here. :func:`parse_frame` turns a text frame into a :class:`PatchRequest` (or a
:class:`~server.presence.PresenceUpdate`, checked by :mod:`server.presence`) or raises
:class:`~server.errors.ServerError`; :class:`FrameError` carries the message id when the frame
was a well-formed message whose patches were bad, so the caller can answer ``reject`` (with the
id) rather than ``error``.
"""

from __future__ import annotations

from typing import Any

import orjson

from .config import Limits
from .errors import InvalidInput, ServerError
from .messages import Format, MessageId, PatchRequest
from .patches import parse_immer, parse_json_patch
from .presence import PresenceUpdate, parse_presence

MAX_ID_LENGTH = 128


class RejectedRequest(Exception):
    """A well-formed ``patch`` message (it has an id) whose content was refused."""

    def __init__(self, msg_id: MessageId, error: ServerError) -> None:
        super().__init__(error.message)
        self.msg_id = msg_id
        self.error = error


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"frame is not valid JSON: {exc}") from None


def parse_ops(patches: Any, fmt: Format, limits: Limits) -> list[Any]:
    return parse_immer(patches, limits) if fmt == "immer" else parse_json_patch(patches, limits)


def parse_frame(text: str, fmt: Format, limits: Limits) -> PatchRequest | PresenceUpdate:
    """Parse one protocol-1 frame from a client.

    Raises ``ServerError`` for a frame that is not a valid message (answer: ``error``), and
    ``RejectedRequest`` for a ``patch`` message whose patches or base are bad (answer: ``reject``).
    """
    message = loads(text)
    if not isinstance(message, dict):
        raise InvalidInput("a message must be a JSON object")
    kind = message.get("type")
    if kind == "presence":
        return parse_presence(message)
    if kind != "patch":
        raise InvalidInput(f"unknown message type {kind!r}")
    msg_id = message.get("id")
    if isinstance(msg_id, bool) or not isinstance(msg_id, str | int):
        raise InvalidInput("a patch message needs an id (string or number)")
    if isinstance(msg_id, str) and len(msg_id) > MAX_ID_LENGTH:
        raise InvalidInput(f"message id longer than {MAX_ID_LENGTH} characters")
    if isinstance(msg_id, int) and not -(2**53) < msg_id < 2**53:
        raise InvalidInput("numeric message id outside the safe integer range")
    try:
        base = message.get("base")
        if base is not None and (isinstance(base, bool) or not isinstance(base, int) or base < 0):
            raise InvalidInput("base must be a non-negative integer")
        if "patches" not in message:
            raise InvalidInput("a patch message needs patches")
        ops = parse_ops(message["patches"], fmt, limits)
    except ServerError as exc:
        raise RejectedRequest(msg_id, exc) from None
    return PatchRequest(msg_id, ops, base)


def parse_lesson_frame(text: str, limits: Limits) -> PatchRequest:
    """A lesson-mode frame: a bare JSON array of Immer patches, applied at the head."""
    return PatchRequest(None, parse_immer(loads(text), limits), None)
