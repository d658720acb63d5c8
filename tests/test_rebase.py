"""server.rebase: stale batches transformed over later ones; only true overlaps conflict.

The main property works on a list whose elements carry ids, as the demo's gifts do. Several
users each make a batch against some older version (inserting, appending, removing elements,
setting fields of elements, all addressed by index as compacted Immer patches are), and the
batches reach the document in some order. The expected outcome is worked out by id, without
indexes: a batch conflicts exactly when a batch committed after its base removed an element it
addresses, or wrote the same field of the same element, or wrote inside an element it removes;
every other batch applies, and then every surviving element carries exactly the edits made to
it (the last committed one per field), every element removed is gone, every element inserted is
present between the neighbours it was inserted between, and the original elements keep their
order.
"""

from __future__ import annotations

import itertools
import subprocess
from typing import Any

import orjson
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from server.compact import compact
from server.config import Limits
from server.document import Document
from server.errors import Conflict
from server.patches import Op, parse_immer, parse_json_patch
from server.rebase import rebase

from .oracle.nodejs import ORACLE_DIR, node_executable, parse_json_lines
from .strategies import PROPERTY, deep

LIMITS = Limits()
FIELDS = ("a", "b")


def ops(patches: list[dict[str, Any]]) -> list[Op]:
    return parse_immer(deep(patches), LIMITS)


# -- the rules, one by one --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("committed", "patch", "expected"),
    [
        # an insert below or at an index moves it up; a tie between inserts: ours goes after
        (("add", ("l", 2)), {"op": "replace", "path": ["l", 1], "value": 0}, ["l", 1]),
        (("add", ("l", 2)), {"op": "replace", "path": ["l", 2], "value": 0}, ["l", 3]),
        (("add", ("l", 2)), {"op": "add", "path": ["l", 2], "value": 0}, ["l", 3]),
        (("add", ("l", 2)), {"op": "replace", "path": ["l", 5, "x"], "value": 0}, ["l", 6, "x"]),
        # a removal below moves it down; at the index, only an insert survives
        (("remove", ("l", 2)), {"op": "replace", "path": ["l", 3], "value": 0}, ["l", 2]),
        (("remove", ("l", 2)), {"op": "add", "path": ["l", 2], "value": 0}, ["l", 2]),
        (("remove", ("l", 2)), {"op": "replace", "path": ["l", 1], "value": 0}, ["l", 1]),
        # nested arrays: only the array that shifted counts
        (("add", ("l", 0, "m", 0)), {"op": "replace", "path": ["l", 0, "m", 0], "value": 0},
         ["l", 0, "m", 1]),
        (("add", ("l", 0, "m", 0)), {"op": "replace", "path": ["l", 1, "m", 0], "value": 0},
         ["l", 1, "m", 0]),
        # an insert before an element written since keeps both
        (("replace", ("l", 2)), {"op": "add", "path": ["l", 2], "value": 0}, ["l", 2]),
        (("replace", ("l", 2, "x")), {"op": "add", "path": ["l", 2], "value": 0}, ["l", 2]),
        (("add", ("l", 2, "m", 0)), {"op": "add", "path": ["l", 2], "value": 0}, ["l", 2]),
        # other members of an object written since
        (("replace", ("o", "x")), {"op": "replace", "path": ["o", "y"], "value": 0}, ["o", "y"]),
    ],
)
def test_transformed(committed: tuple[str, tuple[Any, ...]], patch: dict[str, Any],
                     expected: list[Any]) -> None:
    out = rebase(ops([patch]), [(1, [committed])], 0)
    assert list(out[0].path) == expected


@pytest.mark.parametrize(
    ("committed", "patch"),
    [
        (("replace", ("o", "x")), {"op": "replace", "path": ["o", "x"], "value": 0}),
        (("add", ("o", "x")), {"op": "add", "path": ["o", "x"], "value": 0}),
        (("replace", ("o", "x")), {"op": "replace", "path": ["o"], "value": {}}),
        (("replace", ("o",)), {"op": "replace", "path": ["o", "x"], "value": 0}),
        (("remove", ("o",)), {"op": "add", "path": ["o", "x"], "value": 0}),
        (("replace", ()), {"op": "replace", "path": ["o"], "value": 0}),
        (("replace", ("l", 2)), {"op": "replace", "path": ["l", 2], "value": 0}),
        (("replace", ("l", 2)), {"op": "remove", "path": ["l", 2]}),
        (("replace", ("l", 2)), {"op": "replace", "path": ["l", 2, "x"], "value": 0}),
        (("replace", ("l", 2, "x")), {"op": "remove", "path": ["l", 2]}),
        (("remove", ("l", 2)), {"op": "replace", "path": ["l", 2], "value": 0}),
        (("remove", ("l", 2)), {"op": "remove", "path": ["l", 2]}),
        (("remove", ("l", 2)), {"op": "replace", "path": ["l", 2, "x"], "value": 0}),
        (("add", ("l", 2)), {"op": "replace", "path": ["l"], "value": []}),
        (("replace", ("l",)), {"op": "add", "path": ["l", 0], "value": 0}),
        (("add", ("l", 7)), {"op": "replace", "path": ["l", "length"], "value": 3}),
    ],
)
def test_conflicts(committed: tuple[str, tuple[Any, ...]], patch: dict[str, Any]) -> None:
    with pytest.raises(Conflict):
        rebase(ops([patch]), [(1, [committed])], 0)


