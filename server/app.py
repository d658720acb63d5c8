"""The Starlette application: routes, the store's lifetime and the hub."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from . import http, ws
from .config import Settings
from .hub import Hub
from .store import open_store

NO_DEMO = """<!doctype html><meta charset="utf-8"><title>Immer patch server</title>
<h1>Immer patch server</h1>
<p>The demo is not built. With Node.js installed, run <code>make run</code> (or
<code>cd client_demo &amp;&amp; npm ci &amp;&amp; npm run build</code>) and reload.</p>
<p>The server is up: <a href="/state">GET /state</a>, WebSocket <code>/ws/{doc}</code>.</p>"""


async def no_demo(request: Request) -> Response:
    return HTMLResponse(NO_DEMO)


def create_app(settings: Settings) -> Starlette:
    routes: list[BaseRoute] = [
        WebSocketRoute("/", ws.lesson_endpoint),
        WebSocketRoute("/ws", ws.protocol_endpoint),
        WebSocketRoute("/ws/{doc}", ws.protocol_endpoint),
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

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = open_store(settings.store_url)
        await store.open()
        hub = Hub(settings, store)
        app.state.hub = hub
        await hub.presence.start()
        evictions = asyncio.create_task(hub.run_evictions())
        try:
            yield
        finally:
            evictions.cancel()
            await hub.presence.close()
            await hub.close()
            await store.close()

    return Starlette(routes=routes, lifespan=lifespan)
