"""server.protocol: frames in, typed requests out, every refusal with a documented code.

The fuzz property follows the websockets fuzzers: every frame is accepted, or refused with a
ServerError (answer ``error``) or a RejectedRequest (answer ``reject`` with the message id); and
whatever is accepted applies to a Document or is refused with the document unchanged.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from server.config import Limits
from server.document import Document
from server.errors import ErrorCode, ServerError
from server.messages import FORMATS, PatchRequest
from server.patches import MISSING, Op, parse_immer
from server.protocol import RejectedRequest, parse_frame, parse_lesson_frame

from .strategies import PROPERTY, canon, deep, jp_apply, walk_paths

LIMITS = Limits()
CODES = set(ErrorCode)


def frame(**message: Any) -> str:
    return orjson.dumps(message).decode()


def error_of(text: str, fmt: str = "immer", limits: Limits = LIMITS) -> ErrorCode:
    """A frame that is not a valid message: a plain ServerError, not a reject."""
    with pytest.raises(ServerError) as info:
        parse_frame(text, fmt, limits)  # type: ignore[arg-type]
    return info.value.code


def reject_of(text: str, fmt: str = "immer", limits: Limits = LIMITS) -> tuple[Any, ErrorCode]:
    with pytest.raises(RejectedRequest) as info:
        parse_frame(text, fmt, limits)  # type: ignore[arg-type]
    assert isinstance(info.value.error, ServerError)
    return info.value.msg_id, info.value.error.code


# -- well-formed frames ---------------------------------------------------------------------------


def test_immer_frame() -> None:
    text = frame(type="patch", id="m1", base=3, patches=[
        {"op": "add", "path": ["a/b", 0], "value": {"x": None}},
        {"op": "replace", "path": ["k"]},
    ])
    assert parse_frame(text, "immer", LIMITS) == PatchRequest("m1", [
        Op("add", ("a/b", 0), {"x": None}, None, True),
        Op("replace", ("k",), MISSING, None, True),
    ], 3)


def test_json_patch_frame() -> None:
    text = frame(type="patch", id=7, patches=[
        {"op": "move", "from": "/a~1b/0", "path": "/c/-"},
        {"op": "test", "path": "/m~0n", "value": 1.5},
    ])
    assert parse_frame(text, "json-patch", LIMITS) == PatchRequest(7, [
        Op("move", ("c", "-"), MISSING, ("a/b", "0"), False),
        Op("test", ("m~n",), 1.5, None, False),
    ], None)


@pytest.mark.parametrize("base", [None, 0, 5])
def test_base_is_optional(base: int | None) -> None:
    assert parse_frame(frame(type="patch", id=1, base=base, patches=[]), "immer", LIMITS).base == (
        base
    )


@pytest.mark.parametrize("msg_id", ["", "x" * 128, 0, -1, 2**53 - 1, -(2**53 - 1)])
def test_valid_ids(msg_id: Any) -> None:
    assert parse_frame(frame(type="patch", id=msg_id, patches=[]), "immer", LIMITS).id == msg_id


def test_lesson_frame_is_a_bare_array() -> None:
    text = orjson.dumps([{"op": "replace", "path": ["gifts", 0, "reservedBy"], "value": 1}])
    assert parse_lesson_frame(text.decode(), LIMITS) == PatchRequest(
        None, [Op("replace", ("gifts", 0, "reservedBy"), 1, None, True)], None
    )


# -- frames that are not messages: answered with `error` ------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "{",
        "[1,]",
        "{'type': 'patch'}",
        '{"type":"patch","id":1,"patches":[]} trailing',
        '{"type":"patch","id":1,"patches":[{"op":"add","path":["a"],"value":NaN}]}',
        '{"type":"patch","id":1,"patches":[{"op":"add","path":["a"],"value":Infinity}]}',
        '{"type":"patch","id":1,"patches":[{"op":"add","path":["a"],"value":-Infinity}]}',
        '{"type":"patch","id":1,"base":1e400,"patches":[]}',
        '{"type":"patch","id":1,"patches":[]' + "]" * 3,
        "[" * 100_000 + "]" * 100_000,
        '{"type":"patch","id":1,"patches":[{"op":"add","path":[],"value":'
        + "[" * 5000 + "]" * 5000 + "}]}",
        "\ud800",  # a lone surrogate
        "null",
        "1",
        '"patch"',
        "[]",
        '[{"type":"patch","id":1,"patches":[]}]',  # clients send one message per frame
    ],
)
def test_invalid_frames(text: str) -> None:
    assert error_of(text) == ErrorCode.INVALID


@pytest.mark.parametrize(
    "message",
    [
        {"id": 1, "patches": []},  # no type
        {"type": "ack", "id": 1, "patches": []},
        {"type": "PATCH", "id": 1, "patches": []},
        {"type": ["patch"], "id": 1, "patches": []},
        {"type": None, "id": 1, "patches": []},
        {"type": "patch", "patches": []},  # no id
        {"type": "patch", "id": None, "patches": []},
        {"type": "patch", "id": True, "patches": []},
        {"type": "patch", "id": 1.5, "patches": []},
        {"type": "patch", "id": 1.0, "patches": []},
        {"type": "patch", "id": [1], "patches": []},
        {"type": "patch", "id": {"a": 1}, "patches": []},
        {"type": "patch", "id": "x" * 129, "patches": []},
        {"type": "patch", "id": 2**53, "patches": []},
        {"type": "patch", "id": -(2**53), "patches": []},
        {"type": "patch", "id": 2**64 - 1, "patches": []},
    ],
)
def test_messages_without_a_usable_id_are_errors(message: dict[str, Any]) -> None:
    assert error_of(orjson.dumps(message).decode()) == ErrorCode.INVALID


def test_huge_integer_ids_are_errors() -> None:
    assert error_of('{"type":"patch","id":123456789012345678901234567890,"patches":[]}') == (
        ErrorCode.INVALID
    )


# -- patch messages whose content is bad: answered with `reject` and the id ---------------------


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"base": -1, "patches": []}, ErrorCode.INVALID),
        ({"base": True, "patches": []}, ErrorCode.INVALID),
        ({"base": 1.5, "patches": []}, ErrorCode.INVALID),
        ({"base": 2.0, "patches": []}, ErrorCode.INVALID),
        ({"base": "3", "patches": []}, ErrorCode.INVALID),
        ({"base": [3], "patches": []}, ErrorCode.INVALID),
        ({}, ErrorCode.INVALID),  # no patches
        ({"patches": None}, ErrorCode.INVALID),
        ({"patches": {"op": "add"}}, ErrorCode.INVALID),
        ({"patches": "[]"}, ErrorCode.INVALID),
        ({"patches": [1]}, ErrorCode.INVALID),
        ({"patches": [{"op": "move", "path": ["a"], "from": ["b"]}]}, ErrorCode.INVALID),
        ({"patches": [{"op": [], "path": ["a"]}]}, ErrorCode.INVALID),
        ({"patches": [{"op": {}, "path": ["a"]}]}, ErrorCode.INVALID),
        ({"patches": [{"op": "add", "path": [True], "value": 1}]}, ErrorCode.INVALID),
        ({"patches": [{"op": "add", "path": [None], "value": 1}]}, ErrorCode.INVALID),
        ({"patches": [{"op": "add", "path": [{}], "value": 1}]}, ErrorCode.INVALID),
        ({"patches": [{"op": "add", "path": [1.5], "value": 1}]}, ErrorCode.INVALID),
        ({"patches": [{"op": "replace", "path": []}]}, ErrorCode.INVALID),
        ({"patches": [{"op": "add", "path": ["__proto__"], "value": 1}]}, ErrorCode.FORBIDDEN),
        ({"patches": [{"op": "add", "path": ["a"], "value": {"constructor": 1}}]},
         ErrorCode.FORBIDDEN),
        ({"patches": [{"op": "remove", "path": ["a"]}] * 10_001}, ErrorCode.TOO_LARGE),
        ({"patches": [{"op": "add", "path": ["a"] * 65, "value": 1}]}, ErrorCode.TOO_LARGE),
    ],
)
@pytest.mark.parametrize("msg_id", ["m-1", 42])
def test_bad_patch_messages_are_rejected_with_their_id(extra: dict[str, Any], code: str,
                                                        msg_id: Any) -> None:
    assert reject_of(frame(type="patch", id=msg_id, **extra)) == (msg_id, code)


def test_json_patch_format_rejects_immer_paths_and_vice_versa() -> None:
    immer_style = frame(type="patch", id=1, patches=[{"op": "remove", "path": ["a"]}])
    assert reject_of(immer_style, "json-patch") == (1, ErrorCode.INVALID)
    json_style = frame(type="patch", id=2, patches=[{"op": "remove", "path": "/a"}])
    assert reject_of(json_style, "immer") == (2, ErrorCode.INVALID)
    bad_escape = frame(type="patch", id=3, patches=[{"op": "remove", "path": "/a~2"}])
    assert reject_of(bad_escape, "json-patch") == (3, ErrorCode.INVALID)


def test_value_too_deep_for_where_it_lands_is_rejected() -> None:
    value: Any = 1
    for _ in range(64):
        value = [value]
    at_root = frame(type="patch", id=1, patches=[{"op": "replace", "path": [], "value": value}])
    assert parse_frame(at_root, "immer", LIMITS).ops[0].value == value
    deeper = frame(type="patch", id=1, patches=[{"op": "add", "path": ["a"], "value": value}])
    assert reject_of(deeper) == (1, ErrorCode.TOO_LARGE)


@pytest.mark.parametrize(
    "text",
    ["{}", '{"type":"patch"}', "[1]", "[{}]", '[{"op":"add","path":["__proto__"],"value":1}]', "x"],
)
def test_bad_lesson_frames_are_errors(text: str) -> None:
    with pytest.raises(ServerError) as info:
        parse_lesson_frame(text, LIMITS)
    assert info.value.code in (ErrorCode.INVALID, ErrorCode.FORBIDDEN)


# -- the fuzz property ----------------------------------------------------------------------------

# small limits, so that every limit is reachable by small random frames
FUZZ_LIMITS = Limits(max_ops=6, max_depth=6, max_string_bytes=12, max_key_bytes=8)
LITERAL = "\x00literal"  # replaced in the frame text by something JSON or orjson may refuse
LITERALS = (
    "NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-999", "-0", "-0.0", "1E2", "0.1",
    "123456789012345678901234567890", "18446744073709551616", "9007199254740993", "[]", "{}",
    '"__proto__"', "true", "null", '"\\ud800"', "01", "+1", ".5", "0x10",
)
POOL = ("a", "b", "c", "x", "0", "1", "", "-", "length", "a/b", "m~n", "~1", "__proto__",
        "constructor", "prototype", "toString", "é")

raw_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=14),
    st.sampled_from(POOL), st.just(LITERAL),
)
raw_json = st.recursive(
    raw_scalars,
    lambda c: st.one_of(
        st.lists(c, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(POOL), st.text(max_size=9)), c, max_size=3),
    ),
    max_leaves=10,
)
segments = st.one_of(
    st.sampled_from(POOL), st.integers(-2, 4), st.integers(2**53, 2**64 - 1), st.booleans(),
    st.none(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=9),
    st.lists(st.integers(), max_size=1), st.dictionaries(st.sampled_from(POOL), st.integers(),
                                                         max_size=1),
)
pointers = st.one_of(
    st.lists(st.sampled_from((*POOL, "01", "2", "~", "~2", "~0")), max_size=4).map(
        lambda parts: "".join("/" + p for p in parts)
    ),
    st.text(st.sampled_from("/~01a-"), max_size=6),
)
patches = st.fixed_dictionaries(
    {},
    optional={
        "op": st.one_of(
            st.sampled_from(["add", "remove", "replace", "move", "copy", "test"]), raw_json
        ),
        "path": st.one_of(st.lists(segments, max_size=4), pointers, raw_json),
        "from": st.one_of(pointers, st.lists(segments, max_size=3), raw_json),
        "value": raw_json,
    },
)
patch_lists = st.lists(st.one_of(patches, patches, raw_json), max_size=7)
ids = st.one_of(
    st.text(max_size=4), st.integers(-(2**53) - 2, 2**53 + 2), st.integers(-(2**63), 2**64 - 1),
    st.text(min_size=126, max_size=130), raw_json,
)
messages = st.one_of(
    st.fixed_dictionaries(  # shaped like a patch message, wrong in its details
        {"type": st.just("patch"), "id": ids, "patches": st.one_of(patch_lists, raw_json)},
        optional={"base": st.one_of(st.integers(-2, 4), st.integers(2**53, 2**64 - 1), raw_json)},
    ),
    st.fixed_dictionaries(
        {},
        optional={"type": st.one_of(st.just("patch"), raw_json), "id": ids,
                  "patches": st.one_of(patch_lists, raw_json), "base": raw_json,
                  "extra": raw_json},
    ),
    raw_json,
)


SAFE_POOL = tuple(k for k in POOL if k not in ("__proto__", "constructor", "prototype"))
# plausible messages: right shape, pool keys and indexes, so that many reach the document
plain_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(POOL),
              st.text(max_size=3)),
    lambda c: st.one_of(st.lists(c, max_size=2), st.dictionaries(st.sampled_from(SAFE_POOL), c,
                                                                 max_size=2)),
    max_leaves=4,
)
plain_paths = st.lists(
    st.one_of(st.sampled_from(SAFE_POOL), st.integers(0, 3)), min_size=1, max_size=4
)
immer_patches = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace"]), "path": plain_paths},
    optional={"value": plain_values},
)
json_patch_ops = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test"]),
     "path": plain_paths.map(lambda parts: "".join(f"/{p}" for p in parts)),
     "value": plain_values,
     "from": plain_paths.map(lambda parts: "".join(f"/{p}" for p in parts))},
)


@st.composite
def frames(draw: Any) -> tuple[str, Any]:
    """A frame and the format of the connection it arrives on."""
    fmt = draw(st.sampled_from(FORMATS))
    kind = draw(st.sampled_from(["plausible", "plausible", "message", "nested", "text"]))
    if kind == "text":
        junk = st.one_of(st.text(max_size=40), st.text(st.sampled_from('{}[]":,0-eE.tn')))
        return draw(junk), fmt
    if kind == "nested":
        n = draw(st.integers(1, 3000))
        return draw(st.sampled_from([
            "[" * n + "]" * n,
            '{"type":"patch","id":1,"patches":[{"op":"add","path":["a"],"value":'
            + "[" * n + "]" * n + "}]}",
            '{"type":"patch","id":1,"patches":' + '[{"op":"add","path":["a"],"value":{"a":' * n,
        ])), fmt
    if kind == "plausible":
        same = draw(st.integers(0, 4)) > 0
        ops = immer_patches if (fmt == "immer") == same else json_patch_ops
        message: Any = {"type": "patch", "id": draw(st.one_of(st.text(max_size=3),
                                                              st.integers(0, 9))),
                        "patches": draw(st.lists(ops, min_size=1, max_size=4))}
        if draw(st.booleans()):
            message["base"] = draw(st.integers(0, 3))
    else:
        message = draw(messages)
    text = orjson.dumps(message).decode()
    literal = orjson.dumps(LITERAL).decode()
    if literal in text:
        text = text.replace(literal, draw(st.sampled_from(LITERALS)))
    return text, fmt


def fuzz_document() -> Document:
    state = {
        "a": {"b": [1, {"c": 2}], "x": "s", "0": [[]]},
        "b": [0, 1, 2],
        "0": {"": 1, "-": [0]},
        "length": 3,
        "x": None,
        "-": [],
        "a/b": {"m~n": 1},
        "é": "text",
    }
    doc = Document(state, max_depth=FUZZ_LIMITS.max_depth, max_bytes=4096)
    doc.apply(parse_immer([{"op": "replace", "path": ["b", 0], "value": 5}], FUZZ_LIMITS))
    doc.apply(parse_immer([{"op": "add", "path": ["a", "new"], "value": [1]}], FUZZ_LIMITS))
    return doc


def usable_id(message: Any) -> bool:
    """Whether ``message`` is a patch message with a usable id (refusals then carry it)."""
    if not isinstance(message, dict) or message.get("type") != "patch":
        return False
    msg_id = message.get("id")
    if isinstance(msg_id, str):
        return len(msg_id) <= 128
    return type(msg_id) is int and -(2**53) < msg_id < 2**53


def depth(value: Any) -> int:
    """Nesting of containers: 0 for a scalar, 1 for a flat array or object."""
    return max((len(p) + 1 for p, v in walk_paths(value) if isinstance(v, dict | list)), default=0)


@PROPERTY
@given(case=frames(), lesson=st.booleans())
def test_any_frame_is_accepted_or_refused_with_a_code(case: tuple[str, Any], lesson: bool) -> None:
    """Property 5."""
    text, fmt = case
    try:
        message: Any = orjson.loads(text)
        decodes = True
    except orjson.JSONDecodeError:
        message, decodes = None, False
    try:
        if lesson:
            request = parse_lesson_frame(text, FUZZ_LIMITS)
        else:
            request = parse_frame(text, fmt, FUZZ_LIMITS)
    except RejectedRequest as exc:
        assert not lesson
        assert exc.error.code in CODES
        assert usable_id(message)
        assert exc.msg_id == message["id"] and type(exc.msg_id) is type(message["id"])
        return
    except ServerError as exc:
        assert exc.code in CODES
        assert exc.message
        # a patch message with a usable id is answered with a reject, never a bare error
        assert lesson or not usable_id(message)
        return
    assert decodes
    assert isinstance(request, PatchRequest)
    if lesson:
        assert request.id is None and request.base is None
    else:
        assert usable_id(message) and request.id == message["id"]
        assert request.base is None or (type(request.base) is int and request.base >= 0)
    # whatever parses applies to a document or is refused, leaving it as it was
    doc = fuzz_document()
    old, version = orjson.dumps(doc.state), doc.version
    try:
        applied = doc.apply(request.ops, request.base)
    except ServerError as exc:
        assert exc.code in CODES
        assert orjson.dumps(doc.state) == old
        assert doc.version == version
        return
    note(f"applied {applied.json_patch}")
    new = orjson.loads(orjson.dumps(doc.state))  # still serializable
    assert depth(new) <= FUZZ_LIMITS.max_depth
    assert doc.version == version + (0 if applied.empty else 1)
    assert canon(jp_apply(orjson.loads(old), applied.json_patch)) == canon(new)
    again = Document(orjson.loads(old))
    again.apply(parse_immer(deep(applied.immer), Limits()))
    assert canon(again.state) == canon(new)


def test_integers_beyond_64_bits_are_read_as_floats_as_json_parse_does() -> None:
    big = "1" + "0" * 25  # 10**25: no 64-bit integer holds it
    text = f'{{"type":"patch","id":1,"patches":[{{"op":"add","path":["n"],"value":{big}}}]}}'
    request = parse_frame(text, "immer", LIMITS)
    value = request.ops[0].value
    assert isinstance(value, float) and value == 1e25  # what JSON.parse gives a browser
    doc = Document({})
    doc.apply(request.ops)
    assert orjson.dumps(doc.state) == b'{"n":1e+25}'  # JSON.stringify writes 1e+25 too
    # within 64 bits an integer is kept exact
    exact = parse_frame(text.replace(big, str(2**64 - 1)), "immer", LIMITS).ops[0].value
    assert exact == 2**64 - 1 and isinstance(exact, int)
