"""Hooks loaded by ``python -m server --hooks tests.hook_module:hooks`` in test_hooks.py."""

from __future__ import annotations

from typing import Any

from server import Batch, Forbidden, HookContext, Hooks


async def validate(ctx: HookContext, batch: Batch, state: Any) -> None:
    if isinstance(state, dict) and "forbidden" in state:
        raise Forbidden("no key named forbidden")


hooks = Hooks(validate=validate)
nothing = object()
