"""server.patches: JSON Pointer escaping, and parsing untrusted Immer / RFC 6902 batches.

Expected values are written out by hand or come from the ``jsonpointer`` library, never from the
module under test.
"""

from __future__ import annotations

import math
from typing import Any

import jsonpointer
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.config import Limits
from server.errors import ErrorCode, ServerError
from server.patches import (
    MISSING,
    Op,
    escape_token,
    from_pointer,
    parse_immer,
    parse_json_patch,
    to_pointer,
    unescape_token,
)

from .strategies import PROPERTY, RESERVED, canon, json_values, keys

LIMITS = Limits()
_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)


def code_of(call: Any, *args: Any) -> ErrorCode:
    with pytest.raises(ServerError) as info:
        call(*args)
    return info.value.code


# -- JSON Pointer (RFC 6901) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        ([], ""),  # the root
        ([""], "/"),
        (["a/b"], "/a~1b"),
        (["m~n"], "/m~0n"),
        (["~1"], "/~01"),  # "~" is escaped first: "~1" must not turn into "/"
        (["~0"], "/~00"),
        (["/~"], "/~1~0"),
        (["-"], "/-"),
        (["0", 0, 12], "/0/0/12"),
        (["", ""], "//"),
        (["日本語", "😀"], "/日本語/😀"),
    ],
)
def test_to_pointer_escapes_per_rfc_6901(segments: list[Any], expected: str) -> None:
    assert to_pointer(segments) == expected
    assert from_pointer(expected) == tuple(str(s) for s in segments)


@pytest.mark.parametrize(
    ("pointer", "tokens"),
    [
        ("", ()),
        ("/", ("",)),
        ("/a~1b/m~0n", ("a/b", "m~n")),
        ("/~01", ("~1",)),  # "~01" is "~" then "1", not "/"
        ("/~10", ("/0",)),
        ("/a//b/", ("a", "", "b", "")),
    ],
)
def test_from_pointer(pointer: str, tokens: tuple[str, ...]) -> None:
    assert from_pointer(pointer) == tokens


@pytest.mark.parametrize("pointer", ["a", "a/b", "#/a", "/~", "/a~", "/~2", "/a~x/b", "/~~0"])
def test_from_pointer_rejects_malformed_pointers(pointer: str) -> None:
    assert code_of(from_pointer, pointer) == ErrorCode.INVALID


@PROPERTY
@given(st.lists(_text, max_size=5))
def test_pointer_round_trip_matches_jsonpointer(segments: list[str]) -> None:
    ptr = to_pointer(segments)
    assert ptr == jsonpointer.JsonPointer.from_parts(segments).path
    assert from_pointer(ptr) == tuple(segments)


@PROPERTY
@given(_text)
def test_escaped_token_has_no_slash_and_only_valid_escapes(token: str) -> None:
    escaped = escape_token(token)
    assert "/" not in escaped
    assert all(escaped[i + 1 : i + 2] in ("0", "1") for i, ch in enumerate(escaped) if ch == "~")
    assert unescape_token(escaped) == token


@PROPERTY
@given(st.text(st.sampled_from("/~01a"), max_size=10))
def test_from_pointer_agrees_with_jsonpointer_on_any_string(ptr: str) -> None:
    try:
        expected: tuple[str, ...] | None = tuple(jsonpointer.JsonPointer(ptr).parts)
    except jsonpointer.JsonPointerException:
        expected = None
    try:
        got: tuple[str, ...] | None = from_pointer(ptr)
    except ServerError as exc:
        assert exc.code == ErrorCode.INVALID
        got = None
    assert got == expected


# -- Immer patches ---------------------------------------------------------------------------


def test_parse_immer_builds_ops() -> None:
    ops = parse_immer(
        [
            {"op": "add", "path": ["a", 0], "value": {"x": [1]}},
            {"op": "replace", "path": ["a/b", "m~n", ""]},
            {"op": "remove", "path": ["k"]},
            {"op": "replace", "path": [], "value": 3},
        ],
        LIMITS,
    )
    assert ops == [
        Op("add", ("a", 0), {"x": [1]}, None, True),
        Op("replace", ("a/b", "m~n", ""), MISSING, None, True),  # undefined: no value
        Op("remove", ("k",), MISSING, None, True),
        Op("replace", (), 3, None, True),
    ]


def test_parse_immer_drops_the_value_of_a_remove() -> None:
    assert parse_immer([{"op": "remove", "path": ["k"], "value": 1}], LIMITS)[0].value is MISSING


@pytest.mark.parametrize("segment", [True, False, None, {"a": 1}, [0], 1.5, 1.0, -1])
def test_immer_segments_other_than_strings_and_indexes_are_invalid(segment: Any) -> None:
    patch = {"op": "replace", "path": ["a", segment], "value": 1}
    assert code_of(parse_immer, [patch], LIMITS) == ErrorCode.INVALID


