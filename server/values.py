"""JSON values as the document holds them: equality and private copies.

The bottom of the core: plain functions over parsed JSON (dict, list, str, int, float, bool,
None), importing nothing of ours, used by :mod:`server.document` and :mod:`server.compact`.
"""

from __future__ import annotations

from typing import Any

import orjson


def own(value: Any) -> Any:
    """A private copy of a JSON value (containers only; scalars are immutable)."""
    if isinstance(value, dict | list):
        return orjson.loads(orjson.dumps(value))
    return value


def json_equal(a: Any, b: Any) -> bool:
    """RFC 6902 ``test`` equality: 1 == 1.0, but true != 1 and key order does not matter."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b
