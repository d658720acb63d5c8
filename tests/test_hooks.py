"""Server-side hooks (``create_app(settings, hooks=Hooks(...))``), served by a real uvicorn and
driven by real WebSocket and HTTP clients: each hook's context, a rejecting ``validate`` (the
document unchanged, only the sender told), slow and failing hooks, no frame processed before
authentication ends, ``on_commit`` once per version in order, per-document initial states."""

from __future__ import annotations

import asyncio
import copy
import queue
import re
from collections.abc import Callable
from typing import Any

import httpx
import jsonpatch
import pytest

from server import (
    Batch,
    Forbidden,
    Handshake,
    HookContext,
    Hooks,
    Principal,
    Settings,
    Unauthorized,
    create_app,
)

from .clients import WsClient, closed_with, joined
from .conftest import AppServer

ServeApp = Callable[..., AppServer]
ADD_A = [{"op": "add", "path": ["a"], "value": 1}]


def hook_errors(server: AppServer, hook: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    match = re.search(rf'^hook_errors_total{{hook="{hook}"}} (\S+)', text, re.M)
    return float(match.group(1)) if match else 0.0


async def by_token(handshake: Handshake) -> Principal:
    """Tokens of the form ``user-role``: enough to tell principals apart in tests."""
    if not handshake.token or "-" not in handshake.token:
        raise Unauthorized("who are you?")
    user, role = handshake.token.rsplit("-", 1)
    return Principal(user, user.title(), ("*",), role)  # type: ignore[arg-type]


def test_each_hook_gets_its_context(serve_app: ServeApp) -> None:
    calls: list[tuple[str, Any]] = []
    commits: queue.Queue[tuple[str, int, list[Any], Principal | None]] = queue.Queue()

    async def authenticate(handshake: Handshake) -> Principal:
        calls.append(("authenticate", handshake))
        return await by_token(handshake)

    async def authorize(principal: Principal, doc: str) -> str | None:
        calls.append(("authorize", (principal.id, doc)))
        return None if doc.startswith("secret") else principal.role

    async def validate(ctx: HookContext, batch: Batch, state: Any) -> None:
        calls.append(("validate", (ctx, batch, copy.deepcopy(state))))

    async def on_commit(doc: str, version: int, patches: list[Any],
                        principal: Principal | None) -> None:
        commits.put((doc, version, patches, principal))

    async def on_connect(ctx: HookContext) -> None:
        calls.append(("on_connect", ctx))

    disconnected: queue.Queue[HookContext] = queue.Queue()

    async def on_disconnect(ctx: HookContext) -> None:
        disconnected.put(ctx)

    hooks = Hooks(authenticate=authenticate, authorize=authorize, validate=validate,
                  on_commit=on_commit, on_connect=on_connect, on_disconnect=on_disconnect)
    server = serve_app(create_app(Settings(store_url="memory://"), hooks=hooks))

    with joined(server, "/ws/gifts?client=c1", subprotocols=["bearer.ann-write"]) as c:
        c.patch("m1", ADD_A)
        assert c.expect("ack")["version"] == 1
        version = commits.get(timeout=10)
    kinds = [k for k, _ in calls]
    assert kinds == ["authenticate", "authorize", "on_connect", "validate"], kinds
    handshake = calls[0][1]
    assert (handshake.transport, handshake.doc, handshake.token, handshake.client) == (
        "websocket", "gifts", "ann-write", "c1")
    assert calls[1][1] == ("ann", "gifts")
    connected: HookContext = calls[2][1]
    assert (connected.principal.id, connected.doc) == ("ann", "gifts")
    assert connected.connection is not None
    ctx, batch, state = calls[3][1]
    assert ctx == connected  # the same principal, document and connection
    assert (batch.id, batch.version) == ("m1", 1)
    assert batch.ops == [{"op": "add", "path": "/a", "value": 1}]
    assert batch.immer == ADD_A and batch.before == {}
    assert state == {"a": 1}  # the state after the batch
    assert version == ("gifts", 1, [{"op": "add", "path": "/a", "value": 1}],
                       connected.principal)
    assert disconnected.get(timeout=10) == connected

    # HTTP: the same hooks, no connection id
    calls.clear()
    r = httpx.patch(f"{server.url}/docs/gifts/state", headers={"authorization": "Bearer bo-write"},
                    json=[{"op": "replace", "path": ["a"], "value": 2}])
    assert r.status_code == 200 and r.json() == {"version": 2}
    ctx, batch, state = next(v for k, v in calls if k == "validate")
    assert (ctx.principal.id, ctx.doc, ctx.connection) == ("bo", "gifts", None)
    assert batch.before == {"/a": 1} and state == {"a": 2}
    doc, v, patches, principal = commits.get(timeout=10)
    assert (doc, v, patches) == ("gifts", 2, [{"op": "replace", "path": "/a", "value": 2}])
    assert principal is not None and principal.id == "bo"

    # authorize: None is forbidden, "read" is read-only; authenticate refuses unknown people
    with WsClient(server.ws_url("/ws/secret-1"), subprotocols=["bearer.ann-write"]) as c:
        assert c.expect("error")["error"]["code"] == "forbidden"
        assert closed_with(c) == 1008
    with joined(server, "/ws/gifts", subprotocols=["bearer.rita-read"]) as r2:
        r2.patch(1, ADD_A)
        assert r2.expect("reject")["error"]["code"] == "forbidden"
    with WsClient(server.ws_url("/ws/gifts")) as c:
        assert c.expect("error")["error"]["code"] == "unauthorized"
    assert httpx.get(f"{server.url}/docs/gifts/state").status_code == 401


def test_a_rejecting_validate_changes_nothing_and_tells_only_the_sender(
        serve_app: ServeApp) -> None:
    async def validate(ctx: HookContext, batch: Batch, state: Any) -> None:
        locked = state.get("locked") or batch.before.get("/locked")  # after, or before it
        if locked and ctx.principal.id != "owner":
            raise Forbidden("the list is locked", path="/locked")

    hooks = Hooks(authenticate=by_token, validate=validate)
    server = serve_app(create_app(Settings(store_url="memory://"), hooks=hooks))
    with joined(server, "/ws/list", subprotocols=["bearer.owner-write"]) as owner, \
            joined(server, "/ws/list", subprotocols=["bearer.eve-write"]) as eve, \
            joined(server, "/ws/list", subprotocols=["bearer.obs-read"]) as watcher:
        owner.patch("lock", [{"op": "add", "path": ["locked"], "value": True}])
        assert owner.expect("ack")["version"] == 1
        assert eve.expect("patch")["version"] == 1
        assert watcher.expect("patch")["version"] == 1
        eve.patch("e1", [{"op": "add", "path": ["items"], "value": ["x"]},
                         {"op": "replace", "path": ["locked"], "value": False}])
        rej = eve.expect("reject")
        assert rej["id"] == "e1" and rej["version"] == 1
        assert rej["error"] == {"code": "forbidden", "message": "the list is locked",
                                "path": "/locked"}
        owner.patch("o2", [{"op": "add", "path": ["items"], "value": ["y"]}])
        assert owner.expect("ack")["version"] == 2  # version 2: nothing of e1 was kept
        # the others saw nothing of the rejected batch: their next message is version 2
        assert eve.expect("patch") == {"type": "patch", "version": 2,
                                       "patches": [{"op": "add", "path": ["items"],
                                                    "value": ["y"]}]}
        assert watcher.expect("patch")["version"] == 2
        assert eve.state == owner.state == watcher.state == {"locked": True, "items": ["y"]}
    state = httpx.get(f"{server.url}/docs/list/state",
                      headers={"authorization": "Bearer obs-read"}).json()
    assert state == {"locked": True, "items": ["y"]}
    r = httpx.patch(f"{server.url}/docs/list/state", json=[{"op": "remove", "path": ["items"]}],
                    headers={"authorization": "Bearer eve-write"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert hook_errors(server, "validate") == 0  # a deliberate rejection is not an error


def test_slow_and_failing_validate_fail_closed(serve_app: ServeApp) -> None:
    async def validate(ctx: HookContext, batch: Batch, state: Any) -> None:
        if "slow" in state:
            await asyncio.sleep(5)
        if "boom" in state:
            raise RuntimeError("a bug in the application")

    hooks = Hooks(validate=validate, validate_timeout=0.2)
    server = serve_app(create_app(Settings(store_url="memory://"), hooks=hooks))
    with joined(server, "/ws/v") as c, joined(server, "/ws/v") as other:
        c.patch(1, ADD_A)
        assert c.expect("ack")["version"] == 1
        assert other.expect("patch")["version"] == 1
        for name in ("slow", "boom"):
            c.patch(name, [{"op": "add", "path": [name], "value": True}])
            rej = c.expect("reject")
            assert rej["id"] == name and rej["version"] == 1, rej
            assert rej["error"]["code"] == "unavailable", rej
        c.patch(2, [{"op": "add", "path": ["b"], "value": 2}])
        assert c.expect("ack")["version"] == 2  # the document carries on
        assert other.expect("patch")["version"] == 2
    assert httpx.get(f"{server.url}/docs/v/state").json() == {"a": 1, "b": 2}
    assert hook_errors(server, "validate") == 2


def test_no_frame_is_processed_before_authentication_ends(serve_app: ServeApp) -> None:
    started: queue.Queue[str] = queue.Queue()

    async def authenticate(handshake: Handshake) -> Principal:
        started.put(handshake.token or "")
        await asyncio.sleep(0.3)  # an identity provider taking its time
        if handshake.token == "slow-fail":
            raise Unauthorized("no")
        if handshake.token == "broken":
            raise ConnectionError("the identity provider is down")
        if handshake.token == "hang":
            await asyncio.sleep(10)
        return Principal("ok")

    hooks = Hooks(authenticate=authenticate, timeout=1.0)
    server = serve_app(create_app(Settings(store_url="memory://"), hooks=hooks))
    for token in ("slow-fail", "broken", "hang"):
        with WsClient(server.ws_url(f"/ws/early?token={token}")) as c:
            # sent while the hook runs: must never be applied
            c.patch("early", [{"op": "add", "path": [token], "value": 1}])
            assert started.get(timeout=10) == token
            error = c.expect("error")["error"]
            assert error["code"] == "unauthorized", error
            assert closed_with(c) == 1008
    assert hook_errors(server, "authenticate") == 2  # the exception and the timeout
    with joined(server, "/ws/early?token=ok") as c:
        assert c.state == {}  # nothing of the early frames was applied
        c.patch("later", ADD_A)
        assert c.expect("ack")["version"] == 1


def test_on_commit_sees_every_version_once_in_order(serve_app: ServeApp) -> None:
    seen: list[tuple[int, list[Any], str | None]] = []
    done: queue.Queue[int] = queue.Queue()
    gate = asyncio.Event()

    async def on_commit(doc: str, version: int, patches: list[Any],
                        principal: Principal | None) -> None:
        if not seen:
            await gate.wait()  # hold the first call: the next ones pile up and are merged
        seen.append((version, patches, principal.id if principal else None))
        done.put(version)

    async def validate(ctx: HookContext, batch: Batch, state: Any) -> None:
        if len(state.get("items", [])) >= 60:
            gate.set()

    hooks = Hooks(on_commit=on_commit, validate=validate, commit_queue=4)
    server = serve_app(create_app(Settings(store_url="memory://"), hooks=hooks))
    with joined(server, "/ws/log") as a, joined(server, "/ws/log") as b:
        a.patch("init", [{"op": "add", "path": ["items"], "value": {}}])
        assert a.expect("ack")["version"] == 1
        for i in range(30):
            a.patch(f"a{i}", [{"op": "add", "path": ["items", f"a{i}"], "value": i}])
            b.patch(f"b{i}", [{"op": "add", "path": ["items", f"b{i}"], "value": i}])
        head = 61
        a.until(lambda m: m.get("version") == head and m["type"] in ("ack", "patch"))
        b.until(lambda m: m.get("version") == head and m["type"] in ("ack", "patch"))
        while done.get(timeout=10) != head:
            pass
        final = a.state
    versions = [v for v, _, _ in seen]
    assert versions == sorted(set(versions)) and versions[-1] == head
    assert len(versions) < head  # some calls were merged while the first one was held
    state: Any = {}
    for _, patches, _ in seen:  # every version's operations, each exactly once, in order
        state = jsonpatch.apply_patch(state, patches)
    assert state == final == httpx.get(f"{server.url}/docs/log/state").json()
    assert len(state["items"]) == 60


def test_failing_and_slow_on_commit_are_counted_and_change_nothing(
        serve_app: ServeApp) -> None:
    calls: queue.Queue[int] = queue.Queue()

    async def on_commit(doc: str, version: int, patches: list[Any],
                        principal: Principal | None) -> None:
        calls.put(version)
        if version == 1:
            raise RuntimeError("the webhook is down")
        if version == 2:
            raise Forbidden("on_commit cannot refuse anything")
        if version == 3:
            await asyncio.sleep(5)

    hooks = Hooks(on_commit=on_commit, commit_timeout=0.2)
    server = serve_app(create_app(Settings(store_url="memory://"), hooks=hooks))
    with joined(server, "/ws/c") as c:
        for i in range(4):
            c.patch(i, [{"op": "add", "path": [f"k{i}"], "value": i}])
            assert c.expect("ack")["version"] == i + 1  # acks do not wait for on_commit
    # the calls run one at a time, in order: when version 4's runs, 1-3 have been counted
    assert [calls.get(timeout=10) for _ in range(4)] == [1, 2, 3, 4]
    assert hook_errors(server, "on_commit") == 3
    assert httpx.get(f"{server.url}/docs/c/state").json() == {"k0": 0, "k1": 1, "k2": 2, "k3": 3}


def test_load_gives_each_new_document_its_initial_state(serve_app: ServeApp,
                                                        tmp_path: Any) -> None:
    loads: list[str] = []

    async def load(doc: str) -> Any:
        loads.append(doc)
        if doc == "broken":
            raise OSError("the database is down")
        if doc.startswith("list-"):
            return {"title": doc[5:], "gifts": []}
        return None

    settings = Settings(store_url=f"sqlite:///{tmp_path}/docs.db", initial_state={"blank": True})
    server = serve_app(create_app(settings, hooks=Hooks(load=load)))
    with joined(server, "/ws/list-xmas") as c:
        assert c.state == {"title": "xmas", "gifts": []} and c.version == 0
        c.patch(1, [{"op": "add", "path": ["gifts", 0], "value": "kite"}])
        assert c.expect("ack")["version"] == 1
    assert httpx.get(f"{server.url}/docs/list-xmas/state?version=0").json() == {
        "title": "xmas", "gifts": []}
    assert httpx.get(f"{server.url}/docs/other/state").json() == {"blank": True}
    with WsClient(server.ws_url("/ws/broken")) as c:
        assert c.expect("error")["error"]["code"] == "unavailable"
    assert hook_errors(server, "load") == 1
    assert loads.count("list-xmas") == 1  # loaded once, then it lives in the store


def test_the_cli_loads_hooks_from_a_module(server_factory: Any) -> None:
    server = server_factory("--hooks", "tests.hook_module:hooks")
    with joined(server, "/ws/cli") as c:
        c.patch(1, [{"op": "add", "path": ["forbidden"], "value": 1}])
        assert c.expect("reject")["error"]["code"] == "forbidden"
        c.patch(2, ADD_A)
        assert c.expect("ack")["version"] == 1
    bad = server_factory("--hooks", "tests.hook_module:nothing", start=False)
    with pytest.raises(RuntimeError, match="exited"):
        bad.start(timeout=20)
    assert "--hooks tests.hook_module:nothing" in bad.log()


def test_a_hook_that_is_not_async_or_raises_at_once_fails_closed(serve_app: ServeApp) -> None:
    def authorize(principal: Principal, doc: str) -> str:  # forgot the async
        if doc == "boom":
            raise KeyError(doc)
        return "write"

    server = serve_app(create_app(Settings(store_url="memory://"),
                                  hooks=Hooks(authorize=authorize)))  # type: ignore[arg-type]
    for doc in ("plain", "boom"):
        with WsClient(server.ws_url(f"/ws/{doc}")) as c:
            assert c.expect("error")["error"]["code"] == "unauthorized"
            assert closed_with(c) == 1008
        assert httpx.get(f"{server.url}/docs/{doc}/state").status_code == 401
    assert hook_errors(server, "authorize") == 4
