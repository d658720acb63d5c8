"""server.compact: array shift cascades rewritten into index operations, never changing a result.

Cascades are built the way Immer's ``generateArrayPatches`` builds them (a replace per changed
index, then adds at the end or removes from the end, or Immer 9's ``length``), from random
splices and permutations of arrays of small objects; the compacted batch must leave a
:class:`~server.document.Document` exactly where the original leaves it (or raise the same).
Real Immer 11 and 9.0.21 are driven in Node by ``tests/oracle/compact_cases.mjs``.
"""

from __future__ import annotations

import copy
import subprocess
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.compact import compact
from server.config import Limits
from server.document import Document
from server.errors import ServerError
from server.patches import MISSING, Op, parse_immer

from .oracle.nodejs import ORACLE_DIR, dump, node_executable, parse_json_lines

SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = Limits()


# -- building cascades like Immer ---------------------------------------------------------------


def cascade(path: tuple[Any, ...], base: list[Any], after: list[Any], style: str) -> list[Op]:
    """Immer's patches for an array changed from ``base`` to ``after`` (elements compared by
    identity, as Immer compares references). ``style``: ``immer11`` (int segments, removes
    from the end), ``immer9`` (a ``length`` replace instead of removes) or ``rfc`` (string
    segments, ``-`` for appends)."""
    immer = style != "rfc"

    def seg(i: int) -> Any:
        return i if immer else str(i)

    ops = [
        Op("replace", (*path, seg(k)), after[k], None, immer)
        for k in range(min(len(base), len(after)))
        if after[k] is not base[k]
    ]
    for k in range(len(base), len(after)):
        ops.append(Op("add", (*path, "-" if style == "rfc" and k % 2 else seg(k)), after[k],
                      None, immer))
    if len(after) < len(base):
        if style == "immer9":
            ops.append(Op("replace", (*path, "length"), len(after), None, True))
        else:
            ops.extend(Op("remove", (*path, seg(k)), MISSING, None, immer)
                       for k in range(len(base) - 1, len(after) - 1, -1))
    return ops


def apply(state: Any, ops: list[Op]) -> Any:
    """The document after ``ops``, or the class of the error they raise."""
    doc = Document(copy.deepcopy(state))
    try:
        doc.apply(ops)
    except ServerError as exc:
        return type(exc)
    return doc.state


def snapshot(ops: list[Op]) -> list[Any]:
    return [(op.op, op.path, op.value is MISSING or orjson.dumps(op.value), op.from_, op.immer)
            for op in ops]


def check(state: Any, ops: list[Op]) -> list[Op]:
    """compact() must not touch its inputs, and must not change what the batch does."""
    state_before, ops_before = orjson.dumps(state), snapshot(ops)
    result = compact(ops, state)
    assert orjson.dumps(state) == state_before
    assert snapshot(ops) == ops_before
    out = ops if result is None else result
    expected, got = apply(state, ops), apply(state, out)
    assert got == expected, f"compacted: {out}"
    if not isinstance(expected, type):
        assert orjson.dumps(got) == orjson.dumps(expected)  # key order and number types too
    if result is not None:  # fewer operations, or (a replaced array) far fewer bytes
        assert len(result) <= len(ops) or len(repr(result)) * 2 < len(repr(ops))
        assert all(op.immer == ops[0].immer for op in result)
    return out


# -- strategies ------------------------------------------------------------------------------------

item_ids = st.integers(0, 30)
items = st.one_of(
    st.builds(lambda i, n: {"id": i, "name": f"g{n}"}, item_ids, st.integers(0, 3)),
    st.integers(0, 3),  # duplicates, which Immer leaves out of its replaces
    st.sampled_from([None, True, 1.0, "x"]),
)
arrays = st.lists(items, max_size=14)
styles = st.sampled_from(["immer11", "immer9", "rfc"])


