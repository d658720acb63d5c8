"""Immer patches and RFC 6902 operations: parsing, validation and JSON Pointer escaping.

Pure functions, no IO and no document: this module turns untrusted JSON into :class:`Op`
values (or raises a :class:`~server.errors.ServerError`), and renders paths. Which operations a
document actually undergoes depends on its state and is decided in :mod:`server.document`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final, Literal

from .config import Limits
from .errors import Forbidden, InvalidInput, TooLarge

RESERVED_KEYS: Final = frozenset({"__proto__", "constructor", "prototype"})

OpName = Literal["add", "remove", "replace", "move", "copy", "test"]
Segment = str | int
IMMER_OPS: Final = frozenset({"add", "remove", "replace"})
JSON_PATCH_OPS: Final = frozenset({"add", "remove", "replace", "move", "copy", "test"})


class _Missing:
    """The value of an Immer operation sent without one (``undefined`` dropped by JSON)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of an incoming batch, validated but not yet resolved against a document.

    ``immer`` selects Immer semantics (lenient object members, ``undefined`` values, array
    ``length``); otherwise strict RFC 6902. Paths are segment tuples: ints or strings for Immer,
    unescaped strings for RFC 6902.
    """

    op: OpName
    path: tuple[Segment, ...]
    value: Any = MISSING
    from_: tuple[Segment, ...] | None = None
    immer: bool = True


# -- JSON Pointer (RFC 6901) -------------------------------------------------------------------


def escape_token(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def unescape_token(token: str) -> str:
    i = token.find("~")
    while i != -1:
        if i + 1 >= len(token) or token[i + 1] not in "01":
            raise InvalidInput(f"bad escape in JSON Pointer token {token!r}")
        i = token.find("~", i + 2)
    return token.replace("~1", "/").replace("~0", "~")


def to_pointer(segments: tuple[Segment, ...] | list[Segment]) -> str:
    """``[]`` -> ``""`` (the root), ``["a/b", 0]`` -> ``"/a~1b/0"``."""
    return "".join("/" + escape_token(str(s)) for s in segments)


def array_index(seg: Segment) -> int | None:
    """The array index a path segment names: an int, or a canonical digit string (``"0"``,
    ``"12"``, not ``"012"``); None for anything else (``"-"``, Immer's ``"length"``, a key)."""
    if isinstance(seg, int):
        return seg
    if seg.isascii() and seg.isdigit() and (seg == "0" or seg[0] != "0"):
        return int(seg)
    return None


def from_pointer(pointer: str) -> tuple[str, ...]:
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise InvalidInput(f"JSON Pointer {pointer!r} must be empty or start with '/'")
    return tuple(unescape_token(t) for t in pointer[1:].split("/"))


# -- values ------------------------------------------------------------------------------------


def check_value(value: Any, limits: Limits, at_depth: int = 0) -> None:
    """Reject values that would not survive the round trip to every client unchanged.

    Reserved keys (``forbidden``), non-finite numbers (``invalid``: JSON has no NaN), nesting
    deeper than ``limits.max_depth`` once placed at a path ``at_depth`` segments deep, and
    over-long strings or keys (``too_large``).
    """
    stack: list[tuple[Any, int]] = [(value, at_depth + 1)]
    max_depth, max_str, max_key = limits.max_depth, limits.max_string_bytes, limits.max_key_bytes
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > max_depth:
                raise TooLarge(f"value nested deeper than {max_depth} levels")
            for key, child in item.items():
                if key in RESERVED_KEYS:
                    raise Forbidden(f"reserved key {key!r} in a value")
                if utf8_longer_than(key, max_key):
                    raise TooLarge(f"object key longer than {max_key} bytes")
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1))
                else:
                    _check_scalar(child, max_str)
        elif isinstance(item, list):
            if depth > max_depth:
                raise TooLarge(f"value nested deeper than {max_depth} levels")
            for child in item:
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1))
                else:
                    _check_scalar(child, max_str)
        else:
            _check_scalar(item, max_str)


