"""server.document: applying batches (Immer and RFC 6902), atomicity, versions, stale bases.

Expected states come from independent oracles (see ``tests/strategies.py``): a Python model of
Immer's ``produceWithPatches`` for Immer batches, the ``jsonpatch`` library for RFC 6902, and
hand-written values in the unit tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from server.config import Limits
from server.document import Applied, Document
from server.errors import ErrorCode, ServerError
from server.patches import parse_immer, parse_json_patch

from .strategies import (
    ABSENT_KEY,
    PROPERTY,
    apply_typed_immer,
    canon,
    deep,
    jp_apply,
    json_docs,
    json_image,
    pointer,
    produce,
    rfc_batch,
    to_wire,
    walk_paths,
)

LIMITS = Limits()
ROOT = Path(__file__).resolve().parent.parent


def immer(doc: Document, patches: list[dict[str, Any]], base: int | None = None) -> Applied:
    return doc.apply(parse_immer(deep(patches), LIMITS), base)


def rfc(doc: Document, ops: list[dict[str, Any]], base: int | None = None) -> Applied:
    return doc.apply(parse_json_patch(deep(ops), LIMITS), base)


def refused(doc: Document, call: Any, patches: list[dict[str, Any]],
            base: int | None = None) -> ErrorCode:
    """Apply and expect a refusal that leaves the document exactly as it was."""
    before, version = orjson.dumps(doc.state), doc.version
    with pytest.raises(ServerError) as info:
        call(doc, patches, base)
    assert orjson.dumps(doc.state) == before
    assert doc.version == version
    return info.value.code


def check_outputs(old: Any, applied: Applied, new: Any) -> None:
    """Both output formats of a batch take ``old`` to ``new``: RFC 6902 through jsonpatch,
    Immer through a strict typed applier, and each pointer path matches its Immer path."""
    assert canon(jp_apply(old, applied.json_patch)) == canon(new)
    assert canon(apply_typed_immer(old, applied.immer)) == canon(new)
    assert len(applied.json_patch) == len(applied.immer)
    for j, i in zip(applied.json_patch, applied.immer, strict=True):
        assert j["op"] == i["op"] and j["op"] in ("add", "remove", "replace")
        assert j["path"] == pointer(i["path"])
        assert ("value" in j) == ("value" in i) == (j["op"] != "remove")


# -- escaping and segment types ------------------------------------------------------------------

WEIRD = {
    "a/b": "/o/a~1b",
    "m~n": "/o/m~0n",
    "": "/o/",
    "-": "/o/-",
    "0": "/o/0",
    "~1": "/o/~01",
    "~01": "/o/~001",
    "/": "/o/~1",
    "length": "/o/length",
    "😀": "/o/😀",
}


@pytest.mark.parametrize(("key", "ptr"), WEIRD.items())
def test_weird_object_keys_round_trip(key: str, ptr: str) -> None:
    doc = Document({"o": {"keep": 1}})
    applied = immer(doc, [{"op": "add", "path": ["o", key], "value": [key]}])
    assert doc.state == {"o": {"keep": 1, key: [key]}}
    assert applied.json_patch == [{"op": "add", "path": ptr, "value": [key]}]
    assert applied.immer == [{"op": "add", "path": ["o", key], "value": [key]}]
    check_outputs({"o": {"keep": 1}}, applied, doc.state)
    # and back through RFC 6902 with the escaped pointer
    applied = rfc(doc, [{"op": "test", "path": ptr, "value": [key]}, {"op": "remove", "path": ptr}])
    assert doc.state == {"o": {"keep": 1}}
    assert applied.immer == [{"op": "remove", "path": ["o", key]}]


def test_root_path_is_the_empty_pointer() -> None:
    doc = Document({"a": 1})
    applied = immer(doc, [{"op": "replace", "path": [], "value": [1]}])
    assert doc.state == [1]
    assert applied.json_patch == [{"op": "replace", "path": "", "value": [1]}]
    assert applied.immer == [{"op": "replace", "path": [], "value": [1]}]


def test_digit_string_addresses_an_array_and_goes_out_as_a_number() -> None:
    doc = Document({"a": [10, 11, 12]})
    applied = immer(doc, [{"op": "replace", "path": ["a", "1"], "value": 9}])
    assert doc.state == {"a": [10, 9, 12]}
    assert applied.immer == [{"op": "replace", "path": ["a", 1], "value": 9}]
    assert type(applied.immer[0]["path"][1]) is int
    assert applied.json_patch == [{"op": "replace", "path": "/a/1", "value": 9}]
    applied = rfc(doc, [{"op": "add", "path": "/a/0", "value": 8}])
    assert applied.immer == [{"op": "add", "path": ["a", 0], "value": 8}]


def test_object_keys_go_out_as_strings() -> None:
    doc = Document({"o": {"0": "x", "1": "y"}})
    applied = immer(doc, [{"op": "replace", "path": ["o", "0"], "value": "z"}])
    assert applied.immer == [{"op": "replace", "path": ["o", "0"], "value": "z"}]
    applied = rfc(doc, [{"op": "remove", "path": "/o/1"}])
    assert applied.immer == [{"op": "remove", "path": ["o", "1"]}]
    assert all(type(s) is str for s in applied.immer[0]["path"])


@pytest.mark.parametrize("segment", ["01", "-", "x", "1.0", " 1", "+1", "length0", 3, "3"])
def test_array_segments_are_strict(segment: Any) -> None:
    doc = Document({"a": [0, 1, 2]})
    for patch in (
        {"op": "replace", "path": ["a", segment], "value": 5},
        {"op": "remove", "path": ["a", segment]},
        {"op": "replace", "path": ["a", segment, "x"], "value": 5},
    ):
        assert refused(doc, immer, [patch]) == ErrorCode.CONFLICT, patch


# -- undefined and Immer's lenient object members ------------------------------------------------


def test_member_set_to_undefined_is_removed() -> None:
    doc = Document({"a": 1, "b": 2})
    applied = immer(doc, [{"op": "replace", "path": ["a"]}])
    assert doc.state == {"b": 2}
    assert doc.version == 1
    assert applied.json_patch == [{"op": "remove", "path": "/a"}]
    assert applied.immer == [{"op": "remove", "path": ["a"]}]


@pytest.mark.parametrize("op", ["add", "replace"])
def test_absent_member_set_to_undefined_is_a_no_op(op: str) -> None:
    doc = Document({"a": 1})
    applied = immer(doc, [{"op": op, "path": ["x"]}])
    assert applied.empty and applied.json_patch == [] and applied.immer == []
    assert doc.state == {"a": 1}
    assert doc.version == 0


def test_array_element_set_to_undefined_becomes_null() -> None:
    doc = Document({"a": [1, 2]})
    applied = immer(doc, [{"op": "replace", "path": ["a", 0]}, {"op": "add", "path": ["a", 2]}])
    assert doc.state == {"a": [None, 2, None]}
    assert applied.json_patch == [
        {"op": "replace", "path": "/a/0", "value": None},
        {"op": "add", "path": "/a/2", "value": None},
    ]
    assert applied.immer == [
        {"op": "replace", "path": ["a", 0], "value": None},
        {"op": "add", "path": ["a", 2], "value": None},
    ]


def test_immer_remove_of_an_absent_member_is_a_no_op() -> None:
    doc = Document({"a": {"b": 1}})
    applied = immer(doc, [{"op": "remove", "path": ["a", "x"]}, {"op": "remove", "path": ["y"]}])
    assert applied.empty
    assert doc.state == {"a": {"b": 1}}
    assert doc.version == 0


def test_immer_replace_of_an_absent_member_creates_it() -> None:
    doc = Document({"a": {}})
    applied = immer(doc, [{"op": "replace", "path": ["a", "x"], "value": [1]}])
    assert doc.state == {"a": {"x": [1]}}
    assert applied.json_patch == [{"op": "add", "path": "/a/x", "value": [1]}]
    assert applied.immer == [{"op": "add", "path": ["a", "x"], "value": [1]}]


def test_immer_add_over_a_member_replaces_it() -> None:
    doc = Document({"a": 1})
    applied = immer(doc, [{"op": "add", "path": ["a"], "value": 2}])
    assert doc.state == {"a": 2}
    check_outputs({"a": 1}, applied, {"a": 2})


@pytest.mark.parametrize(
    "patch",
    [
        {"op": "add", "path": ["a", 3], "value": 0},  # one past the end
        {"op": "replace", "path": ["a", 2], "value": 0},
        {"op": "replace", "path": ["a", 2]},
        {"op": "remove", "path": ["a", 2]},
        {"op": "add", "path": ["missing", 0], "value": 0},
        {"op": "add", "path": ["missing", "x"], "value": 0},
        {"op": "remove", "path": ["missing", "x"]},  # lenient members, but a missing parent
        {"op": "replace", "path": ["missing", "x"]},
        {"op": "add", "path": ["a", 0, "x"], "value": 0},  # through a scalar
        {"op": "add", "path": ["s", "x"], "value": 0},
        {"op": "add", "path": ["s", 0], "value": 0},
    ],
)
def test_immer_array_indexes_and_parents_stay_strict(patch: dict[str, Any]) -> None:
    doc = Document({"a": [1, 2], "s": "text"})
    assert refused(doc, immer, [patch]) == ErrorCode.CONFLICT


# -- array length (Immer <= 3.2 and 7.0-9.0.21) ---------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, []), (1, [1]), (2, [1, 2]), (3, [1, 2, 3]), (4, [1, 2, 3, None]),
        (6, [1, 2, 3, None, None, None]),
    ],
)
def test_length_replace(n: int, expected: list[Any]) -> None:
    doc = Document({"a": [1, 2, 3], "b": 0})
    applied = immer(doc, [{"op": "replace", "path": ["a", "length"], "value": n}])
    assert doc.state == {"a": expected, "b": 0}
    check_outputs({"a": [1, 2, 3], "b": 0}, applied, doc.state)
    if n < 3:  # removes from the end
        assert [p["path"] for p in applied.json_patch] == [f"/a/{i}" for i in range(2, n - 1, -1)]
    assert doc.version == (0 if n == 3 else 1)


def test_length_after_element_replaces_as_immer_9_sends_it() -> None:
    # real Immer 9.0.21 for `d.a.splice(0, 2, "x")` on ["p", "q", "r"]
    doc = Document({"a": ["p", "q", "r"]})
    immer(doc, [
        {"op": "replace", "path": ["a", 0], "value": "x"},
        {"op": "replace", "path": ["a", 1], "value": "r"},
        {"op": "replace", "path": ["a", "length"], "value": 2},
    ])
    assert doc.state == {"a": ["x", "r"]}


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True, None, [1], {}])
def test_bad_length_is_invalid(bad: Any) -> None:
    doc = Document({"a": [1, 2, 3]})
    assert refused(doc, immer, [{"op": "replace", "path": ["a", "length"], "value": bad}]) == (
        ErrorCode.INVALID
    )
    assert refused(doc, immer, [{"op": "replace", "path": ["a", "length"]}]) == ErrorCode.INVALID


def test_length_of_an_object_is_an_ordinary_member() -> None:
    doc = Document({"o": {"length": 5}})
    immer(doc, [{"op": "replace", "path": ["o", "length"], "value": 1}])
    assert doc.state == {"o": {"length": 1}}
    rfc(doc, [{"op": "remove", "path": "/o/length"}])
    assert doc.state == {"o": {}}


# -- the root -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [{"x": 1}, [1, {"y": 2}], "s", 0, None, False, {}])
def test_root_replace_replaces_the_whole_document(value: Any) -> None:
    for call, patch in (
        (immer, {"op": "replace", "path": [], "value": value}),
        (immer, {"op": "add", "path": [], "value": value}),
        (rfc, {"op": "replace", "path": "", "value": value}),
        (rfc, {"op": "add", "path": "", "value": value}),
    ):
        doc = Document({"a": [1], "b": {"c": 2}})
        applied = call(doc, [patch])
        assert canon(doc.state) == canon(value)
        assert doc.version == 1
        assert canon(applied.json_patch) == canon([{"op": "replace", "path": "", "value": value}])


def test_operations_after_a_root_replace_address_the_new_root() -> None:
    doc = Document({"a": 1})
    immer(doc, [
        {"op": "replace", "path": [], "value": {"list": []}},
        {"op": "add", "path": ["list", 0], "value": "x"},
    ])
    assert doc.state == {"list": ["x"]}
    assert refused(doc, immer, [
        {"op": "replace", "path": [], "value": 3},
        {"op": "add", "path": ["list", 0], "value": "y"},
    ]) == ErrorCode.CONFLICT


def test_root_remove_is_invalid() -> None:
    assert refused(Document({"a": 1}), immer, [{"op": "remove", "path": []}]) == "invalid"
    assert refused(Document({"a": 1}), rfc, [{"op": "remove", "path": ""}]) == "invalid"


# -- RFC 6902 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op",
    [
        {"op": "remove", "path": "/x"},
        {"op": "replace", "path": "/x", "value": 1},
        {"op": "remove", "path": "/o/x"},
        {"op": "replace", "path": "/a/2", "value": 1},
        {"op": "remove", "path": "/a/2"},
        {"op": "add", "path": "/a/3", "value": 1},
        {"op": "add", "path": "/a/01", "value": 1},
        {"op": "replace", "path": "/a/-", "value": 1},
        {"op": "remove", "path": "/a/-"},
        {"op": "add", "path": "/x/y", "value": 1},
        {"op": "add", "path": "/s/y", "value": 1},
        {"op": "test", "path": "/x", "value": None},
        {"op": "test", "path": "/a/-", "value": 1},
        {"op": "move", "from": "/x", "path": "/y"},
        {"op": "copy", "from": "/x", "path": "/y"},
        {"op": "move", "from": "/o", "path": "/x/y"},
        {"op": "copy", "from": "/o", "path": "/a/5"},
    ],
)
def test_json_patch_is_strict(op: dict[str, Any]) -> None:
    doc = Document({"a": [1, 2], "o": {}, "s": "text"})
    assert refused(doc, rfc, [op]) == ErrorCode.CONFLICT


@pytest.mark.parametrize(
    ("source", "target"), [("/o", "/o/x"), ("/o", "/o/p/q"), ("", "/o"), ("/a/0", "/a/0/x")]
)
def test_move_into_own_child_is_invalid(source: str, target: str) -> None:
    doc = Document({"o": {"p": {}}, "a": [{}]})
    assert refused(doc, rfc, [{"op": "move", "from": source, "path": target}]) == "invalid"


def test_dash_appends() -> None:
    doc = Document({"a": [1], "o": {}})
    applied = rfc(doc, [
        {"op": "add", "path": "/a/-", "value": 2},
        {"op": "copy", "from": "/a/0", "path": "/a/-"},
        {"op": "move", "from": "/a/0", "path": "/a/-"},
        {"op": "add", "path": "/o/-", "value": "a member named -"},
    ])
    assert doc.state == {"a": [2, 1, 1], "o": {"-": "a member named -"}}
    paths = [p["path"] for p in applied.immer]
    assert paths == [["a", 1], ["a", 2], ["a", 0], ["a", 2], ["o", "-"]]
    check_outputs({"a": [1], "o": {}}, applied, doc.state)


def test_move_copy_test_go_out_as_add_remove_replace() -> None:
    old = {"a": {"x": [1, 2]}, "b": [], "c": 0}
    doc = Document(deep(old))
    applied = rfc(doc, [
        {"op": "test", "path": "/a/x", "value": [1, 2]},
        {"op": "copy", "from": "/a", "path": "/b/0"},
        {"op": "move", "from": "/a/x", "path": "/c"},
        {"op": "move", "from": "/b/0", "path": "/a/y"},
        {"op": "test", "path": "", "value": {"a": {"y": {"x": [1, 2]}}, "b": [], "c": [1, 2]}},
    ])
    assert doc.state == {"a": {"y": {"x": [1, 2]}}, "b": [], "c": [1, 2]}
    assert {p["op"] for p in applied.immer} <= {"add", "remove", "replace"}
    check_outputs(old, applied, doc.state)


def test_move_onto_itself_changes_nothing() -> None:
    doc = Document({"a": {"b": 1}})
    applied = rfc(doc, [{"op": "move", "from": "/a", "path": "/a"}])
    assert applied.empty and doc.version == 0 and doc.state == {"a": {"b": 1}}


def test_copy_does_not_alias() -> None:
    doc = Document({"a": {"x": [1]}})
    rfc(doc, [{"op": "copy", "from": "/a", "path": "/b"},
              {"op": "add", "path": "/b/x/-", "value": 2}])
    assert doc.state == {"a": {"x": [1]}, "b": {"x": [1, 2]}}
    rfc(doc, [{"op": "copy", "from": "", "path": "/a/root"}, {"op": "remove", "path": "/b"}])
    assert doc.state == {"a": {"x": [1], "root": {"a": {"x": [1]}, "b": {"x": [1, 2]}}}}


@pytest.mark.parametrize(
    ("current", "tested", "equal"),
    [
        (1, 1.0, True),
        (1.0, 1, True),
        (True, 1, False),
        (1, True, False),
        (False, 0, False),
        (0, False, False),
        (None, 0, False),
        (None, False, False),
        ("1", 1, False),
        ("", None, False),
        ({"a": 1, "b": [2]}, {"b": [2.0], "a": 1}, True),
        ({"a": 1}, {"a": 1, "b": None}, False),
        ([1, 2], [2, 1], False),
        ([1], [1.0], True),
        ([True], [1], False),
        ({"a": [False]}, {"a": [0]}, False),
        ([], {}, False),
        (2**53 + 1, float(2**53), False),
    ],
)
def test_test_uses_json_equality(current: Any, tested: Any, equal: bool) -> None:
    doc = Document({"v": current})
    op = [{"op": "test", "path": "/v", "value": tested}]
    if equal:
        assert rfc(doc, op).empty
    else:
        assert refused(doc, rfc, op) == ErrorCode.CONFLICT


# -- atomicity, versions and copies ---------------------------------------------------------------


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "remove", "path": "/a"}, {"op": "remove", "path": "/zz"}],
        [{"op": "remove", "path": "/b"}, {"op": "add", "path": "/b", "value": 2},
         {"op": "test", "path": "/b", "value": 3}],
        [{"op": "move", "from": "/a", "path": "/z"}, {"op": "remove", "path": "/zz"}],
        [{"op": "remove", "path": "/l/0"}, {"op": "add", "path": "/l/9", "value": 1}],
        [{"op": "replace", "path": "", "value": 1}, {"op": "remove", "path": "/a"}],
    ],
)
def test_failed_batch_keeps_bytes_and_key_order(ops: list[dict[str, Any]]) -> None:
    doc = Document({"a": 1, "b": 2, "c": {"d": 3, "e": 4}, "l": [1, 2]})
    assert refused(doc, rfc, ops) in (ErrorCode.CONFLICT, ErrorCode.INVALID)


def test_failed_immer_batch_keeps_key_order() -> None:
    doc = Document({"first": 1, "second": {"x": 1, "y": 2}, "list": [1, 2, 3]})
    refused(doc, immer, [
        {"op": "replace", "path": ["first"]},  # undefined: removed
        {"op": "remove", "path": ["second", "x"]},
        {"op": "replace", "path": ["list", "length"], "value": 1},
        {"op": "add", "path": ["list", 5], "value": 0},
    ])


def test_apply_mutates_in_place() -> None:
    big = {"k": list(range(100))}
    root = {"big": big, "small": {"n": 1}}
    doc = Document(root)
    immer(doc, [{"op": "replace", "path": ["small", "n"], "value": 2}])
    assert doc.state is root and doc.state["big"] is big  # no whole-document copy
    refused(doc, immer, [{"op": "replace", "path": ["small", "n"], "value": 3},
                         {"op": "remove", "path": []}])
    assert doc.state is root and doc.state["big"] is big and root["small"] == {"n": 2}


def test_versions() -> None:
    doc = Document({"a": [1]}, version=7)
    applied = immer(doc, [{"op": "add", "path": ["a", 1], "value": 2},
                          {"op": "add", "path": ["b"], "value": 3},
                          {"op": "remove", "path": ["a", 0]}])
    assert doc.version == 8 and len(applied.json_patch) == 3
    assert immer(doc, []).empty and doc.version == 8
    assert rfc(doc, [{"op": "test", "path": "/b", "value": 3}]).empty and doc.version == 8
    assert immer(doc, [{"op": "remove", "path": ["nope"]}]).empty and doc.version == 8
    assert not rfc(doc, [{"op": "remove", "path": "/b"}]).empty and doc.version == 9


def test_applied_values_and_inputs_do_not_alias_the_document() -> None:
    doc = Document({})
    value = {"x": [1]}
    first = doc.apply(parse_immer([{"op": "add", "path": ["a"], "value": value}], LIMITS))
    value["x"].append("changed by the caller")
    assert doc.state == {"a": {"x": [1]}}
    immer(doc, [{"op": "add", "path": ["a", "x", 1], "value": 2}])
    rfc(doc, [{"op": "copy", "from": "/a", "path": "/b"}])
    copied = doc.apply(parse_json_patch([{"op": "move", "from": "/b", "path": "/c"}], LIMITS))
    rfc(doc, [{"op": "add", "path": "/c/x/-", "value": 3},
              {"op": "add", "path": "/a/y", "value": 4}])
    assert first.json_patch[0]["value"]["x"][0] == 1
    assert first.immer[0]["value"]["x"][0] == 1
    assert copied.json_patch[-1]["value"] == {"x": [1, 2]}
    assert copied.immer[-1]["value"] == {"x": [1, 2]}


def test_documents_cannot_grow_deeper_than_json_can_nest() -> None:
    # each copy of the root under itself adds a level; the document must stay serializable
    # (refusing the batch with a ServerError, e.g. too_large, is fine)
    doc = Document({})
    for _ in range(300):
        try:
            rfc(doc, [{"op": "copy", "from": "", "path": "/a"}])
        except ServerError:
            break
    orjson.dumps(doc.state)


# One batch is applied in this process's memory before ``max_bytes`` is checked: a small frame
# must not be able to make that work unbounded. Each case runs in a child process capped at
# 512 MiB of address space and 20 s, and must be refused (too_large) within those bounds.
BOUNDED_APPLY = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 29, 1 << 29))
import orjson
from server.config import Limits
from server.document import Document
from server.errors import ServerError
from server.patches import parse_immer, parse_json_patch
state, fmt, patches = orjson.loads(sys.stdin.buffer.read())
doc = Document(state, max_bytes=1 << 20)
parse = parse_immer if fmt == "immer" else parse_json_patch
try:
    doc.apply(parse(patches, Limits()))
except ServerError as exc:
    print(exc.code.value)
else:
    print("applied", len(orjson.dumps(doc.state)))
"""


