"""Protocol 1 messages: typed shapes and their encodings.

Incoming messages are frozen dataclasses made by :mod:`server.protocol`. Outgoing messages are
encoded here, once: a batch's patches are serialized once per format when it is accepted, and the
``patch`` message around them is built by string concatenation, never re-serialized per client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import orjson

from .errors import ServerError
from .patches import Op

MessageId = str | int
Format = Literal["immer", "json-patch"]
FORMATS: tuple[Format, ...] = ("immer", "json-patch")


# -- client -> server ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PatchRequest:
    """``{"type":"patch","id":X,"base":B?,"patches":[...]}`` (or a lesson-mode bare array)."""

    id: MessageId | None
    ops: list[Op]
    base: int | None = None


# -- server -> client (documented shapes) -------------------------------------------------------


class ErrorBody(TypedDict, total=False):
    code: str
    message: str
    retry_after: float  # rate_limited: seconds after which a batch will be accepted


class SnapshotMessage(TypedDict):
    type: Literal["snapshot"]
    doc: str
    version: int
    epoch: str
    state: Any


class PatchMessage(TypedDict):
    type: Literal["patch"]
    version: int
    patches: list[Any]


class SyncedMessage(TypedDict):
    type: Literal["synced"]
    version: int


class AckMessage(TypedDict, total=False):
    type: Literal["ack"]
    id: MessageId
    version: int
    patches: list[Any]  # the batch as applied, when it differs from the one sent


class RejectMessage(TypedDict):
    type: Literal["reject"]
    id: MessageId | None
    version: int
    error: ErrorBody


class ErrorMessage(TypedDict):
    type: Literal["error"]
    error: ErrorBody


# -- encoders (all return ``str``: WebSocket text frames) --------------------------------------


def encode_snapshot(doc: str, version: int, epoch: str, state_json: str) -> str:
    return (
        f'{{"type":"snapshot","doc":"{doc}","version":{version},'
        f'"epoch":"{epoch}","state":{state_json}}}'
    )


def encode_patch(version: int, patches_json: str) -> str:
    return f'{{"type":"patch","version":{version},"patches":{patches_json}}}'


def encode_synced(version: int) -> str:
    return f'{{"type":"synced","version":{version}}}'


def encode_ack(msg_id: MessageId, version: int, patches_json: str | None = None) -> str:
    """``patches_json`` (already serialized, in the receiver's format) when the batch as
    applied differs from the one the receiver sent."""
    message: AckMessage = {"type": "ack", "id": msg_id, "version": version}
    ack = orjson.dumps(message).decode()
    if patches_json is None:
        return ack
    return f'{ack[:-1]},"patches":{patches_json}}}'



def encode_reject(msg_id: MessageId | None, version: int, error: ServerError) -> str:
    message: RejectMessage = {
        "type": "reject",
        "id": msg_id,
        "version": version,
        "error": error.as_dict(),  # type: ignore[typeddict-item]
    }
    return orjson.dumps(message).decode()


def encode_error(error: ServerError) -> str:
    message: ErrorMessage = {"type": "error", "error": error.as_dict()}  # type: ignore[typeddict-item]
    return orjson.dumps(message).decode()


def coalesce(frames: list[str]) -> str:
    """Several protocol-1 messages in one frame: a JSON array of them."""
    return frames[0] if len(frames) == 1 else "[" + ",".join(frames) + "]"


def coalesce_bare(arrays: list[str]) -> str:
    """Several lesson-mode bare arrays of patches concatenated into one bare array."""
    if len(arrays) == 1:
        return arrays[0]
    inner = [a[1:-1] for a in arrays if len(a) > 2]
    return "[" + ",".join(inner) + "]"
