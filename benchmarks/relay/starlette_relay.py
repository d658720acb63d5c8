"""The lesson-style relay written with Starlette, run under uvicorn.

The same algorithm as ``lesson_relay.mjs`` (the Immer course's lesson15 ``server.js``): keep every
patch ever received in one flat list, relay each message as received to every other client, send
each newcomer the whole history in one frame. It has no authority (no document, no versions, no
validation), so comparing it with the Node relay shows the cost of Python, and comparing our
server with it shows the cost of authority.

    python benchmarks/relay/starlette_relay.py [--port 0]
    python -m uvicorn benchmarks.relay.starlette_relay:app --port 5001

With ``--port 0`` it picks a free port and prints ``listening PORT``.
"""

from __future__ import annotations

import argparse
import socket
import sys

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

connections: list[WebSocket] = []
history: list[object] = []


async def relay(ws: WebSocket) -> None:
    await ws.accept()
    connections.append(ws)
    try:
        await ws.send_text(orjson.dumps(history).decode())
        while True:
            message = await ws.receive_text()
            history.extend(orjson.loads(message))
            for client in connections:
                if client is not ws:
                    try:
                        await client.send_text(message)
                    except OSError:  # uvicorn's ClientDisconnected: that client is leaving
                        continue
    except WebSocketDisconnect:
        pass
    finally:
        connections.remove(ws)


app = Starlette(routes=[WebSocketRoute("/", relay)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    print(f"listening {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