@pytest.mark.parametrize(
    ("state", "fmt", "patches"),
    [
        # ~70 bytes: pads an array with 10**12 nulls, one journaled insert at a time
        ({"a": []}, "immer", [{"op": "replace", "path": ["a", "length"], "value": 10**12}]),
        # ~1.7 KB: each copy of the root doubles the document (2**40 times 100 bytes)
        ({"seed": "x" * 100}, "json-patch",
         [{"op": "copy", "from": "", "path": f"/c{i}"} for i in range(40)]),
    ],
    ids=["length", "copy-doubling"],
)
def test_one_small_batch_cannot_exhaust_memory_or_time(state: Any, fmt: str,
                                                       patches: list[Any]) -> None:
    try:
        proc = subprocess.run(
            [sys.executable, "-c", BOUNDED_APPLY], input=orjson.dumps([state, fmt, patches]),
            capture_output=True, timeout=20, cwd=ROOT, check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("applying one small batch took more than 20 s")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-1500:]
    assert proc.stdout.decode().strip() == ErrorCode.TOO_LARGE


# -- the stale-base rule ------------------------------------------------------------------------


def stale_doc() -> Document:
    """Version 2 of {"a": {..}, "b": {..}, "l": [...]}, where version 2 touched /a/x and
    inserted into /l at index 2."""
    doc = Document({"a": {"x": 0, "y": 0}, "b": {"z": 0}, "l": [0, 1, 2, 3, 4], "c": 0})
    immer(doc, [{"op": "replace", "path": ["c"], "value": 1}])
    immer(doc, [{"op": "replace", "path": ["a", "x"], "value": 1},
                {"op": "add", "path": ["l", 2], "value": "new"}])
    assert doc.version == 2
    return doc