@pytest.mark.parametrize("op", ["add", "replace"])
def test_a_root_add_or_replace_needs_a_value(op: str) -> None:
    assert code_of(parse_immer, [{"op": op, "path": []}], LIMITS) == ErrorCode.INVALID


@pytest.mark.parametrize("op", ["move", "copy", "test", "ADD", "", None, 1])
def test_immer_accepts_only_add_remove_replace(op: Any) -> None:
    patch = {"op": op, "path": ["a"], "value": 1, "from": ["b"]}
    assert code_of(parse_immer, [patch], LIMITS) == ErrorCode.INVALID


@pytest.mark.parametrize("op", [[], {}, ["add"], {"op": "add"}])
def test_an_unhashable_op_is_invalid_not_a_crash(op: Any) -> None:
    # a client controls every field: a list or an object where "op" should be is bad input
    patch = {"op": op, "path": ["a"], "value": 1}
    assert code_of(parse_immer, [patch], LIMITS) == ErrorCode.INVALID
    patch = {"op": op, "path": "/a", "value": 1}
    assert code_of(parse_json_patch, [patch], LIMITS) == ErrorCode.INVALID


@pytest.mark.parametrize(
    "patches",
    [
        {"op": "add", "path": ["a"], "value": 1},  # not an array
        "[]",
        None,
        [1],
        [None],
        [["add", ["a"], 1]],
        [{"op": "add", "value": 1}],  # no path
        [{"op": "add", "path": "/a", "value": 1}],  # a pointer where a list is expected
        [{"op": "add", "path": {"0": "a"}, "value": 1}],
    ],
)
def test_malformed_immer_batches_are_invalid(patches: Any) -> None:
    assert code_of(parse_immer, patches, LIMITS) == ErrorCode.INVALID


@pytest.mark.parametrize("key", RESERVED)
@pytest.mark.parametrize("where", [0, 1, 2])
def test_reserved_keys_in_an_immer_path_are_forbidden(key: str, where: int) -> None:
    path: list[Any] = ["a", 0, "b"]
    path.insert(where, key)
    patch = {"op": "replace", "path": path, "value": 1}
    assert code_of(parse_immer, [patch], LIMITS) == ErrorCode.FORBIDDEN


@pytest.mark.parametrize("key", RESERVED)
@pytest.mark.parametrize(
    "wrap",
    [
        lambda k: {k: 1},
        lambda k: {"a": [{"b": {k: None}}]},
        lambda k: [[{k: {}}]],
        lambda k: {"ok": 1, "list": [1, 2, {"x": {k: [1]}}]},
    ],
)
def test_reserved_keys_inside_a_value_are_forbidden(key: str, wrap: Any) -> None:
    value = wrap(key)
    assert code_of(parse_immer, [{"op": "add", "path": ["v"], "value": value}], LIMITS) == (
        ErrorCode.FORBIDDEN
    )
    assert code_of(parse_json_patch, [{"op": "add", "path": "/v", "value": value}], LIMITS) == (
        ErrorCode.FORBIDDEN
    )


def test_reserved_words_as_string_values_are_fine() -> None:
    value = {"name": "__proto__", "list": ["constructor", "prototype"]}
    assert parse_immer([{"op": "add", "path": ["v"], "value": value}], LIMITS)[0].value == value


@pytest.mark.parametrize("key", RESERVED)
def test_reserved_keys_in_json_patch_paths_are_forbidden(key: str) -> None:
    for op in (
        {"op": "add", "path": f"/a/{key}", "value": 1},
        {"op": "remove", "path": f"/{key}"},
        {"op": "move", "from": f"/{key}/x", "path": "/b"},
        {"op": "copy", "from": "/a", "path": f"/b/{key}"},
    ):
        assert code_of(parse_json_patch, [op], LIMITS) == ErrorCode.FORBIDDEN, op


def test_escaped_reserved_keys_are_still_reserved() -> None:
    # "~" escapes cannot smuggle a reserved key past the check: tokens are unescaped first
    assert code_of(parse_json_patch, [{"op": "remove", "path": "/__proto__"}], LIMITS) == (
        ErrorCode.FORBIDDEN
    )
    assert parse_json_patch([{"op": "remove", "path": "/__proto__~1"}], LIMITS)[0].path == (
        "__proto__/",
    )


# -- RFC 6902 ------------------------------------------------------------------------------------


