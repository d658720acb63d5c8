"""The sans-IO presence core: message checks, the table, ticks, the listing limit, expiry."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.config import Limits
from server.errors import ErrorCode, ServerError
from server.presence import MAX_STATE_BYTES, Entry, PresenceTable, PresenceUpdate, parse_presence
from server.protocol import parse_frame

from .strategies import json_values


def entry(conn: str, state: Any = None, *, local: bool = True, node: str = "n1",
          expires: float = float("inf"), user: str | None = None) -> Entry:
    return Entry(conn, user, json.dumps({} if state is None else state), None, local, node,
                 expires)


def decoded(frame: str | None) -> Any:
    assert frame is not None
    return json.loads(frame)


def test_parse_presence() -> None:
    assert parse_presence({"type": "presence", "state": {"x": 1}}) == PresenceUpdate('{"x":1}')
    assert parse_presence({"type": "presence", "state": None}) == PresenceUpdate(None)
    assert parse_presence({"type": "presence", "state": {}, "version": 3}).version == 3
    big = {"s": "x" * MAX_STATE_BYTES}
    cases: list[tuple[dict[str, Any], ErrorCode]] = [
        ({"type": "presence"}, ErrorCode.INVALID),
        ({"type": "presence", "state": [1]}, ErrorCode.INVALID),
        ({"type": "presence", "state": "here"}, ErrorCode.INVALID),
        ({"type": "presence", "state": {}, "version": -1}, ErrorCode.INVALID),
        ({"type": "presence", "state": {}, "version": True}, ErrorCode.INVALID),
        ({"type": "presence", "state": big}, ErrorCode.TOO_LARGE),
        ({"type": "presence", "state": {"a": [{"__proto__": 1}]}}, ErrorCode.FORBIDDEN),
    ]
    for message, code in cases:
        with pytest.raises(ServerError) as info:
            parse_presence(message)
        assert info.value.code is code, message
    # exactly at the limit is accepted
    fits = {"s": "x" * (MAX_STATE_BYTES - len('{"s":""}'))}
    assert parse_presence({"type": "presence", "state": fits}).state_json is not None


def test_full_list_and_deltas_without_echo() -> None:
    table = PresenceTable()
    table.put(entry("a", {"cursor": 1}, user="ann"))
    table.put(entry("b"))
    table.tick()
    assert decoded(table.full("b")) == {
        "type": "presence", "self": "b",
        "peers": [{"conn": "a", "user": "ann", "state": {"cursor": 1}}],
    }
    for x in range(10):  # ten updates in one tick: only the latest goes out
        table.put(entry("a", {"cursor": x}, user="ann"))
    tick = table.tick()
    assert tick.broadcast == 1
    assert decoded(tick.frame_for("b")) == {
        "type": "presence", "peers": [{"conn": "a", "user": "ann", "state": {"cursor": 9}}]}
    assert tick.frame_for("a") is None  # the sender is not echoed
    assert table.tick().items == {}  # nothing changed since
    table.remove("a")
    assert decoded(table.tick().frame_for("b"))["peers"] == [
        {"conn": "a", "user": "ann", "state": None}]


def test_version_is_passed_on() -> None:
    table = PresenceTable()
    table.put(Entry("a", None, '{"path":["gifts",2]}', 7))
    assert decoded(table.full("z"))["peers"] == [
        {"conn": "a", "user": None, "state": {"path": ["gifts", 2]}, "version": 7}]


def test_at_most_limit_listed_then_a_count() -> None:
    table = PresenceTable(limit=3)
    for c in "abcde":
        table.put(entry(c))
    table.tick()
    full = decoded(table.full("e"))
    assert [p["conn"] for p in full["peers"]] == ["a", "b", "c"] and full["count"] == 5
    table.put(entry("d", {"x": 1}))  # unlisted: not broadcast
    assert table.tick().items == {}
    table.remove("b")  # the oldest unlisted one takes its place
    delta = decoded(table.tick().frame_for("e"))
    assert delta["peers"] == [{"conn": "b", "user": None, "state": None},
                              {"conn": "d", "user": None, "state": {"x": 1}}]
    assert delta["count"] == 4
    table.remove("e")  # back to the limit: the count goes out once more, then no more
    assert decoded(table.tick().shared) == {"type": "presence", "peers": [], "count": 3}
    table.remove("a")
    assert "count" not in decoded(table.tick().shared)


def test_remote_entries_expire_and_heartbeats_refresh_them() -> None:
    table = PresenceTable()
    table.put(entry("mine"))
    table.put(entry("r1", local=False, node="n2", expires=10))
    table.put(entry("r2", local=False, node="n2", expires=10))
    tick = table.tick()
    assert [e.conn for e in tick.relay if isinstance(e, Entry)] == ["mine"]  # only local relayed
    assert table.refresh("n2", {"r1"}, expires=20) == ["r2"]  # a heartbeat without r2: gone
    assert table.expire(15) == []
    assert table.expire(25) == ["r1"]
    assert list(table.entries) == ["mine"]
    assert decoded(table.tick().frame_for("mine"))["peers"] == [
        {"conn": "r2", "user": None, "state": None}, {"conn": "r1", "user": None, "state": None}]


@given(state=st.one_of(json_values, st.dictionaries(st.text(max_size=8), json_values)),
       version=st.one_of(st.none(), st.integers(-2, 2**63 - 1), st.booleans(), st.text(max_size=2)))
def test_any_presence_frame_is_accepted_or_refused_with_a_code(state: Any, version: Any) -> None:
    message: dict[str, Any] = {"type": "presence", "state": state}
    if version is not None:
        message["version"] = version
    try:
        update = parse_frame(orjson.dumps(message).decode(), "immer", Limits())
    except ServerError as exc:
        assert exc.code in (ErrorCode.INVALID, ErrorCode.TOO_LARGE, ErrorCode.FORBIDDEN)
        return
    assert isinstance(update, PresenceUpdate)
    if update.state_json is None:
        assert state is None
    else:
        assert orjson.loads(update.state_json) == state
        assert len(update.state_json.encode()) <= MAX_STATE_BYTES


def test_a_newcomer_gets_no_delta_of_what_its_full_list_held() -> None:
    table = PresenceTable()
    table.put(entry("a", {"x": 1}))
    table.put(entry("b"))  # b joins in the same tick and takes its full list
    assert decoded(table.full("b"))["peers"][0]["state"] == {"x": 1}
    seen = table.seq
    tick = table.tick()
    assert tick.frame_for("b", seen) is None  # nothing it does not have
    assert decoded(tick.frame_for("z"))["peers"] == [  # an older member gets both
        {"conn": "a", "user": None, "state": {"x": 1}}, {"conn": "b", "user": None, "state": {}}]
    table.put(entry("c"))
    seen = table.seq
    table.put(entry("a", {"x": 2}))  # after c's full list: c gets it
    assert decoded(table.tick().frame_for("c", seen))["peers"] == [
        {"conn": "a", "user": None, "state": {"x": 2}}]