def test_no_base_applies_at_head() -> None:
    doc = stale_doc()
    immer(doc, [{"op": "replace", "path": ["a", "x"], "value": 9}])
    assert doc.state["a"]["x"] == 9 and doc.version == 3


def test_base_equal_to_version_applies() -> None:
    doc = stale_doc()
    immer(doc, [{"op": "replace", "path": ["a", "x"], "value": 9}], base=2)
    assert doc.version == 3


@pytest.mark.parametrize(
    "patch",
    [
        {"op": "replace", "path": ["b", "z"], "value": 9},  # a sibling object
        {"op": "replace", "path": ["a", "y"], "value": 9},  # a sibling member of /a/x
        {"op": "add", "path": ["a", "w"], "value": 9},
        {"op": "replace", "path": ["l", 1], "value": 9},  # below the insertion index
        {"op": "add", "path": ["l", 0], "value": 9},
        {"op": "replace", "path": ["c"], "value": 9},  # touched by version 1 only
    ],
)
def test_stale_base_accepts_disjoint_paths(patch: dict[str, Any]) -> None:
    doc = stale_doc()
    immer(doc, [patch], base=1)
    assert doc.version == 3


@pytest.mark.parametrize(
    "patch",
    [
        {"op": "replace", "path": ["a", "x"], "value": 9},  # the same path
        {"op": "replace", "path": ["a"], "value": {}},  # a prefix of a written path
        {"op": "replace", "path": [], "value": {}},  # the root is everyone's prefix
        {"op": "replace", "path": ["l"], "value": []},  # the array itself (written below it)
    ],
)
def test_stale_base_rejects_true_overlaps(patch: dict[str, Any]) -> None:
    doc = stale_doc()
    assert refused(doc, immer, [{"op": "replace", "path": ["b", "z"], "value": 1}, patch],
                   base=1) == ErrorCode.CONFLICT