@st.composite
def edits(draw: st.DrawFn, base: list[Any]) -> list[Any]:
    """A new array made from ``base`` by splices, a permutation, or edits of elements."""
    after = list(base)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["splice", "splice", "splice", "permute", "edit", "move"]))
        if kind == "splice":
            start = draw(st.integers(0, len(after)))
            count = draw(st.integers(0, len(after) - start))
            after[start : start + count] = draw(st.lists(items, max_size=4))
        elif kind == "permute":
            after = draw(st.permutations(after))
        elif kind == "edit" and after:
            i = draw(st.integers(0, len(after) - 1))
            after[i] = {"id": -1, "edited": copy.deepcopy(after[i])}
        elif kind == "move" and len(after) > 1:
            item = after.pop(draw(st.integers(0, len(after) - 1)))
            after.insert(draw(st.integers(0, len(after))), item)
    return after


# -- properties ----------------------------------------------------------------------------------


@SETTINGS
@given(st.data(), arrays, styles)
def test_compacted_cascade_gives_the_same_document(data: st.DataObject, base: list[Any],
                                                   style: str) -> None:
    state = {"list": base, "other": [1, 2]}
    after = data.draw(edits(base))
    ops = cascade(("list",), base, after, style)
    check(state, ops)
    assert apply(state, ops) == {"list": after, "other": [1, 2]}


@SETTINGS
@given(st.data(), st.integers(0, 40), styles)
def test_one_splice_compacts_to_the_fewest_operations(data: st.DataObject, n: int,
                                                      style: str) -> None:
    base = [{"id": i} for i in range(n)]
    start = data.draw(st.integers(0, n))
    count = data.draw(st.integers(0, n - start))
    inserted = [{"id": 100 + i} for i in range(data.draw(st.integers(0, 5)))]
    after = base[:start] + inserted + base[start + count :]
    ops = cascade((), base, after, style)
    out = check(base, ops)
    # the fewest index operations: replace where one element takes another's place, then add
    # or remove the rest (unless Immer's batch is as short: a splice at the end, or one that
    # Immer 9 cuts with a single `length`)
    assert len(out) == min(len(ops), max(count, len(inserted)))


@SETTINGS
@given(st.data(), arrays, arrays, styles)
def test_several_arrays_and_earlier_writes(data: st.DataObject, first: list[Any],
                                           second: list[Any], style: str) -> None:
    """Runs on two arrays, one nested in the other's elements, with writes before them."""
    state = {"a": first, "b": {"inner": second}, "n": 0}
    immer = style != "rfc"
    ops: list[Op] = []
    if data.draw(st.booleans()):  # a write to an ancestor or a descendant: its run stays as is
        target = data.draw(st.sampled_from([("n",), ("b", "x"), ("a",), ("b",)]))
        value = {("n",): 1, ("b",): {"inner": [7]}}.get(target, [7])
        ops.append(Op("add", target, value, None, immer))
    state_now = apply(state, ops)
    assert not isinstance(state_now, type)
    a_now, inner_now = state_now["a"], state_now["b"].get("inner", [])
    if isinstance(a_now, list):
        ops += cascade(("a",), a_now, data.draw(edits(a_now)), style)
    if isinstance(inner_now, list) and "inner" in state_now["b"]:
        ops += cascade(("b", "inner"), inner_now, data.draw(edits(inner_now)), style)
    check(state, ops)


@SETTINGS
@given(st.data(), arrays, styles)
def test_batches_that_fail_still_fail(data: st.DataObject, base: list[Any], style: str) -> None:
    """A cascade with a stray operation inside or around it (often out of range, so the
    original raises): the compacted batch ends the same way."""
    state = {"list": base}
    ops = cascade(("list",), base, data.draw(edits(base)), style)
    immer = style != "rfc"
    index = data.draw(st.integers(0, len(base) + 3))
    last: Any = data.draw(st.sampled_from([index, str(index), "-", "length", "01"]))
    if not immer and isinstance(last, int):
        last = str(last)
    name = data.draw(st.sampled_from(["add", "remove", "replace"]))
    value = len(base) + 2 if last == "length" else {"stray": True}
    stray = Op(name, ("list", last), MISSING if name == "remove" else value, None, immer)  # type: ignore[arg-type]
    ops.insert(data.draw(st.integers(0, len(ops))), stray)
    check(state, ops)


