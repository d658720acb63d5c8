"""Who may connect and what they may do, against a real server: the WebSocket origin policy
(``--allow-origin``), bearer tokens and their roles (``--auth``, JSON and TOML), and JSON Schema
validation of every batch's result (``--schema``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from .clients import WsClient, closed_with, joined
from .conftest import ServerFactory, ServerProcess

ADD_A = [{"op": "add", "path": ["a"], "value": 1}]


def refused_status(server: ServerProcess, path: str, **kwargs: Any) -> int:
    """The HTTP status of an upgrade the server refuses before accepting it."""
    with pytest.raises(InvalidStatus) as info, connect(server.ws_url(path), open_timeout=10,
                                                       **kwargs):
        pass
    return info.value.response.status_code


# -- origin ------------------------------------------------------------------------------------


def test_foreign_origin_is_refused_before_the_upgrade(server: ServerProcess) -> None:
    for origin in ("http://evil.example", "null", f"http://evil.example:{server.port}",
                   f"https://127.0.0.1:{server.port}.evil.example"):
        status = refused_status(server, "/ws/o", origin=origin)
        assert status == 403, origin
    # lesson mode is guarded the same way
    assert refused_status(server, "/", origin="http://evil.example") == 403
    # nothing was created or changed by the refused upgrades
    assert httpx.get(f"{server.url}/docs/o/state").json() == {}
    assert "refused upgrade" in server.log()


def test_own_origin_and_no_origin_are_allowed(server: ServerProcess) -> None:
    with joined(server, "/ws/o", origin=f"http://127.0.0.1:{server.port}") as own:
        own.patch(1, ADD_A)
        assert own.expect("ack")["version"] == 1
    with joined(server, "/ws/o") as plain:  # non-browser clients send no Origin
        assert plain.state == {"a": 1}


def test_allow_origin_admits_exactly_the_listed_origin(server_factory: ServerFactory) -> None:
    server = server_factory("--allow-origin", "https://app.example")
    with joined(server, "/ws/o", origin="https://app.example") as c:
        c.patch(1, ADD_A)
        assert c.expect("ack")["version"] == 1
    for origin in ("http://app.example", "https://app.example.evil", "https://evil.example",
                   "https://sub.app.example"):
        assert refused_status(server, "/ws/o", origin=origin) == 403, origin
    # the server's own origin stays allowed besides the listed one
    with joined(server, "/ws/o", origin=f"http://127.0.0.1:{server.port}") as own:
        assert own.state == {"a": 1}


# -- tokens ------------------------------------------------------------------------------------

WRITER, READER, OTHER = "w-7f3a9c", "r-51be02", "o-c0ffee"
GRANTS = {
    WRITER: {"docs": "gift*", "role": "write"},
    READER: {"docs": ["gift*", "public"], "role": "read"},
    OTHER: {"docs": "private-*", "role": "write"},
}


def auth_file(tmp_path: Path, kind: str) -> Path:
    if kind == "json":
        path = tmp_path / "tokens.json"
        path.write_text(json.dumps(GRANTS))
        return path
    path = tmp_path / "tokens.toml"
    lines = []
    for token, grant in GRANTS.items():
        lines.append(f'["{token}"]')
        lines.append(f"docs = {json.dumps(grant['docs'])}")
        lines.append(f'role = "{grant["role"]}"')
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def authed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with a JSON token file for this module (each test uses its own documents)."""
    tmp = tmp_path_factory.mktemp("auth")
    server = ServerProcess(["--store", "memory://", "--auth", str(auth_file(tmp, "json"))],
                           tmp / "server.log")
    server.start()
    yield server
    server.stop()