@pytest.mark.parametrize(
    ("patch", "moved"),
    [
        ({"op": "replace", "path": ["l", 2], "value": 9}, ["l", 3]),  # at the insertion index
        ({"op": "replace", "path": ["l", 3], "value": 9}, ["l", 4]),  # above it
        ({"op": "remove", "path": ["l", 4]}, ["l", 5]),
        ({"op": "add", "path": ["l", 2], "value": 9}, ["l", 3]),  # a tie: ours goes after
        ({"op": "add", "path": ["l", 5], "value": 9}, ["l", 6]),  # an append stays one
        ({"op": "replace", "path": ["l", "4"], "value": 9}, ["l", 5]),  # a digit string too
    ],
)
def test_stale_base_moves_indexes_over_a_later_insert(patch: dict[str, Any],
                                                      moved: list[Any]) -> None:
    doc = stale_doc()
    head = Document(deep(doc.state), doc.version)
    applied = immer(doc, [patch], base=1)
    assert applied.immer[0]["path"] == moved and applied.rewritten
    immer(head, [{**patch, "path": moved}])  # the same as the moved op applied at the head
    assert canon(doc.state) == canon(head.state)


def test_stale_base_removals_move_indexes_down_and_a_removed_element_conflicts() -> None:
    doc = Document({"l": [0, 1, 2, 3]})
    immer(doc, [{"op": "remove", "path": ["l", 1]}])
    assert refused(doc, immer, [{"op": "replace", "path": ["l", 1], "value": 9}],
                   base=0) == ErrorCode.CONFLICT  # the element it addresses is gone
    assert refused(doc, immer, [{"op": "remove", "path": ["l", 1]}],
                   base=0) == ErrorCode.CONFLICT  # removed twice: the second one conflicts
    immer(doc, [{"op": "replace", "path": ["l", 2], "value": 9}], base=0)  # element 2 is at 1
    immer(doc, [{"op": "replace", "path": ["l", 0], "value": 8}], base=0)  # below: unmoved
    immer(doc, [{"op": "add", "path": ["l", 1], "value": "i"}], base=0)  # an insert applies
    assert doc.state == {"l": [8, "i", 9, 3]}


