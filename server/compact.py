"""Placeholder until the compaction module lands: compacts nothing."""

from __future__ import annotations

from typing import Any

from .patches import Op


def compact(ops: list[Op], state: Any) -> list[Op] | None:
    return None