def test_deleting_the_first_of_10000_gifts_is_one_remove() -> None:
    gifts = [{"id": i, "name": f"gift {i}", "done": False} for i in range(10_000)]
    state = {"gifts": gifts}
    ops = cascade(("gifts",), gifts, gifts[1:], "immer11")
    assert len(ops) == 10_000
    out = check(state, ops)
    assert out == [Op("remove", ("gifts", 0))]
    rfc = cascade(("gifts",), gifts, gifts[1:], "rfc")
    assert check(state, rfc) == [Op("remove", ("gifts", "0"), immer=False)]


def test_insertion_at_the_front_is_one_add() -> None:
    gifts = [{"id": i} for i in range(1000)]
    new = {"id": -1}
    out = check(gifts, cascade((), gifts, [new, *gifts], "immer11"))
    assert out == [Op("add", (0,), new)]


def test_splice_in_the_middle() -> None:
    gifts = [{"id": i} for i in range(10)]
    x = {"id": "x"}
    after = [*gifts[:5], x, *gifts[7:]]
    out = check({"g": gifts}, cascade(("g",), gifts, after, "immer9"))
    assert out == [Op("replace", ("g", 5), x), Op("remove", ("g", 6))]


def test_scattered_removals_and_a_move() -> None:
    gifts = [{"id": i} for i in range(20)]
    filtered = [g for g in gifts if g["id"] % 7]  # drops 0, 7 and 14
    assert check(gifts, cascade((), gifts, filtered, "immer11")) == [
        Op("remove", (0,)), Op("remove", (6,)), Op("remove", (12,)),
    ]
    moved = [*gifts[1:], gifts[0]]
    assert check(gifts, cascade((), gifts, moved, "immer11")) == [
        Op("remove", (0,)), Op("add", (19,), gifts[0]),
    ]


def test_what_is_left_alone() -> None:
    gifts = [{"id": i} for i in range(6)]
    reverse = cascade((), gifts, gifts[::-1], "immer11")
    assert compact(reverse, gifts) is None
    shift = cascade(("g",), gifts, gifts[1:], "immer11")
    # an earlier write into an element: only the part of the run above it is rewritten
    edited = check({"g": gifts}, [Op("replace", ("g", 0, "id"), 9), *shift])
    assert edited == [Op("replace", ("g", 0, "id"), 9), Op("replace", ("g", 0), {"id": 1}),
                      Op("remove", ("g", 1))]
    # Immer's order: edits of elements that stay, then the cascade of those that move
    kept_edit = check({"g": gifts}, [Op("replace", ("g", 0, "id"), 9),
                                     *cascade(("g",), gifts, [gifts[0], *gifts[2:]], "immer11")])
    assert kept_edit == [Op("replace", ("g", 0, "id"), 9), Op("remove", ("g", 1))]
    # an earlier write to the array's parent, or an insert into the array: left alone
    assert compact([Op("add", ("g", 0), 1), *shift], {"g": gifts}) is None
    assert compact([Op("add", ("h",), 1), *shift], {"g": gifts}) is not None
    assert compact([Op("replace", (), {"g": gifts}), *shift], {"g": gifts}) is None
    # not an array, or absent
    assert compact(shift, {"g": {"0": 1}}) is None
    assert compact(shift, {}) is None