def test_a_batch_s_later_ops_see_its_earlier_ones() -> None:
    # the committed insert is carried over the batch's own insert: the batch's replace of its
    # index 3 (the base's element 2) must not be moved past the committed element
    doc = Document({"l": ["o0", "o1", "o2", "o3"]})
    immer(doc, [{"op": "add", "path": ["l", 3], "value": "C"}])
    immer(doc, [{"op": "add", "path": ["l", 0], "value": "x"},
                {"op": "replace", "path": ["l", 3], "value": "o2!"}], base=0)
    assert doc.state == {"l": ["x", "o0", "o1", "o2!", "C", "o3"]}


def test_stale_base_considers_move_sources_and_dash() -> None:
    doc = stale_doc()
    assert refused(doc, rfc, [{"op": "move", "from": "/a/x", "path": "/b/w"}], base=1) == (
        ErrorCode.CONFLICT
    )
    assert refused(doc, rfc, [{"op": "move", "from": "/l/0", "path": "/b/w"}], base=1) == (
        ErrorCode.CONFLICT  # a move out of an array shifted since is not transformed
    )
    rfc(doc, [{"op": "add", "path": "/l/-", "value": "end"}], base=1)  # still the end
    assert doc.state["l"][-1] == "end"
    rfc(doc, [{"op": "move", "from": "/a/y", "path": "/b/w"}], base=1)