def test_unmoved_batch_is_returned_as_is() -> None:
    batch = ops([{"op": "replace", "path": ["l", 0], "value": 0}])
    assert rebase(batch, [(1, [("add", ("l", 3))]), (2, [("replace", ("o", "x"))])], 0) is batch


def test_rfc6902_paths_keep_their_string_segments() -> None:
    batch = parse_json_patch([{"op": "replace", "path": "/l/4", "value": 0},
                              {"op": "add", "path": "/l/-", "value": 1}], LIMITS)
    out = rebase(batch, [(1, [("remove", ("l", 1))])], 0)
    assert [op.path for op in out] == [("l", "3"), ("l", "-")]


# -- the property: concurrent batches on a list of elements with ids -------------------------

_ids = itertools.count()


def _element(a: int = 0, b: int = 0) -> dict[str, Any]:
    return {"id": f"e{next(_ids)}", "a": a, "b": b}


@st.composite
def batch_at(draw: st.DrawFn, items: list[dict[str, Any]],
             user: int) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    """Index-addressed patches against ``items`` (as compacted Immer gives), and their intents
    by id: ("insert", id, prev_id, next_id), ("remove", id), ("set", id, field, value)."""
    local = deep(items)
    patches: list[dict[str, Any]] = []
    intents: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(1, 3))):
        kinds = ["insert", "append"] + (["remove", "set"] if local else [])
        kind = draw(st.sampled_from(kinds))
        if kind in ("insert", "append"):
            i = len(local) if kind == "append" else draw(st.integers(0, len(local)))
            new = _element()
            prev_id = local[i - 1]["id"] if i > 0 else None
            next_id = local[i]["id"] if i < len(local) else None
            local.insert(i, new)
            patches.append({"op": "add", "path": ["l", i], "value": new})
            intents.append(("insert", new["id"], prev_id, next_id))
        elif kind == "remove":
            i = draw(st.integers(0, len(local) - 1))
            gone = local.pop(i)
            patches.append({"op": "remove", "path": ["l", i]})
            intents.append(("remove", gone["id"]))
        else:
            i = draw(st.integers(0, len(local) - 1))
            field = draw(st.sampled_from(FIELDS))
            value = f"u{user}-{next(_ids)}"
            local[i][field] = value
            patches.append({"op": "replace", "path": ["l", i, field], "value": value})
            intents.append(("set", local[i]["id"], field, value))
    return patches, intents


def _written(intents: list[tuple[Any, ...]], inserted: set[str]) -> tuple[set[str], set[Any]]:
    """What a batch removed and which (id, field) it set, among elements that existed before."""
    removed = {i[1] for i in intents if i[0] == "remove" and i[1] not in inserted}
    fields = {(i[1], i[2]) for i in intents if i[0] == "set" and i[1] not in inserted}
    return removed, fields


@PROPERTY
@given(st.data())
def test_concurrent_batches_keep_every_edit_of_every_surviving_element(
    data: st.DataObject,
) -> None:
    initial = [_element() for _ in range(data.draw(st.integers(0, 5), label="elements"))]
    doc = Document({"l": deep(initial), "other": 0})
    states = {0: deep(initial)}
    # per committed version: what it removed and which fields it set, by id
    committed: dict[int, tuple[set[str], set[Any]]] = {}
    alive = {e["id"] for e in initial}
    last_set: dict[tuple[str, str], Any] = {}
    order_constraints: list[tuple[str | None, str, str | None]] = []
    for user in range(data.draw(st.integers(2, 6), label="users")):
        base = data.draw(st.integers(max(0, doc.version - 3), doc.version), label="base")
        patches, intents = data.draw(batch_at(states[base], user), label=f"batch of user {user}")
        note(f"user {user} at base {base}: {patches}")
        inserted = {i[1] for i in intents if i[0] == "insert"}
        removed, fields = _written(intents, inserted)
        touched = {i[1] for i in intents if i[0] in ("set", "remove")} - inserted
        expect_conflict = False
        for version in range(base + 1, doc.version + 1):
            their_removed, their_fields = committed[version]
            their_touched = their_removed | {f[0] for f in their_fields}
            if (touched & their_removed or fields & their_fields
                    or removed & their_touched):
                expect_conflict = True
        before, version_before = orjson.dumps(doc.state), doc.version
        try:
            doc.apply(ops(patches), base)
        except Conflict:
            assert expect_conflict, "a batch that overlaps nothing was refused"
            assert orjson.dumps(doc.state) == before and doc.version == version_before
            continue
        assert not expect_conflict, "a true overlap was applied"
        committed[doc.version] = (removed, fields)
        states[doc.version] = deep(doc.state["l"])
        alive |= inserted
        for intent in intents:
            if intent[0] == "remove":
                alive.discard(intent[1])
            elif intent[0] == "set":
                last_set[(intent[1], intent[2])] = intent[3]
            else:
                order_constraints.append((intent[2], intent[1], intent[3]))
        # every element alive is there once, with exactly the last value set for each field
        items = doc.state["l"]
        ids = [e["id"] for e in items]
        assert sorted(ids) == sorted(alive)
        for e in items:
            for field in FIELDS:
                assert e[field] == last_set.get((e["id"], field), 0), (e, field)
        where = {id_: k for k, id_ in enumerate(ids)}
        original = [e["id"] for e in initial if e["id"] in where]
        assert [where[i] for i in original] == sorted(where[i] for i in original)
        for prev_id, new_id, next_id in order_constraints:
            if new_id not in where:
                continue
            if prev_id in where:
                assert where[prev_id] < where[new_id]
            if next_id in where:
                assert where[new_id] < where[next_id]