def test_values_taken_from_the_document_are_copied() -> None:
    """An element Immer left in place (no replace: the same reference) that the rewrite must
    write elsewhere comes from the document: the batch must not alias it."""
    q = {"id": "q"}
    state = {"g": [{"id": "a"}, q, {"id": "c"}, {"id": "d"}, {"id": "e"}]}
    # [a, q, c, d, e] -> [q, q, d, e]: Immer writes indexes 0, 2 and 3, and cuts the end
    ops = [Op("replace", ("g", 0), q), Op("replace", ("g", 2), {"id": "d"}),
           Op("replace", ("g", 3), {"id": "e"}), Op("remove", ("g", 4))]
    out = check(state, ops)
    assert out == [Op("remove", ("g", 0)), Op("replace", ("g", 1), q)]
    assert out[1].value is not q


# -- real Immer ------------------------------------------------------------------------------------

CASES = ORACLE_DIR / "compact_cases.mjs"


@pytest.mark.node
@pytest.mark.parametrize("variant", [["--package", "immer"],
                                     ["--package", "immer", "--array-methods"],
                                     ["--package", "immer9"]], ids=["immer11", "immer11-am",
                                                                     "immer9"])
def test_real_immer_batches(variant: list[str]) -> None:
    done = subprocess.run([node_executable(), str(CASES), *variant, "--seed", "1", "--cases",
                           "400"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    records = parse_json_lines(done.stdout)
    compacted = saved = 0
    for record in records:
        if record["type"] == "big":
            continue
        before, after = record["before"], record["after"]
        ops = parse_immer(record["patches"], LIMITS)
        out = compact(ops, before)
        doc = Document(copy.deepcopy(before))
        try:
            doc.apply(ops if out is None else out)
        except ServerError as exc:
            pytest.fail(f"{exc!r} for {dump(record)} compacted to {out}")
        assert doc.state == after, f"{dump(record)} compacted to {out}"
        assert apply(before, ops) == after
        if out is not None:
            compacted += 1
            saved += len(ops) - len(out)
    assert compacted > 50, compacted
    (big,) = [r for r in records if r["type"] == "big"]
    ops = parse_immer(big["patches"], LIMITS)
    assert len(ops) >= 9_999
    out = compact(ops, big["before"])
    assert out is not None and len(out) == 1
    wire = orjson.dumps([{"op": op.op, "path": list(op.path)} for op in out])
    assert len(wire) < 100, wire
    assert apply(big["before"], out) == big["after"]


def test_an_earlier_shift_of_an_ancestor_moves_the_array_away() -> None:
    # after the insert at l/0, l/3 is the base's l/2: its array is not the one in the state
    state = {"l": [{"items": [k, k + 1, k + 2]} for k in range(4)]}
    inner = cascade(("l", 3, "items"), [2, 3, 4], [3, 4], "immer11")
    check(state, [Op("add", ("l", 0), {"items": []}), *inner])
    assert compact([Op("add", ("l", 0), {"items": []}), *inner], state) is None
    # the same with a replaced list element (found by the real-Immer cases)
    state2 = {"l": [None, [None, None], None]}
    check(state2, [Op("add", ("l", 0), "x"), Op("replace", ("l", 2), [None, None, None])])


def test_a_filter_by_assignment_becomes_index_operations() -> None:
    gifts = [{"id": k, "name": f"g{k}"} for k in range(40)]
    # draft.gifts = draft.gifts.filter(g => g.id !== 7): Immer replaces the whole list
    out = check({"gifts": gifts}, [Op("replace", ("gifts",), [g for g in gifts if g["id"] != 7])])
    assert out == [Op("remove", ("gifts", 7))]
    out = check({"gifts": gifts}, [Op("replace", ("gifts",), [g for g in gifts
                                                             if g["id"] % 10])])
    assert [op.op for op in out] == ["remove"] * 4
    # a sort is not a few index operations: left as it is
    shuffled = sorted(gifts, key=lambda g: (g["id"] * 7) % 40)
    assert compact([Op("replace", ("gifts",), shuffled)], {"gifts": gifts}) is None