def test_stale_length_change_conflicts_with_a_later_push() -> None:
    # an Immer 9 `length` patch cuts (or pads) the end of the array; an element pushed after
    # its base would be silently dropped, so any later shift of that array is a conflict
    doc = Document({"l": [0, 1, 2, 3, 4]})
    immer(doc, [{"op": "add", "path": ["l", 5], "value": "pushed"}])
    patch = {"op": "replace", "path": ["l", "length"], "value": 3}
    assert refused(doc, immer, [patch], base=0) == ErrorCode.CONFLICT
    assert doc.state == {"l": [0, 1, 2, 3, 4, "pushed"]}
    immer(doc, [patch], base=1)  # made against the current version, it applies
    assert doc.state == {"l": [0, 1, 2]}


@pytest.mark.parametrize("base", [3, 100])
def test_base_ahead_of_version_is_invalid(base: int) -> None:
    doc = stale_doc()
    assert refused(doc, immer, [{"op": "replace", "path": ["c"], "value": 9}], base=base) == (
        ErrorCode.INVALID
    )


@pytest.mark.parametrize("base", [-1, True, 1.0, "1"])
def test_malformed_base_is_invalid(base: Any) -> None:
    doc = stale_doc()
    assert refused(doc, immer, [{"op": "replace", "path": ["c"], "value": 9}], base=base) == (
        ErrorCode.INVALID
    )


