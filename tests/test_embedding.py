"""The server inside another app: the FastAPI example (``examples/fastapi_app.py``) run by a real
uvicorn process under a ``root_path`` and driven by real WebSocket and HTTP clients; a plain
Starlette host; and the clear error when the host never ran the server's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from websockets.exceptions import ConnectionClosed

from server import Settings, create_app, running
from server.app import Entry

from .clients import WsClient, closed_with
from .conftest import ROOT, AppServer, free_port
from .oracle.nodejs import node_executable

ServeApp = Callable[..., AppServer]
SECRET = "example-secret-for-the-tests-0123456789-abcdefghijklmnop"


class Example:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}"

    def session(self, user: str) -> str:
        r = httpx.post(f"{self.url}/login", json={"user": user, "password": f"{user}-password"})
        assert r.status_code == 200, r.text
        session: str = r.json()["session"]
        return session

    def token(self, session: str, doc: str = "gifts") -> str:
        r = httpx.get(f"{self.url}/token", params={"doc": doc},
                      headers={"authorization": f"Bearer {session}"})
        assert r.status_code == 200, r.text
        token: str = r.json()["token"]
        return token

    def connect(self, token: str, doc: str = "gifts", query: str = "") -> WsClient:
        client = WsClient(f"{self.ws}/collab/ws/{doc}{query}", subprotocols=[f"bearer.{token}"])
        client.expect("snapshot")
        client.until(lambda m: m["type"] == "synced")
        return client


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    """``uvicorn examples.fastapi_app:app``, as the module's docstring says, behind a proxy
    that serves it under /api (``--root-path``)."""
    tmp = tmp_path_factory.mktemp("example")
    port = free_port()
    env = {**os.environ, "GIFTS_JWT_SECRET": SECRET, "GIFTS_TOKEN_SECONDS": "3",
           "GIFTS_TOKEN_LEEWAY": "0",
           "GIFTS_STORE": f"sqlite:///{tmp}/gifts.db", "PYTHONUNBUFFERED": "1"}
    log = (tmp / "uvicorn.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1",
         "--port", str(port), "--root-path", "/api", "--ws-per-message-deflate", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=log)
    log.close()
    url = f"http://127.0.0.1:{port}/collab/health"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, (tmp / "uvicorn.log").read_text()
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (tmp / "uvicorn.log").read_text()
        time.sleep(0.05)  # polling a process start-up
    yield Example(port)
    proc.terminate()
    proc.wait(timeout=15)


GIFTS = [{"id": "g1", "description": "Kite"}, {"id": "g2", "description": "Book"}]


def test_sign_in_and_tokens(example: Example) -> None:
    assert httpx.post(f"{example.url}/login",
                      json={"user": "ann", "password": "nope"}).status_code == 401
    assert httpx.get(f"{example.url}/token?doc=gifts").status_code == 401
    token = example.token(example.session("ann"), "gifts-a")
    # the token reaches its document only
    with WsClient(f"{example.ws}/collab/ws/gifts-b", subprotocols=[f"bearer.{token}"]) as c:
        assert c.expect("error")["error"]["code"] == "forbidden"
        assert closed_with(c) == 1008
    with WsClient(f"{example.ws}/collab/ws/gifts-a") as c:
        assert c.expect("error")["error"]["code"] == "unauthorized"
    r = httpx.get(f"{example.url}/collab/docs/gifts-a/state",
                  headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json() == {"gifts": []}


def test_only_the_reserver_may_unreserve(example: Example) -> None:
    ann_session, bob_session = example.session("ann"), example.session("bob")
    with example.connect(example.token(ann_session)) as ann, \
            example.connect(example.token(bob_session)) as bob:
        ann.patch("add", [{"op": "replace", "path": ["gifts"], "value": GIFTS}])
        assert ann.expect("ack")["version"] == 1
        ann.patch("reserve", [{"op": "add", "path": ["gifts", 0, "reservedBy"], "value": "ann"}])
        assert ann.expect("ack")["version"] == 2
        assert bob.until(lambda m: m["type"] == "patch" and m["version"] == 2)
        attempts = {
            "unreserve": [{"op": "remove", "path": ["gifts", 0, "reservedBy"]}],
            "steal": [{"op": "replace", "path": ["gifts", 0, "reservedBy"], "value": "bob"}],
            "delete": [{"op": "remove", "path": ["gifts", 0]}],
            "replace all": [{"op": "replace", "path": ["gifts"], "value": []}],
            "for ann": [{"op": "add", "path": ["gifts", 1, "reservedBy"], "value": "ann"}],
        }
        for name, patches in attempts.items():
            bob.patch(name, patches)
            rej = bob.expect("reject")
            assert rej["id"] == name and rej["version"] == 2, rej
            assert rej["error"]["code"] == "forbidden", rej
        bob.patch("mine", [{"op": "add", "path": ["gifts", 1, "reservedBy"], "value": "bob"}])
        assert bob.expect("ack")["version"] == 3
        # ann was told nothing of bob's rejected attempts: her next message is version 3
        assert ann.expect("patch")["version"] == 3
        ann.patch("free", [{"op": "remove", "path": ["gifts", 0, "reservedBy"]}])
        assert ann.expect("ack")["version"] == 4
        assert bob.expect("patch")["version"] == 4
        assert ann.state == bob.state == {"gifts": [
            {"id": "g1", "description": "Kite"},
            {"id": "g2", "description": "Book", "reservedBy": "bob"}]}
    # over HTTP, with the same rule
    headers = {"authorization": f"Bearer {example.token(ann_session)}"}
    r = httpx.patch(f"{example.url}/collab/docs/gifts/state", headers=headers,
                    json=[{"op": "remove", "path": ["gifts", 1, "reservedBy"]}])
    assert r.status_code == 403 and r.json()["error"]["path"] == "/gifts/1/reservedBy"
    r = httpx.get(f"{example.url}/collab/docs/gifts/state", headers=headers)
    assert r.json()["gifts"][1]["reservedBy"] == "bob"


def test_an_expired_token_is_replaced_by_a_fresh_one(example: Example) -> None:
    """GIFTS_TOKEN_SECONDS=3, GIFTS_TOKEN_LEEWAY=0: the connection ends with its token and a
    batch sent then is not applied; a fresh token from /token resumes it, the batch applied
    once."""
    session = example.session("ann")
    token = example.token(session, "gifts-exp")
    client = example.connect(token, "gifts-exp", "?client=ann-tab")
    epoch = client.seen[0]["epoch"]
    client.patch(1, [{"op": "add", "path": ["gifts", 0], "value": GIFTS[0]}])
    assert client.expect("ack")["version"] == 1
    time.sleep(3.2)  # waiting for the clock, not for a message: the token's lifetime
    with contextlib.suppress(ConnectionClosed):  # the server may have closed it already
        client.patch(2, [{"op": "add", "path": ["gifts", 1], "value": GIFTS[1]}])
    with pytest.raises(ConnectionClosed) as info:
        client.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    client.close()
    fresh = example.token(session, "gifts-exp")
    again = WsClient(f"{example.ws}/collab/ws/gifts-exp?client=ann-tab&since=1&epoch={epoch}",
                     subprotocols=[f"bearer.{fresh}"])
    with again:
        assert again.expect("synced")["version"] == 1  # resumed: no snapshot
        again.patch(1, [{"op": "add", "path": ["gifts", 0], "value": GIFTS[0]}])
        assert again.expect("ack")["version"] == 1  # a resend is not applied twice
        again.patch(2, [{"op": "add", "path": ["gifts", 1], "value": GIFTS[1]}])
        assert again.expect("ack")["version"] == 2
    r = httpx.get(f"{example.url}/collab/docs/gifts-exp/state",
                  headers={"authorization": f"Bearer {fresh}"})
    assert r.json() == {"gifts": GIFTS}


@pytest.mark.node
def test_the_browser_client_gets_its_tokens_from_the_example(example: Example) -> None:
    """client_demo/test/e2e/getToken.e2e.ts: the real SyncClient (vitest, Node) with getToken
    fetching from /token, through a token expiry and the resume."""
    node_executable()  # fails with what to install when Node or the npm packages are missing
    env = {**os.environ, "EXAMPLE_URL": example.url, "EXAMPLE_DOC": "gifts-client",
           "EXAMPLE_TOKEN_SECONDS": "3"}
    result = subprocess.run(
        ["npx", "vitest", "run", "--config", "vitest.e2e.config.ts"], cwd=ROOT / "client_demo",
        env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 passed" in result.stdout


# -- a plain Starlette host --------------------------------------------------------------------


def host_app(collab: Starlette, enter_lifespan: bool) -> Starlette:
    async def home(request: Request) -> JSONResponse:
        return JSONResponse({"host": True})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if enter_lifespan:
            async with running(collab):
                yield
        else:
            yield

    return Starlette(routes=[Route("/", home), Mount("/collab", collab)], lifespan=lifespan)


def test_mounted_in_starlette_under_a_root_path(serve_app: ServeApp, tmp_path: Path) -> None:
    collab = create_app(Settings(store_url=f"sqlite:///{tmp_path}/d.db", demo_dir=None))
    server = serve_app(host_app(collab, enter_lifespan=True), root_path="/api")
    assert httpx.get(f"{server.url}/").json() == {"host": True}
    with WsClient(server.ws_url("/collab/ws/doc")) as c:
        c.expect("snapshot")
        c.until(lambda m: m["type"] == "synced")
        c.patch(1, [{"op": "add", "path": ["a"], "value": 1}])
        assert c.expect("ack")["version"] == 1
    assert httpx.get(f"{server.url}/collab/docs/doc/state").json() == {"a": 1}
    assert httpx.get(f"{server.url}/collab/health").json()["status"] == "ok"
    assert "immer_batches_accepted_total 1.0" in httpx.get(f"{server.url}/collab/metrics").text


def test_a_host_that_never_ran_the_lifespan_gets_a_clear_error(serve_app: ServeApp) -> None:
    collab = create_app(Settings(store_url="memory://", demo_dir=None))
    server = serve_app(host_app(collab, enter_lifespan=False))
    assert httpx.get(f"{server.url}/").json() == {"host": True}  # the host itself works
    r = httpx.get(f"{server.url}/collab/docs/doc/state")
    assert r.status_code == 503
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == "unavailable" and "running(app)" in error["message"]
    with WsClient(server.ws_url("/collab/ws/doc")) as c:
        assert closed_with(c) == 1011


def test_the_standalone_entry_serves_sockets_directly_once_running() -> None:
    """``Entry`` (what ``python -m server`` gives uvicorn) sends a WebSocket connection straight
    to its route's endpoint; before the lifespan ran, to the app, which says it is not running.
    Driven at the ASGI level (TestClient would take Entry for an ASGI 2 app)."""
    app = create_app(Settings(store_url="memory://", demo_dir=None))
    entry = Entry(app)

    async def connect(path: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        sent: list[dict[str, Any]] = []
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        inbox.put_nowait({"type": "websocket.connect"})

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if '"synced"' in message.get("text", ""):
                inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})

        scope: dict[str, Any] = {
            "type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "path": path,
            "raw_path": path.encode(), "root_path": "", "query_string": b"",
            "headers": [(b"host", b"127.0.0.1:8000")], "subprotocols": [],
            "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000), "extensions": {}}
        await asyncio.wait_for(entry(scope, inbox.get, send), timeout=10)
        return sent, scope

    async def main() -> None:
        sent, _ = await connect("/ws/doc")
        assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
        assert sent[1]["code"] == 1011
        async with running(app):
            sent, scope = await connect("/ws/doc")
        assert scope["app"] is app and scope["path_params"] == {"doc": "doc"}
        frames = [json.loads(m["text"]) for m in sent if m["type"] == "websocket.send"]
        messages = [m for f in frames for m in (f if isinstance(f, list) else [f])]
        assert [m["type"] for m in messages] == ["snapshot", "synced"]

    asyncio.run(main())