def test_parse_json_patch_unescapes_and_keeps_strings() -> None:
    ops = parse_json_patch(
        [
            {"op": "add", "path": "/a~1b/0/-", "value": None},
            {"op": "move", "from": "/m~0n", "path": ""},
            {"op": "copy", "from": "", "path": "/x"},
            {"op": "test", "path": "/", "value": [1]},
            {"op": "remove", "path": "/0"},
        ],
        LIMITS,
    )
    assert ops == [
        Op("add", ("a/b", "0", "-"), None, None, False),
        Op("move", (), MISSING, ("m~n",), False),
        Op("copy", ("x",), MISSING, (), False),
        Op("test", ("",), [1], None, False),
        Op("remove", ("0",), MISSING, None, False),
    ]


@pytest.mark.parametrize(
    "op",
    [
        {"op": "add", "path": "/a"},  # no value
        {"op": "replace", "path": "/a"},
        {"op": "test", "path": "/a"},
        {"op": "move", "path": "/a"},  # no from
        {"op": "copy", "path": "/a", "from": 1},
        {"op": "remove", "path": ["a"]},  # an Immer path
        {"op": "remove", "path": "a"},  # not a pointer
        {"op": "remove", "path": "/a~2"},  # bad escape
        {"op": "remove"},
        {"op": "merge", "path": "/a", "value": 1},
        {"path": "/a", "value": 1},
    ],
)
def test_malformed_json_patch_operations_are_invalid(op: dict[str, Any]) -> None:
    assert code_of(parse_json_patch, [op], LIMITS) == ErrorCode.INVALID


def test_json_patch_null_value_is_a_value() -> None:
    assert parse_json_patch([{"op": "add", "path": "/a", "value": None}], LIMITS)[0].value is None


# -- limits and values ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_invalid(bad: float) -> None:
    for value in (bad, [1, bad], {"a": {"b": bad}}):
        patch = {"op": "add", "path": ["a"], "value": value}
        assert code_of(parse_immer, [patch], LIMITS) == ErrorCode.INVALID


def test_too_many_operations() -> None:
    limits = Limits(max_ops=2)
    patch = {"op": "remove", "path": ["a"]}
    assert len(parse_immer([patch, patch], limits)) == 2
    assert code_of(parse_immer, [patch] * 3, limits) == ErrorCode.TOO_LARGE
    assert code_of(parse_json_patch, [{"op": "remove", "path": "/a"}] * 3, limits) == (
        ErrorCode.TOO_LARGE
    )


def nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


def test_value_depth_limit() -> None:
    # the depth that counts is where the value ends up: its path plus its own nesting
    limits = Limits(max_depth=4)
    assert parse_immer([{"op": "replace", "path": [], "value": nested(4)}], limits)
    assert parse_immer([{"op": "add", "path": ["a"], "value": nested(3)}], limits)
    patch = {"op": "add", "path": ["a"], "value": nested(4)}
    assert code_of(parse_immer, [patch], limits) == ErrorCode.TOO_LARGE
    patch = {"op": "add", "path": "/a", "value": nested(4)}
    assert code_of(parse_json_patch, [patch], limits) == ErrorCode.TOO_LARGE


def test_path_depth_limit() -> None:
    limits = Limits(max_depth=4)
    assert parse_immer([{"op": "remove", "path": ["a"] * 4}], limits)
    too_deep = [{"op": "remove", "path": ["a"] * 5}]
    assert code_of(parse_immer, too_deep, limits) == ErrorCode.TOO_LARGE
    too_deep = [{"op": "remove", "path": "/a" * 5}]
    assert code_of(parse_json_patch, too_deep, limits) == ErrorCode.TOO_LARGE


def test_string_and_key_length_limits() -> None:
    limits = Limits(max_string_bytes=4, max_key_bytes=3)
    assert parse_immer([{"op": "add", "path": ["abc"], "value": {"xyz": "1234"}}], limits)
    for patch in (
        {"op": "add", "path": ["a"], "value": "12345"},
        {"op": "add", "path": ["a"], "value": ["12345"]},
        {"op": "add", "path": ["a"], "value": {"long": 1}},
        {"op": "add", "path": ["long"], "value": 1},
    ):
        assert code_of(parse_immer, [patch], limits) == ErrorCode.TOO_LARGE, patch


@PROPERTY
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "op": st.sampled_from(["add", "remove", "replace"]),
                "path": st.lists(st.one_of(keys, st.integers(0, 2**53)), min_size=1, max_size=4),
            },
            optional={"value": json_values},
        ),
        max_size=5,
    )
)
def test_well_formed_immer_patches_parse_faithfully(patches: list[dict[str, Any]]) -> None:
    ops = parse_immer(patches, LIMITS)
    assert [(o.op, list(o.path), o.immer, o.from_) for o in ops] == [
        (p["op"], p["path"], True, None) for p in patches
    ]
    for op, p in zip(ops, patches, strict=True):
        if p["op"] == "remove" or "value" not in p:
            assert op.value is MISSING
        else:
            assert canon(op.value) == canon(p["value"])