def test_base_older_than_the_kept_history_is_a_conflict() -> None:
    doc = Document({"a": 0, "b": 0}, max_base_lag=2)
    for i in range(3):
        immer(doc, [{"op": "replace", "path": ["a"], "value": i + 1}])
    immer(doc, [{"op": "replace", "path": ["b"], "value": 1}], base=1)
    assert refused(doc, immer, [{"op": "replace", "path": ["b"], "value": 2}], base=0) == (
        ErrorCode.CONFLICT
    )


# -- properties ----------------------------------------------------------------------------------


@PROPERTY
@given(st.data())
def test_immer_batches_reach_immers_state(data: st.DataObject) -> None:
    """Property 1: applying the patches of a random recipe gives Immer's state as JSON."""
    legacy = data.draw(st.booleans(), label="legacy length patches")
    js = data.draw(json_docs, label="document")
    doc = Document(deep(js))
    for _ in range(data.draw(st.integers(1, 4), label="batches")):
        js, patches = produce(data.draw, js, legacy)
        wire = to_wire(patches)
        note(f"patches {wire}")
        version, old = doc.version, deep(doc.state)
        applied = immer(doc, wire)
        expected = json_image(js)
        assert canon(doc.state) == canon(expected)
        assert doc.version == version + (0 if applied.empty else 1)
        if canon(old) != canon(expected):
            assert doc.version == version + 1


@PROPERTY
@given(st.data())
def test_outputs_round_trip(data: st.DataObject) -> None:
    """Property 2: Applied.json_patch (through jsonpatch) and Applied.immer (through a fresh
    Document, and through a strict typed applier) both take the old state to the new one."""
    legacy = data.draw(st.booleans(), label="legacy length patches")
    js = data.draw(json_docs, label="document")
    doc = Document(deep(js))
    for _ in range(data.draw(st.integers(1, 3), label="batches")):
        js, patches = produce(data.draw, js, legacy)
        old = deep(doc.state)
        applied = immer(doc, to_wire(patches))
        new = json_image(js)
        check_outputs(old, applied, new)
        again = Document(deep(old))
        replayed = immer(again, deep(applied.immer))
        assert canon(again.state) == canon(new)
        # the server's own output is a fixed point of the conversion
        assert canon(replayed.immer) == canon(applied.immer)
        assert canon(replayed.json_patch) == canon(applied.json_patch)


@PROPERTY
@given(st.data())
def test_json_patch_batches_match_jsonpatch(data: st.DataObject) -> None:
    """RFC 6902 input (add/remove/replace/move/copy/test): the Document and jsonpatch agree."""
    state = json_image(data.draw(json_docs, label="document"))
    doc = Document(deep(state))
    for _ in range(data.draw(st.integers(1, 3), label="batches")):
        ops, expected = rfc_batch(data.draw, doc.state)
        note(f"ops {ops}")
        old = deep(doc.state)
        applied = rfc(doc, ops)
        assert canon(doc.state) == canon(expected)
        check_outputs(old, applied, expected)


def failing_immer_patch(draw: Any, state: Any) -> dict[str, Any]:
    options: list[dict[str, Any]] = [
        {"op": "add", "path": [ABSENT_KEY, "x"], "value": 1},
        {"op": "replace", "path": [ABSENT_KEY, 0]},
        {"op": "remove", "path": []},
    ]
    for path, value in walk_paths(state):
        if isinstance(value, list):
            n = len(value)
            options += [
                {"op": "add", "path": [*path, n + 1], "value": 0},
                {"op": "replace", "path": [*path, n], "value": 0},
                {"op": "remove", "path": [*path, n]},
                {"op": "replace", "path": [*path, "length"], "value": -1},
                {"op": "add", "path": [*path, "01"], "value": 0},
            ]
        elif not isinstance(value, dict):
            options.append({"op": "add", "path": [*path, "x"], "value": 1})
    return draw(st.sampled_from(options), label="failing patch")


def failing_rfc_op(draw: Any, state: Any) -> dict[str, Any]:
    absent = pointer([ABSENT_KEY])
    options: list[dict[str, Any]] = [
        {"op": "remove", "path": absent},
        {"op": "replace", "path": absent, "value": 1},
        {"op": "copy", "from": absent, "path": "/x"},
        {"op": "move", "from": "", "path": absent},
        {"op": "remove", "path": ""},
    ]
    for path, value in walk_paths(state):
        ptr = pointer(path)
        options.append({"op": "test", "path": ptr, "value": [deep(value)]})  # never equal
        if path:
            options.append({"op": "move", "from": ptr, "path": ptr + "/x"})
        if isinstance(value, list):
            options += [
                {"op": "replace", "path": ptr + "/-", "value": 1},
                {"op": "add", "path": f"{ptr}/{len(value) + 1}", "value": 1},
            ]
        elif isinstance(value, dict):
            options.append({"op": "remove", "path": pointer([*path, ABSENT_KEY])})
    return draw(st.sampled_from(options), label="failing op")


