"""Test clients: a protocol-1 WebSocket client and an independent Immer ``applyPatches``.

The WebSocket client is a real ``websockets`` client. It flattens frames that hold several
messages, and waits for the message a test expects (with a timeout) instead of sleeping.
"""

from __future__ import annotations

import copy
import json
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

Message = dict[str, Any]


class WsClient:
    def __init__(self, url: str, **kwargs: Any) -> None:
        self.url = url
        self._connect = connect(url, max_size=None, open_timeout=10, **kwargs)
        self.ws: ClientConnection = self._connect.__enter__()
        self.buffer: deque[Message] = deque()
        self.seen: list[Message] = []
        self.state: Any = None
        self.version: int | None = None
        self.immer = "format=json-patch" not in url
        self.sent: dict[Any, list[Any]] = {}

    def __enter__(self) -> WsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._connect.__exit__(None, None, None)

    def send(self, message: Any) -> None:
        self.ws.send(message if isinstance(message, str) else json.dumps(message))

    def patch(self, msg_id: Any, patches: list[Any], base: int | None = None) -> None:
        message: Message = {"type": "patch", "id": msg_id, "patches": patches}
        if base is not None:
            message["base"] = base
        self.sent[msg_id] = patches
        self.send(message)

    def recv(self, timeout: float = 10.0) -> Message:
        if not self.buffer:
            data = json.loads(self.ws.recv(timeout=timeout))
            self.buffer.extend(data if isinstance(data, list) else [data])
        message = self.buffer.popleft()
        self.seen.append(message)
        self._track(message)
        return message

    def until(self, predicate: Callable[[Message], bool], timeout: float = 10.0) -> Message:
        while True:
            message = self.recv(timeout)
            if predicate(message):
                return message

    def expect(self, kind: str, timeout: float = 10.0) -> Message:
        message = self.recv(timeout)
        assert message["type"] == kind, f"expected {kind}, got {message}"
        return message

    def _track(self, message: Message) -> None:
        """Keep a replica: the snapshot, then every version in order: others' patches applied
        with the Immer applier below, our own acknowledged batches applied as we sent them, or
        as the ack says they were applied (a rebased batch)."""
        kind = message.get("type")
        if kind == "snapshot":
            self.state, self.version = message["state"], message["version"]
            return
        if self.version is None or kind not in ("patch", "ack"):
            return
        if kind == "ack" and message["version"] <= self.version:
            return  # an empty batch, or a resend acknowledged with its original version
        assert message["version"] == self.version + 1, f"gap: {self.version} -> {message}"
        self.version = message["version"]
        if self.immer:
            patches = message.get("patches", self.sent.get(message.get("id")))
            self.state = apply_immer(self.state, patches)


def apply_immer(state: Any, patches: list[Message]) -> Any:
    """Immer's ``applyPatches`` for JSON data (add/replace/remove, list paths), written
    independently of the server so tests can check what it sends."""
    state = copy.deepcopy(state)
    for patch in patches:
        path, op = patch["path"], patch["op"]
        assert op in ("add", "replace", "remove"), f"not an Immer op: {patch}"
        if not path:
            state = copy.deepcopy(patch["value"])
            continue
        parent = state
        for seg in path[:-1]:
            parent = parent[seg]
        key = path[-1]
        if isinstance(parent, list):
            assert isinstance(key, int), f"array index must be a number: {patch}"
            if op == "add":
                parent.insert(key, copy.deepcopy(patch["value"]))
            elif op == "replace":
                parent[key] = copy.deepcopy(patch["value"])
            else:
                del parent[key]
        else:
            assert isinstance(key, str), f"object key must be a string: {patch}"
            if op == "remove":
                del parent[key]
            else:
                parent[key] = copy.deepcopy(patch["value"])
    return state


def closed_with(client: WsClient) -> int:
    """Read until the server closes the connection; the close code it sent."""
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(100):
            client.recv()
    assert info.value.rcvd is not None, "the server sent no close frame"
    return info.value.rcvd.code


class Served(Protocol):
    """A running server (a subprocess or an app in a thread) as the tests address it."""

    def ws_url(self, path: str = "/ws") -> str: ...


def joined(server: Served, path: str = "/ws", **kwargs: Any) -> WsClient:
    """A protocol-1 client on ``path``, past its snapshot and ``synced``."""
    client = WsClient(server.ws_url(path), **kwargs)
    client.expect("snapshot")
    client.until(lambda m: m["type"] == "synced")
    return client