def test_toml_token_file(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = server_factory("--auth", str(auth_file(tmp_path, "toml")))
    check_roles(server, "gift-toml")
    with WsClient(server.ws_url(f"/ws/private-1?token={READER}")) as c:
        assert c.expect("error")["error"]["code"] == "forbidden"
        assert closed_with(c) == 1008


def test_write_token_patches_and_read_token_only_reads(authed: ServerProcess) -> None:
    check_roles(authed, "gift-1")


def check_roles(server: ServerProcess, doc: str) -> None:
    with joined(server, f"/ws/{doc}?token={WRITER}") as writer, \
            joined(server, f"/ws/{doc}?token={READER}") as reader:
        writer.patch("w1", ADD_A)
        assert writer.expect("ack")["version"] == 1
        assert reader.expect("patch")["patches"] == ADD_A  # a reader receives patches
        reader.patch("r1", [{"op": "add", "path": ["b"], "value": 2}])
        rej = reader.expect("reject")
        assert rej["id"] == "r1" and rej["error"]["code"] == "forbidden", rej
        assert rej["version"] == 1
        writer.patch("w2", [{"op": "add", "path": ["c"], "value": 3}])
        assert writer.expect("ack")["version"] == 2
        assert reader.expect("patch")["version"] == 2  # still subscribed after the reject
    with joined(server, f"/ws/{doc}?token={READER}") as late:  # a reader gets the snapshot
        assert late.state == {"a": 1, "c": 3} and late.version == 2
    assert httpx.get(f"{server.url}/docs/{doc}/state",
                     headers={"authorization": f"Bearer {READER}"}).json() == {"a": 1, "c": 3}


@pytest.mark.parametrize(
    ("query", "code"),
    [
        (f"?token={OTHER}", "forbidden"),  # a valid token for other documents
        (f"?token={WRITER}x", "unauthorized"),  # unknown
        ("?token=", "unauthorized"),  # empty
        ("", "unauthorized"),  # missing
    ],
)
def test_websocket_without_a_grant_gets_an_error_then_1008(
    authed: ServerProcess, query: str, code: str
) -> None:
    with WsClient(authed.ws_url(f"/ws/gift-5{query}")) as c:
        msg = c.recv()
        assert msg["type"] == "error" and msg["error"]["code"] == code, msg
        assert closed_with(c) == 1008
        assert c.state is None  # no snapshot was sent
    # the reader token reaches "public" but a writer token for gift* does not
    with WsClient(authed.ws_url(f"/ws/public?token={WRITER}")) as c:
        assert c.expect("error")["error"]["code"] == "forbidden"
        assert closed_with(c) == 1008


def test_token_in_a_bearer_subprotocol(authed: ServerProcess) -> None:
    with joined(authed, "/ws/gift-2", subprotocols=[f"bearer.{WRITER}"]) as c:
        assert c.ws.subprotocol == f"bearer.{WRITER}"  # echoed, as browsers require
        c.patch(1, ADD_A)
        assert c.expect("ack")["version"] == 1
    with joined(authed, "/ws/gift-2", subprotocols=[f"bearer.{READER}"]) as r:
        r.patch(1, ADD_A)
        assert r.expect("reject")["error"]["code"] == "forbidden"
    with WsClient(authed.ws_url("/ws/gift-2"), subprotocols=["bearer.nope"]) as bad:
        assert bad.expect("error")["error"]["code"] == "unauthorized"
        assert closed_with(bad) == 1008


def test_http_bearer_tokens(authed: ServerProcess) -> None:
    url = f"{authed.url}/docs/gift-3/state"

    def bearer(token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}

    r = httpx.patch(url, json=ADD_A, headers=bearer(WRITER))
    assert r.status_code == 200 and r.json() == {"version": 1}
    r = httpx.patch(url, json=[{"op": "add", "path": ["b"], "value": 2}], headers=bearer(READER))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert httpx.get(url, headers=bearer(READER)).json() == {"a": 1}
    r = httpx.get(f"{authed.url}/docs/gift-3/patches?since=0", headers=bearer(READER))
    assert r.status_code == 200 and r.json()["version"] == 1
    for headers in ({}, bearer("nope"), {"authorization": WRITER},
                    {"authorization": f"Basic {WRITER}"}):
        for method in ("GET", "PATCH"):
            r = httpx.request(method, url, json=ADD_A, headers=headers)
            assert r.status_code == 401, (method, headers, r.text)
            assert r.json()["error"]["code"] == "unauthorized"
    r = httpx.get(f"{authed.url}/docs/private-x/state", headers=bearer(WRITER))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = httpx.patch(f"{authed.url}/docs/private-x/state", json=ADD_A, headers=bearer(READER))
    assert r.status_code == 403
    assert httpx.get(url, headers=bearer(WRITER)).json() == {"a": 1}  # nothing else applied


def test_tokens_do_not_reach_the_logs(authed: ServerProcess) -> None:
    """A token in the query string (the only way a browser can send one besides the
    subprotocol) must not be written to the server's log, nor the subprotocol's."""
    with joined(authed, f"/ws/gift-4?token={WRITER}&client=c1") as c:
        c.patch(1, ADD_A)
        c.expect("ack")
    with joined(authed, "/ws/gift-4", subprotocols=[f"bearer.{READER}"]):
        pass
    with WsClient(authed.ws_url(f"/ws/gift-4?token={OTHER}")) as c:
        c.expect("error")
    httpx.get(f"{authed.url}/docs/gift-4/state", headers={"authorization": f"Bearer {READER}"})
    log = authed.log()
    assert "doc=gift-4" in log  # the connections were logged...
    for token in (WRITER, READER, OTHER):
        assert token not in log, f"token {token} written to the log"  # ...not their secrets


def test_a_malformed_auth_file_stops_the_server(server_factory: ServerFactory,
                                                tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"t": {"docs": "*", "role": "admin"}}))
    proc = server_factory("--auth", str(bad), start=False)
    with pytest.raises(RuntimeError, match="exited"):
        proc.start(timeout=20)
    assert "role must be read or write" in proc.log()


