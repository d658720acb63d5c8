"""GET/PATCH /state with ETags, the patches endpoint and health, against a real server."""

from __future__ import annotations

import httpx
import pytest

from .clients import WsClient
from .conftest import ServerFactory, ServerProcess


@pytest.fixture
def server(any_store: str, server_factory: ServerFactory) -> ServerProcess:
    """This module's tests are store-independent: they run against memory, SQLite and Redis."""
    return server_factory(store=any_store)

JP = {"content-type": "application/json-patch+json"}


def test_get_state_etag_and_if_none_match(server: ServerProcess) -> None:
    r = httpx.get(f"{server.url}/state")
    assert r.status_code == 200 and r.json() == {} and r.headers["etag"] == '"0"'
    assert r.headers["content-type"] == "application/json"
    assert httpx.get(f"{server.url}/state", headers={"if-none-match": '"0"'}).status_code == 304
    assert httpx.get(f"{server.url}/state",
                     headers={"if-none-match": 'W/"0", "5"'}).status_code == 304
    httpx.patch(f"{server.url}/state", json=[{"op": "add", "path": ["a"], "value": 1}])
    r = httpx.get(f"{server.url}/state", headers={"if-none-match": '"0"'})
    assert r.status_code == 200 and r.json() == {"a": 1} and r.headers["etag"] == '"1"'


def test_patch_both_media_types_and_if_match(server: ServerProcess) -> None:
    url = f"{server.url}/docs/h/state"
    r = httpx.patch(url, json=[{"op": "add", "path": ["list"], "value": []}])
    assert r.status_code == 200 and r.json() == {"version": 1} and r.headers["etag"] == '"1"'
    r = httpx.patch(url, content=b'[{"op":"add","path":"/list/-","value":"x"}]', headers=JP)
    assert r.status_code == 200 and r.json() == {"version": 2}
    r = httpx.patch(url, json=[{"op": "add", "path": ["n"], "value": 0}],
                    headers={"if-match": '"1"'})
    assert r.status_code == 412 and r.json()["error"]["code"] == "precondition_failed"
    r = httpx.patch(url, json=[{"op": "add", "path": ["n"], "value": 0}],
                    headers={"if-match": '"2"'})
    assert r.status_code == 200 and r.headers["etag"] == '"3"'
    assert httpx.get(url).json() == {"list": ["x"], "n": 0}
    # another document is untouched
    assert httpx.get(f"{server.url}/state").json() == {}


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"not json", {"content-type": "application/json"}, 400, "invalid"),
        (b'{"op":"add"}', {"content-type": "application/json"}, 400, "invalid"),
        (b'[{"op":"remove","path":["x",3]}]', {"content-type": "application/json"}, 409,
         "conflict"),
        (b'[{"op":"test","path":"/a","value":2}]', JP, 409, "conflict"),
        (b'[{"op":"add","path":"/__proto__","value":{}}]', JP, 403, "forbidden"),
        (b'[{"op":"add","path":["a"],"value":{"prototype":1}}]',
         {"content-type": "application/json"}, 403, "forbidden"),
        (b"[]", {"content-type": "text/plain"}, 415, "unsupported_media_type"),
        (b"[]", {}, 415, "unsupported_media_type"),
    ],
)
def test_patch_errors_change_nothing(
    server: ServerProcess, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    url = f"{server.url}/docs/e/state"
    httpx.patch(url, json=[{"op": "add", "path": ["a"], "value": 1}])
    r = httpx.patch(url, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
    r = httpx.get(url)
    assert r.json() == {"a": 1} and r.headers["etag"] == '"1"'


def test_patch_over_the_size_limit_is_413(server_factory: ServerFactory) -> None:
    server = server_factory("--max-frame-bytes", "1000")
    big = [{"op": "add", "path": ["big"], "value": "x" * 2000}]
    r = httpx.patch(f"{server.url}/state", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert httpx.get(f"{server.url}/state").json() == {}


def test_patch_is_broadcast_to_websocket_clients(server: ServerProcess) -> None:
    with WsClient(server.ws_url("/ws")) as c, WsClient(server.ws_url("/ws?format=json-patch")) as j:
        for client in (c, j):
            client.expect("snapshot")
            client.expect("synced")
        httpx.patch(f"{server.url}/state", json=[{"op": "add", "path": ["k"], "value": [1]}])
        assert c.expect("patch") == {"type": "patch", "version": 1,
                                     "patches": [{"op": "add", "path": ["k"], "value": [1]}]}
        assert j.expect("patch")["patches"] == [{"op": "add", "path": "/k", "value": [1]}]


def test_bad_document_id_is_400(server: ServerProcess) -> None:
    r = httpx.get(f"{server.url}/docs/{'x' * 129}/state")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid"


def test_patches_since_and_state_at_version(server: ServerProcess) -> None:
    url = f"{server.url}/docs/p"
    states = [httpx.get(f"{url}/state").json()]
    for i in range(5):
        httpx.patch(f"{url}/state", json=[{"op": "add", "path": [f"k{i}"], "value": i}])
        states.append(httpx.get(f"{url}/state").json())
    r = httpx.get(f"{url}/patches", params={"since": 2, "format": "json-patch"})
    assert r.status_code == 200
    assert r.json() == {"from": 2, "version": 5, "patches": [
        {"op": "add", "path": "/k2", "value": 2}, {"op": "add", "path": "/k3", "value": 3},
        {"op": "add", "path": "/k4", "value": 4}]}
    r = httpx.get(f"{url}/patches", params={"since": 4})  # default format: immer
    assert r.json()["patches"] == [{"op": "add", "path": ["k4"], "value": 4}]
    assert httpx.get(f"{url}/patches", params={"since": 5}).json()["patches"] == []
    assert httpx.get(f"{url}/patches", params={"since": 6}).status_code == 404
    assert httpx.get(f"{url}/patches").status_code == 400
    for v, expected in enumerate(states):
        r = httpx.get(f"{url}/state", params={"version": v})
        assert r.status_code == 200 and r.json() == expected and r.headers["etag"] == f'"{v}"'
    assert httpx.get(f"{url}/state", params={"version": 9}).status_code == 404


def test_health(server: ServerProcess) -> None:
    r = httpx.get(f"{server.url}/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["store"] == "ok" and body["epoch"]


def test_get_root_serves_a_page(server: ServerProcess) -> None:
    r = httpx.get(server.url + "/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