@PROPERTY
@given(st.data())
def test_failed_batch_changes_nothing(data: st.DataObject) -> None:
    """Property 3: a valid batch with a failing operation injected anywhere leaves the
    document byte for byte (key order included) and the version as they were."""
    js = data.draw(json_docs, label="document")
    doc = Document(deep(js))
    for _ in range(data.draw(st.integers(0, 2), label="warm-up batches")):
        js, patches = produce(data.draw, js)
        immer(doc, to_wire(patches))
    before = orjson.dumps(doc.state)
    fmt = data.draw(st.sampled_from(["immer", "json-patch"]), label="format")
    if fmt == "immer":
        js_after, patches = produce(data.draw, js)
        batch, call, failing = to_wire(patches), immer, failing_immer_patch
    else:
        batch, _ = rfc_batch(data.draw, doc.state, max_ops=6)
        call, failing = rfc, failing_rfc_op
    # often last: the more the batch did before failing, the more there is to undo
    at = data.draw(st.sampled_from([len(batch), None]), label="fail last")
    if at is None:
        at = data.draw(st.integers(0, len(batch)), label="failing position")
    scratch = Document(orjson.loads(before))
    call(scratch, batch[:at])
    bad = failing(data.draw, scratch.state)
    refused(doc, call, [*batch[:at], bad, *batch[at:]])
    # the document still works: the valid batch applies as it would have
    call(doc, batch)
    if fmt == "immer":
        assert canon(doc.state) == canon(json_image(js_after))


@PROPERTY
@given(st.data())
def test_revert_takes_back_the_newest_batch(data: st.DataObject) -> None:
    """Document.revert (a commit that lost a race) restores bytes, version and size, and the
    same batch then applies again with the same outputs."""
    js = data.draw(json_docs, label="document")
    doc = Document(deep(js))
    for _ in range(data.draw(st.integers(0, 2), label="warm-up batches")):
        js, patches = produce(data.draw, js)
        immer(doc, to_wire(patches))
    before, version, size = orjson.dumps(doc.state), doc.version, doc.size
    if data.draw(st.booleans(), label="immer"):
        batch, call = to_wire(produce(data.draw, js)[1]), immer
    else:
        batch, call = rfc_batch(data.draw, doc.state)[0], rfc
    applied = call(doc, batch)
    after = orjson.dumps(doc.state)
    if applied.empty:
        return
    doc.revert(applied)
    assert orjson.dumps(doc.state) == before
    assert (doc.version, doc.size) == (version, size)
    again = call(doc, batch)
    assert orjson.dumps(doc.state) == after
    assert canon(again.json_patch) == canon(applied.json_patch)
    assert canon(again.immer) == canon(applied.immer)


def test_a_reverted_batch_no_longer_counts_for_stale_bases() -> None:
    doc = Document({"a": 0, "b": 0})
    doc.revert(immer(doc, [{"op": "replace", "path": ["a"], "value": 1}]))
    assert doc.version == 0
    immer(doc, [{"op": "replace", "path": ["b"], "value": 1}])
    immer(doc, [{"op": "replace", "path": ["a"], "value": 2}], base=0)  # /a untouched since 0
    assert doc.state == {"a": 2, "b": 1} and doc.version == 2


@PROPERTY
@given(st.data())
def test_snapshot_plus_tail_equals_head(data: st.DataObject) -> None:
    """Property 4: for every cut k, the snapshot at k plus the RFC 6902 patches of versions
    k+1..n gives the state at n (re-applied by a Document and by jsonpatch)."""
    js = data.draw(json_docs, label="document")
    doc = Document(deep(js))
    snapshots = [orjson.dumps(doc.state)]
    log: list[list[dict[str, Any]]] = []
    for _ in range(data.draw(st.integers(1, 6), label="batches")):
        if data.draw(st.booleans(), label="immer batch"):
            js, patches = produce(data.draw, js, data.draw(st.booleans(), label="legacy"))
            applied = immer(doc, to_wire(patches))
        else:
            ops, _ = rfc_batch(data.draw, doc.state)
            applied = rfc(doc, ops)
            js = deep(doc.state)
        if not applied.empty:
            log.append(applied.json_patch)  # kept as returned: later batches must not alter it
            snapshots.append(orjson.dumps(doc.state))
    head = orjson.dumps(doc.state)
    assert doc.version == len(log)
    for k, snapshot in enumerate(snapshots):
        replica = Document(orjson.loads(snapshot), version=k)
        for ops in log[k:]:
            replica.apply(parse_json_patch(deep(ops), LIMITS))
        assert replica.version == doc.version
        assert canon(replica.state) == canon(doc.state)
        assert orjson.dumps(replica.state) == head  # a replica has the same bytes, key order too
        flat = [op for ops in log[k:] for op in ops]
        assert canon(jp_apply(orjson.loads(snapshot), flat)) == canon(doc.state)


def test_reverting_more_batches_than_the_history_keeps() -> None:
    # a shared store's round can stage more batches than max_base_lag; a lost race reverts them
    # all (found by the scale-out benchmark: 1,024 batches against a history of 1,000)
    doc = Document({"n": 0}, max_base_lag=3)
    applied = [immer(doc, [{"op": "replace", "path": ["n"], "value": i}]) for i in range(1, 6)]
    for batch in reversed(applied):
        doc.revert(batch)
    assert doc.state == {"n": 0} and doc.version == 0
    immer(doc, [{"op": "replace", "path": ["n"], "value": 9}], base=0)  # base == version
    assert doc.version == 1