# -- schema ------------------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {
        "gifts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string", "maxLength": 10}},
            },
        },
    },
}


@pytest.fixture
def schema_server(server_factory: ServerFactory, tmp_path: Path) -> ServerProcess:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    return server_factory("--schema", f"gift*={path}")


def test_schema_violations_are_rejected_and_change_nothing(schema_server: ServerProcess) -> None:
    server = schema_server
    with joined(server, "/ws/gifts") as c, joined(server, "/ws/gifts") as other:
        c.patch("ok", [{"op": "add", "path": ["gifts"], "value": [{"name": "bike"}]}])
        assert c.expect("ack")["version"] == 1
        assert other.expect("patch")["version"] == 1
        cases = [
            ("too long", [{"op": "replace", "path": ["gifts", 0, "name"], "value": "x" * 11}],
             "/gifts/0/name"),
            ("wrong type", [{"op": "add", "path": ["gifts", 1], "value": {"name": 5}}],
             "/gifts/1/name"),
            ("required", [{"op": "add", "path": ["gifts", 1], "value": {"price": 5}}],
             "/gifts/1"),
            ("not an array", [{"op": "replace", "path": ["gifts"], "value": {}}], "/gifts"),
            # valid on its own, but the second operation breaks it: the whole batch goes
            ("batch", [{"op": "add", "path": ["gifts", 1], "value": {"name": "kite"}},
                       {"op": "remove", "path": ["gifts", 1, "name"]}], "/gifts/1"),
        ]
        for name, patches, path in cases:
            c.patch(name, patches)
            rej = c.expect("reject")
            assert rej["id"] == name and rej["version"] == 1, rej
            error = rej["error"]
            assert error["code"] == "invalid", rej
            assert error["path"] == path, (name, error)
            assert path in error["message"], (name, error)
        c.patch("after", [{"op": "add", "path": ["gifts", 1], "value": {"name": "kite"}}])
        assert c.expect("ack")["version"] == 2
        assert other.expect("patch")["version"] == 2  # nothing rejected was broadcast
    state = httpx.get(f"{server.url}/docs/gifts/state").json()
    assert state == {"gifts": [{"name": "bike"}, {"name": "kite"}]}
    # HTTP writes are validated the same way
    r = httpx.patch(f"{server.url}/docs/gifts/state",
                    json=[{"op": "replace", "path": ["gifts", 0, "name"], "value": 1}])
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid"
    assert r.json()["error"]["path"] == "/gifts/0/name"
    assert httpx.get(f"{server.url}/docs/gifts/state").json() == state


def test_schema_applies_only_to_matching_documents(schema_server: ServerProcess) -> None:
    with joined(schema_server, "/ws/notes") as c:
        c.patch(1, [{"op": "add", "path": ["gifts"], "value": "anything goes"}])
        assert c.expect("ack")["version"] == 1
    r = httpx.patch(f"{schema_server.url}/docs/gif/state", json=[
        {"op": "add", "path": ["gifts"], "value": 5}])
    assert r.status_code == 200