def depth_of(value: Any) -> int:
    """Nesting depth of a JSON value: 0 for a scalar, 1 for a flat array or object."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth) for c in children if isinstance(c, dict | list))
    return deepest


def utf8_longer_than(text: str, limit: int) -> bool:
    """Whether ``text`` takes more than ``limit`` bytes in UTF-8 (encodes only when in doubt)."""
    if len(text) > limit:
        return True
    return len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit


def _check_scalar(item: Any, max_str: int) -> None:
    if isinstance(item, float):
        if not math.isfinite(item):
            raise InvalidInput("numbers must be finite")
    elif isinstance(item, str) and utf8_longer_than(item, max_str):
        raise TooLarge(f"string longer than {max_str} bytes")


def _check_segments(path: tuple[Segment, ...], limits: Limits) -> None:
    if len(path) > limits.max_depth:
        raise TooLarge(f"path deeper than {limits.max_depth} segments")
    for seg in path:
        if isinstance(seg, str):
            if seg in RESERVED_KEYS:
                raise Forbidden(f"reserved key {seg!r} in a path")
            if utf8_longer_than(seg, limits.max_key_bytes):
                raise TooLarge(f"path segment longer than {limits.max_key_bytes} bytes")


# -- parsing -----------------------------------------------------------------------------------


def _require_list(patches: Any, limits: Limits) -> list[Any]:
    if not isinstance(patches, list):
        raise InvalidInput("patches must be an array")
    if len(patches) > limits.max_ops:
        raise TooLarge(f"more than {limits.max_ops} operations in one batch")
    return patches


def parse_immer(patches: Any, limits: Limits) -> list[Op]:
    """Validate an array of Immer patches (``{"op", "path": [...], "value"?}``)."""
    ops = []
    for i, raw in enumerate(_require_list(patches, limits)):
        if not isinstance(raw, dict):
            raise InvalidInput(f"patch {i} is not an object")
        name = raw.get("op")
        if not isinstance(name, str) or name not in IMMER_OPS:
            raise InvalidInput(f"patch {i}: op must be add, replace or remove, not {name!r}")
        path = raw.get("path")
        if not isinstance(path, list):
            raise InvalidInput(f"patch {i}: path must be an array of segments")
        for seg in path:
            # bool is an int subclass; Immer Map keys (objects, null, booleans) have no JSON image
            if isinstance(seg, bool) or not isinstance(seg, str | int):
                raise InvalidInput(f"patch {i}: path segment {seg!r} is not a string or number")
            if isinstance(seg, int) and seg < 0:
                raise InvalidInput(f"patch {i}: negative index {seg}")
        segments = tuple(path)
        _check_segments(segments, limits)
        value = raw.get("value", MISSING)
        if value is not MISSING:
            check_value(value, limits, len(segments))
        if name == "remove":
            value = MISSING
        elif not segments and value is MISSING:
            raise InvalidInput(f"patch {i}: a root {name} needs a value")
        ops.append(Op(name, segments, value, None, True))  # type: ignore[arg-type]
    return ops


def parse_json_patch(patches: Any, limits: Limits) -> list[Op]:
    """Validate an RFC 6902 array."""
    ops = []
    for i, raw in enumerate(_require_list(patches, limits)):
        if not isinstance(raw, dict):
            raise InvalidInput(f"operation {i} is not an object")
        name = raw.get("op")
        if not isinstance(name, str) or name not in JSON_PATCH_OPS:
            raise InvalidInput(f"operation {i}: unknown op {name!r}")
        path = _parse_pointer_member(raw, "path", i)
        _check_segments(path, limits)
        from_ = None
        if name in ("move", "copy"):
            from_ = _parse_pointer_member(raw, "from", i)
            _check_segments(from_, limits)
        value = MISSING
        if name in ("add", "replace", "test"):
            if "value" not in raw:
                raise InvalidInput(f"operation {i}: {name} needs a value")
            value = raw["value"]
            check_value(value, limits, len(path))
        ops.append(Op(name, path, value, from_, False))  # type: ignore[arg-type]
    return ops


def _parse_pointer_member(raw: dict[str, Any], member: str, i: int) -> tuple[str, ...]:
    pointer = raw.get(member)
    if not isinstance(pointer, str):
        raise InvalidInput(f"operation {i}: {member} must be a JSON Pointer string")
    return from_pointer(pointer)
