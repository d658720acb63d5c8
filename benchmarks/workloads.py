"""Deterministic, seeded workloads: batches of Immer patches and the state they lead to.

Pure functions, no IO except :func:`write_jsonl`. A workload is a list of batches; a batch is a
list of Immer patches (``{"op", "path", "value"?}``, numbers for array indexes), exactly what an
Immer client sends in one message. Every workload starts from the empty object ``{}`` (the state
of a new document on our server, and the lesson relay's empty history), so its first batch
creates the document's structure.

- :func:`gifts`: the lesson's growing list. Edits add a gift at the end (what ``push`` emits),
  toggle a gift's ``reservedBy`` (a ``replace``), or remove one gift (a single ``remove`` at an
  index, which ``applyPatches`` splices; Immer itself emits that for ``pop``, and would emit one
  ``replace`` per later element for a ``splice`` in the middle). About 1 MB of state at 100,000
  edits.
- :func:`board`: a fixed-size document (a board of cells) edited many times: the history grows,
  the state does not.
- :func:`sized_doc` / :func:`small_edit`: documents of a given JSON size and the small edits the
  apply-throughput writers send.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

Patch = dict[str, Any]
Batch = list[Patch]

USERS = [f"user-{k}" for k in range(8)]
WORDS = [
    "book",
    "lamp",
    "scarf",
    "mug",
    "puzzle",
    "kite",
    "candle",
    "socks",
    "atlas",
    "chess",
    "drone",
    "teapot",
    "poster",
    "wallet",
    "compass",
    "journal",
    "headphones",
    "blanket",
]


def _gift(serial: int, rng: random.Random) -> dict[str, Any]:
    word = rng.choice(WORDS)
    return {
        "id": f"g{serial:07d}",
        "description": f"{word.capitalize()} no. {serial} ({rng.randrange(1000, 9999)})",
        "image": f"https://picsum.photos/id/{rng.randrange(1000)}/200/300",
        "reservedBy": None,
    }


def gifts(n: int, seed: int = 1) -> Iterator[Batch]:
    """``n`` batches on ``{"gifts": [...]}``: 20% add, 70% toggle, 10% remove."""
    rng = random.Random(seed)
    yield [{"op": "add", "path": ["gifts"], "value": []}]
    reserved: list[str | None] = []  # mirror of each gift's reservedBy, to emit real toggles
    serial = 0
    for _ in range(n - 1):
        r = rng.random()
        if not reserved or r < 0.2:
            serial += 1
            yield [{"op": "add", "path": ["gifts", len(reserved)], "value": _gift(serial, rng)}]
            reserved.append(None)
        elif r < 0.9:
            i = rng.randrange(len(reserved))
            value = rng.choice(USERS) if reserved[i] is None else None
            reserved[i] = value
            yield [{"op": "replace", "path": ["gifts", i, "reservedBy"], "value": value}]
        else:
            i = rng.randrange(len(reserved))
            del reserved[i]
            yield [{"op": "remove", "path": ["gifts", i]}]


BOARD_CELLS = 1000


def board(n: int, seed: int = 2, cells: int = BOARD_CELLS) -> Iterator[Batch]:
    """``n`` batches on a board of ``cells`` cells (about 50 KB), each edit replacing a value."""
    rng = random.Random(seed)
    initial = {
        "title": "Fixed-size board",
        "cells": [
            {"id": k, "value": rng.randrange(1000), "label": f"cell {k}", "owner": None}
            for k in range(cells)
        ],
    }
    yield [{"op": "add", "path": ["board"], "value": initial}]
    for _ in range(n - 1):
        i = rng.randrange(cells)
        r = rng.random()
        if r < 0.6:
            yield [
                {
                    "op": "replace",
                    "path": ["board", "cells", i, "value"],
                    "value": rng.randrange(1000),
                }
            ]
        elif r < 0.9:
            yield [
                {
                    "op": "replace",
                    "path": ["board", "cells", i, "owner"],
                    "value": rng.choice([*USERS, None]),
                }
            ]
        else:
            yield [
                {
                    "op": "replace",
                    "path": ["board", "cells", i, "label"],
                    "value": f"cell {i} v{rng.randrange(100)}",
                }
            ]


WORKLOADS = {"gifts": gifts, "board": board}


# -- applying (the reference final state) -------------------------------------------------------


def apply_batch(state: Any, batch: Batch) -> Any:
    """Apply Immer patches (add/replace/remove, as ``applyPatches`` does) in place."""
    for p in batch:
        path = p["path"]
        if not path:
            state = p["value"]
            continue
        parent = state
        for seg in path[:-1]:
            parent = parent[seg]
        last = path[-1]
        op = p["op"]
        if isinstance(parent, list):
            if op == "add":
                parent.insert(last, p["value"])
            elif op == "replace":
                parent[last] = p["value"]
            else:
                del parent[last]
        elif op == "remove":
            del parent[last]
        else:
            parent[last] = p["value"]
    return state


def final_state(batches: list[Batch]) -> Any:
    state: Any = {}
    for batch in orjson.loads(orjson.dumps(batches)):  # private copies of the values
        state = apply_batch(state, batch)
    return state


def write_jsonl(path: Path, batches: list[Batch]) -> int:
    """One batch per line; returns the bytes written."""
    data = b"\n".join(orjson.dumps(b) for b in batches) + b"\n"
    path.write_bytes(data)
    return len(data)


# -- apply throughput: documents of a given size and small edits --------------------------------


def sized_doc(target_bytes: int) -> dict[str, Any]:
    """``{"items": [...]}`` whose compact JSON is about ``target_bytes`` long."""
    item_bytes = len(orjson.dumps(_item(0))) + 1
    count = max(1, target_bytes // item_bytes)
    return {"items": [_item(k) for k in range(count)]}


def _item(k: int) -> dict[str, Any]:
    return {"id": k, "title": f"item {k:06d} lorem ipsum dolor", "done": False, "n": 0}


def small_edit(count: int, serial: int, rng: random.Random) -> Batch:
    """A one- or two-operation batch on a random item of a :func:`sized_doc` of ``count``."""
    i = rng.randrange(count)
    batch: Batch = [{"op": "replace", "path": ["items", i, "n"], "value": serial}]
    if serial % 4 == 0:
        batch.append({"op": "replace", "path": ["items", i, "done"], "value": serial % 8 == 0})
    return batch