@PROPERTY
@given(st.data())
def test_concurrent_appends_never_conflict_and_all_land(data: st.DataObject) -> None:
    """Everyone pushes to one list at once (the demo's main use): every push applies, at the
    end, in commit order."""
    doc = Document({"l": [0, 1, 2]})
    lengths = {0: 3}
    pushed = []
    for user in range(data.draw(st.integers(2, 12), label="users")):
        base = data.draw(st.integers(max(0, doc.version - 5), doc.version), label="base")
        count = data.draw(st.integers(1, 2), label="pushes")
        n = lengths[base]
        values = [f"u{user}-{k}" for k in range(count)]
        doc.apply(ops([{"op": "add", "path": ["l", n + k], "value": v}
                       for k, v in enumerate(values)]), base)
        lengths[doc.version] = len(doc.state["l"])
        pushed.extend(values)
    assert doc.state["l"] == [0, 1, 2, *pushed]


# -- the same, with real Immer recipes ---------------------------------------------------------


@pytest.mark.node
@pytest.mark.parametrize("package", ["immer", "immer9"])
def test_concurrent_real_immer_recipes_keep_every_edit(package: str) -> None:
    """Users run real Immer recipes (by id: push, unshift, splice in, splice out, filter by
    assignment, set a field) on the same base at once. Each batch is compacted against the base
    (as the client does before sending) and reaches the document in turn, rebased over the ones
    before it. A refused batch leaves the document unchanged and overlaps an accepted one on some
    gift; an accepted one keeps every edit of every surviving gift, no gift twice."""
    proc = subprocess.run(
        [node_executable(), str(ORACLE_DIR / "concurrent_recipes.mjs"), "--package", package,
         "--seed", "7", "--scenarios", "300"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    applied = refused = 0
    for scenario in parse_json_lines(proc.stdout):
        base = scenario["base"]
        doc = Document({"gifts": deep(base)})
        alive = {g["id"] for g in base}
        fields: dict[tuple[str, str], Any] = {(g["id"], f): g[f] for g in base for f in g}
        constraints: list[tuple[Any, str, Any]] = []
        accepted_touch: set[str] = set()
        accepted_wholesale = False
        for user in scenario["users"]:
            batch = ops(user["patches"])
            batch = compact(batch, {"gifts": base}) or batch
            touched = {i[1] for i in user["intents"] if i[0] in ("set", "remove")}
            # a whole gift, or the whole list (a filter by assignment), written as a value
            wholesale = any(op.op == "replace" and len(op.path) <= 2 for op in batch)
            before = orjson.dumps(doc.state)
            try:
                doc.apply(batch, 0)
            except Conflict:
                refused += 1
                assert orjson.dumps(doc.state) == before
                assert wholesale or accepted_wholesale or touched & accepted_touch, (
                    scenario, user)
                continue
            applied += 1
            accepted_touch |= touched
            accepted_wholesale |= wholesale
            for intent in user["intents"]:
                if intent[0] == "remove":
                    alive.discard(intent[1])
                elif intent[0] == "set":
                    fields[(intent[1], intent[2])] = intent[3]
                else:
                    alive.add(intent[1])
                    constraints.append((intent[2], intent[1], intent[3]))
            ids = [g["id"] for g in doc.state["gifts"]]
            assert sorted(ids) == sorted(alive), (scenario, user)
            for g in doc.state["gifts"]:  # every field as last set (or as in the base)
                for f in ("reservedBy", "note"):
                    if (g["id"], f) in fields:
                        assert g[f] == fields[(g["id"], f)], (scenario, g, f)
            where = {id_: k for k, id_ in enumerate(ids)}
            kept = [g["id"] for g in base if g["id"] in where]
            assert [where[i] for i in kept] == sorted(where[i] for i in kept), scenario
            for prev_id, new_id, next_id in constraints:
                if new_id in where and prev_id in where:
                    assert where[prev_id] < where[new_id], scenario
                if new_id in where and next_id in where:
                    assert where[new_id] < where[next_id], scenario
    assert applied > refused > 0  # both outcomes were exercised
