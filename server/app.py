"""The Starlette application: routes, the store's lifetime and the hub; embedding.

``create_app(settings, hooks=...)`` gives a Starlette app with its own lifespan. A host app that
mounts it (``app.mount("/collab", collab)``) must enter ``running(collab)`` from its own
lifespan: Starlette and FastAPI do not run a mounted app's lifespan. Until it runs, every
request is answered 503 (WebSocket: close 1011) with a message saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from . import http, ws
from .auth import Authenticator
from .config import Settings
from .errors import CloseCode, ErrorCode
from .hooks import HookRunner, Hooks
from .hub import Hub
from .store import open_store

log = logging.getLogger("server.app")
NOT_RUNNING = ("the collaboration server is not running: its lifespan never ran. When it is "
               "mounted in another app, enter server.running(app) from the host's lifespan")

NO_DEMO = """<!doctype html><meta charset="utf-8"><title>Immer patch server</title>
<h1>Immer patch server</h1>
<p>The demo is not built. With Node.js installed, run <code>make run</code> (or
<code>cd client_demo &amp;&amp; npm ci &amp;&amp; npm run build</code>) and reload.</p>
<p>The server is up: <a href="/state">GET /state</a>, WebSocket <code>/ws/{doc}</code>.</p>"""


async def no_demo(request: Request) -> Response:
    return HTMLResponse(NO_DEMO)


def create_app(settings: Settings, hooks: Hooks | None = None) -> Starlette:
    """The server as a Starlette app. Raises OSError or ValueError for a token file or key
    that cannot be read."""
    sockets = [
        WebSocketRoute("/", ws.lesson_endpoint, name="lesson_endpoint"),
        WebSocketRoute("/ws", ws.protocol_endpoint, name="protocol_endpoint"),
        WebSocketRoute("/ws/{doc}", ws.protocol_endpoint, name="protocol_endpoint"),
    ]
    routes: list[BaseRoute] = [
        *sockets,
        Route("/state", http.get_state, methods=["GET", "HEAD"]),
        Route("/state", http.patch_state, methods=["PATCH"]),
        Route("/docs/{doc}/state", http.get_state, methods=["GET", "HEAD"]),
        Route("/docs/{doc}/state", http.patch_state, methods=["PATCH"]),
        Route("/patches", http.get_patches, methods=["GET"]),
        Route("/docs/{doc}/patches", http.get_patches, methods=["GET"]),
        Route("/health", http.health, methods=["GET"]),
        Route("/metrics", http.metrics, methods=["GET"]),
    ]
    demo = Path(settings.demo_dir) if settings.demo_dir else None
    if demo is not None and (demo / "index.html").is_file():
        routes.append(Mount("/", StaticFiles(directory=demo, html=True)))
    else:
        routes.append(Route("/", no_demo, methods=["GET"]))

    runner = HookRunner(hooks)
    app = Starlette(routes=routes, lifespan=running,
                    middleware=[Middleware(_RequireRunning, sockets)])
    app.state.settings = settings
    app.state.hooks = runner
    app.state.auth = Authenticator(settings, runner)
    app.state.hub = None
    return app


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[None]:
    """Run an app made by :func:`create_app`: open its store, start its hub, and stop both
    (finishing what was queued, then the queued ``on_commit`` calls) on the way out. It is the
    app's lifespan; a host app that mounts it enters it from its own lifespan."""
    if getattr(app.state, "hub", None) is not None:
        raise RuntimeError("this collaboration server is already running")
    settings: Settings = app.state.settings
    runner: HookRunner = app.state.hooks
    store = open_store(settings.store_url)
    await store.open()
    hooks = runner if runner.sees_batches or runner.hooks.load is not None else None
    hub = Hub(settings, store, hooks=hooks)
    runner.count_errors_with(lambda name: hub.metrics.hook_errors.labels(name).inc())
    app.state.hub = hub
    await hub.presence.start()
    evictions = asyncio.create_task(hub.run_evictions())
    try:
        yield
    finally:
        evictions.cancel()
        app.state.hub = None
        await hub.presence.close()
        await hub.close()
        await runner.close()
        await store.close()


def _socket_app(scope: Scope, sockets: Sequence[WebSocketRoute]) -> ASGIApp | None:
    """The app of the WebSocket route ``scope`` matches (by Starlette's own ``route.matches``,
    which also sets the path parameters), or None."""
    for route in sockets:
        match, child = route.matches(scope)
        if match is Match.FULL:
            scope.update(child)
            return route.app
    return None


class _RequireRunning:
    """Answer every request with a clear error while the app's lifespan has not run.

    Also the WebSocket routes' short way in: a connection lives as long as its handler, and
    with it every frame of the ASGI stack it was called through. Matched here, a connection to
    one of ``sockets`` skips Starlette's exception middleware and router, whose frames and
    closures cost about 2 KiB per open connection. Neither does anything for these routes: this
    app registers no exception handler, and the endpoints handle their own errors (an unexpected
    one closes the connection with 1011). A host app's middleware and exception handlers,
    outside this app, still apply.

    ``__call__`` is a plain function that returns the next app's coroutine (awaited by the
    caller, as an ASGI app's is), so that no frame of this middleware stays alive with the
    connection."""

    def __init__(self, app: ASGIApp, sockets: Sequence[WebSocketRoute] = ()) -> None:
        self.app = app
        self.sockets = tuple(sockets)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "websocket" and scope["app"].state.hub is not None:
            endpoint = _socket_app(scope, self.sockets)
            if endpoint is not None:
                return endpoint(scope, receive, send)
        return self._call(scope, receive, send)

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope["app"].state.hub is None:
            log.error("%s", NOT_RUNNING)
            if scope["type"] == "http":
                body = {"error": {"code": ErrorCode.UNAVAILABLE.value, "message": NOT_RUNNING}}
                await JSONResponse(body, status_code=503)(scope, receive, send)
            else:
                websocket = WebSocket(scope, receive, send)
                await websocket.accept()
                await websocket.close(CloseCode.INTERNAL_ERROR, "server not running")
            return
        await self.app(scope, receive, send)


class Entry:
    """The app as the standalone server (``python -m server``) runs it: a connection to one of
    its WebSocket routes goes straight to the route's endpoint, past ``Starlette.__call__`` and
    its ServerErrorMiddleware too (which only set ``scope["app"]`` and pass WebSocket scopes
    on), so that none of their frames stays alive with each open connection (about 0.7 KiB);
    everything else, and every connection before the lifespan ran, goes through the app.

    ``__call__`` returns a coroutine rather than being one: serve it with ``interface="asgi3"``
    (uvicorn would otherwise take it for an ASGI 2 app)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.sockets = tuple(r for r in app.routes if isinstance(r, WebSocketRoute))

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "websocket" and self.app.state.hub is not None:
            endpoint = _socket_app(scope, self.sockets)
            if endpoint is not None:
                scope["app"] = self.app
                return endpoint(scope, receive, send)
        return self.app(scope, receive, send)
