"""Stores without a server: what is rebuilt from a store equals what was built in memory.

For random batch sequences and random snapshot and retention settings, a fresh hub loading the
document from the store (latest snapshot plus the log after it) has the same state and version
as the hub that applied the batches, every retained version can be rebuilt, and the log replays
from the floor to the head.
"""

from __future__ import annotations

import asyncio
import copy
import tempfile
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.config import Settings
from server.errors import ServerError
from server.hub import Hub
from server.messages import PatchRequest
from server.patches import parse_immer
from server.store import Store
from server.store.memory import MemoryStore
from server.store.sqlite import SQLiteStore

KEYS = st.sampled_from(["a", "b", "c/d", "e~f", ""])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=3))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(KEYS, inner, max_size=3), max_leaves=6)

# an Immer batch as a list of (op, key, value) on the top-level object or its list "l"
OPS = st.lists(st.one_of(
    st.tuples(st.just("set"), KEYS, VALUES),
    st.tuples(st.just("del"), KEYS, st.none()),
    st.tuples(st.just("push"), st.none(), VALUES),
    st.tuples(st.just("pop"), st.integers(0, 4), st.none()),
), min_size=1, max_size=4)


def to_patches(batch: list[tuple[str, Any, Any]]) -> list[dict[str, Any]]:
    patches: list[dict[str, Any]] = []
    for kind, key, value in batch:
        if kind == "set":
            patches.append({"op": "replace", "path": [key], "value": value})
        elif kind == "del":
            patches.append({"op": "remove", "path": [key]})
        elif kind == "push":
            patches.append({"op": "add", "path": ["l", 0], "value": value})
        else:
            patches.append({"op": "remove", "path": ["l", key]})  # may be out of range
    return patches


async def build(store: Store, config: Settings, batches: list[list[dict[str, Any]]]
                ) -> dict[int, Any]:
    """Apply the batches through a hub; the state at each accepted version."""
    await store.open()
    hub = Hub(config, store)
    session = await hub.session("doc")
    states = {0: copy.deepcopy(session.document.state)}
    for patches in batches:
        try:
            version = await session.submit(
                PatchRequest(None, parse_immer(patches, config.limits)))
        except ServerError:
            continue  # a rejected batch changes nothing
        states[version] = copy.deepcopy(session.document.state)
    await hub.close()
    await store.close()
    return states


async def rebuild(store: Store, config: Settings) -> tuple[Any, int, int, dict[int, Any], Any]:
    await store.open()
    hub = Hub(config, store)
    session = await hub.session("doc")
    state, version, floor = session.document.state, session.document.version, session.floor
    at = {v: orjson.loads(await session.read_state_at(v)) for v in range(floor, version + 1)}
    patches = await session.read_patches(floor, "json-patch")
    await hub.close()
    await store.close()
    return state, version, floor, at, patches


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(OPS, min_size=1, max_size=60), every=st.integers(1, 15),
       keep=st.integers(0, 30))
def test_state_rebuilt_from_the_store_equals_the_state_built_in_memory(
    kind: str, batches: list[list[tuple[str, Any, Any]]], every: int, keep: int
) -> None:
    config = Settings(store_url="", initial_state={"l": []}, snapshot_every=every,
                      retain_versions=keep, rate=0)
    with tempfile.TemporaryDirectory() as tmp:
        def make() -> Store:
            return SQLiteStore(str(Path(tmp) / "d.db")) if kind == "sqlite" else memory

        memory = MemoryStore()
        states = asyncio.run(build(make(), config, [to_patches(b) for b in batches]))
        head = max(states)
        state, version, floor, at, patches = asyncio.run(rebuild(make(), config))
    assert version == head and state == states[head]
    assert floor <= max(0, head - keep)  # at least the retention window is kept
    for v, rebuilt in at.items():
        assert rebuilt == states[v], f"state at version {v}"
    assert not isinstance(patches, int)
    _, ops = patches
    assert jsonpatch.apply_patch(states[floor], orjson.loads(ops)) == states[head]
