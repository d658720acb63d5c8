"""Lesson mode: the Immer course's immer-gifts client (lesson15) against our server on ``/``.

``tests/oracle/lesson_client.mjs`` is that client without React: same state (with the
client-only keys ``users`` and ``currentUser``), same reducer through ``produceWithPatches``,
``JSON.stringify(patches)`` out, ``applyPatches`` on every frame in. Protocol-1 clients are
``tests/oracle/immer_client.mjs`` (Immer's ``applyPatches`` on the snapshot) or plain
``websockets`` clients; the simplest wire checks play the lesson client with ``websockets``.

Nothing waits on time: each step waits (with a timeout) for the message it causes, and a
negative ("this made no version") is shown by the next message being the next valid change.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from .conftest import ServerFactory, ServerProcess
from .oracle.nodejs import ORACLE_DIR, Event, NodeClient, dump, node_executable

pytestmark = pytest.mark.node

TIMEOUT = 10.0
FOX, PANDA = 5, 7  # lesson users (ids into the emoji list); the first default gift is the fox's
IMMER_OPS = {"add", "remove", "replace"}

StartClient = Callable[..., NodeClient]


@pytest.fixture
def start_client() -> Iterator[StartClient]:
    started: list[NodeClient] = []

    def start(script: str, *args: str, name: str) -> NodeClient:
        client = NodeClient(script, *args, name=name)
        started.append(client)
        return client

    yield start
    for client in started:
        client.close()


@pytest.fixture
def lesson_server(server_factory: ServerFactory, tmp_path: Path) -> ServerProcess:
    """A server whose default document starts as the gifts every lesson client starts with.

    The lesson app keeps its gifts locally from the start; on an empty document every action
    it sends addresses ``gifts`` the server lacks and is rejected, so a deployment for the
    lesson passes ``--initial-state`` (the lesson's own later server starts from them too).
    """
    printed = subprocess.run(
        [node_executable(), str(ORACLE_DIR / "lesson_client.mjs"), "--print-server-state"],
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT,
    )
    initial = tmp_path / "lesson-gifts.json"
    initial.write_text(printed.stdout, encoding="utf-8")
    return server_factory("--initial-state", str(initial))


def lesson_client(start: StartClient, server: ServerProcess, user: int) -> tuple[NodeClient, Event]:
    """A connected lesson app and the first frame it received (already applied)."""
    name = f"lesson client (user {user})"
    client = start("lesson_client.mjs", "--url", server.ws_url("/"), "--user", str(user), name=name)
    client.next("open")
    frame = client.next("frame")
    assert "error" not in frame, f"{name} could not apply its connect frame: {dump(frame)}"
    return client, frame


def immer_client(start: StartClient, server: ServerProcess) -> NodeClient:
    """A protocol-1 client on the default document, past its snapshot and ``synced``."""
    client = start("immer_client.mjs", "--url", server.ws_url("/ws?format=immer"), name="p1 client")
    first = client.next("message")["msg"]
    assert first["type"] == "snapshot", first
    for _ in range(10_000):  # a snapshot may come with a tail of patch messages
        message = client.next("message")
        assert "error" not in message, dump(message)
        if message["msg"]["type"] == "synced":
            assert message["msg"]["version"] == message["version"], dump(message)
            break
        assert message["msg"]["type"] == "patch", dump(message)
    return client


def get_state(server: ServerProcess) -> tuple[Any, str]:
    response = httpx.get(f"{server.url}/state", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json(), response.headers["etag"].removeprefix("W/")  # weak when gzipped


def assert_bare_immer_patches(data: Any, who: str) -> None:
    assert isinstance(data, list), f"{who} got a frame that is not a bare array: {dump(data)}"
    for patch in data:
        assert isinstance(patch, dict) and patch.get("op") in IMMER_OPS, (who, data)
        assert isinstance(patch.get("path"), list), f"{who}: Immer paths are arrays: {dump(data)}"


def next_change(client: NodeClient) -> Event:
    """The next frame that changes something (an empty relay of a no-op `[]` is allowed)."""
    for _ in range(5):
        frame = client.next("frame")
        assert "error" not in frame, f"{client.name} could not apply a frame: {dump(frame)}"
        assert_bare_immer_patches(frame["data"], client.name)
        if frame["data"]:
            return frame
    pytest.fail(f"{client.name} received only empty frames")


def check_step(
    server: ServerProcess,
    sender: NodeClient,
    action: dict[str, Any],
    lesson_peers: list[NodeClient],
    p1: NodeClient,
    version: int,
) -> Event:
    """One lesson action: sent as a bare array, applied on the server as version ``version``,
    relayed to the other lesson clients (bare arrays) and to the protocol-1 client."""
    sender.command("dispatch", action=action)
    sent = sender.next("sent")
    gifts = sent["state"]["gifts"]
    for peer in lesson_peers:
        frame = next_change(peer)
        assert frame["state"]["gifts"] == gifts, f"{peer.name} after {action}: {dump(frame)}"
    message = p1.next("message")
    assert message["msg"]["type"] == "patch", dump(message)
    assert message["msg"]["version"] == version, f"after {action}: {dump(message['msg'])}"
    assert "error" not in message, dump(message)
    assert message["state"] == {"gifts": gifts}, f"p1 client after {action}"
    state, etag = get_state(server)
    assert state == {"gifts": gifts}, f"server state after {action}"
    assert etag == f'"{version}"'
    return sent


def test_connect_frame_sets_each_top_level_key_and_keeps_client_keys(
    server_factory: ServerFactory, start_client: StartClient, tmp_path: Path
) -> None:
    doc = {
        "gifts": [
            {"id": "kite", "description": "Kite", "image": "https://example.invalid/k.png"},
            {"id": "mug", "description": "Mug", "image": "", "reservedBy": 3},
        ],
        "title": "Birthday 🎂",
    }
    initial = tmp_path / "initial.json"
    initial.write_text(json.dumps(doc), encoding="utf-8")
    server = server_factory("--initial-state", str(initial))

    _, frame = lesson_client(start_client, server, FOX)

    assert_bare_immer_patches(frame["data"], "lesson client")
    assert sorted(frame["data"], key=lambda p: p["path"]) == [
        {"op": "replace", "path": ["gifts"], "value": doc["gifts"]},
        {"op": "replace", "path": ["title"], "value": doc["title"]},
    ]
    state = frame["state"]
    assert state["gifts"] == doc["gifts"] and state["title"] == doc["title"]
    assert state["currentUser"] == {"id": FOX, "name": "🦊"}, "client-local key lost"
    assert len(state["users"]) == 32, "client-local key lost"


def test_connect_frame_of_an_empty_and_of_a_non_object_document(server: ServerProcess) -> None:
    with connect(server.ws_url("/")) as ws:
        assert json.loads(ws.recv(timeout=TIMEOUT)) == []
    root = [1, "two", {"k": None}]
    response = httpx.patch(
        f"{server.url}/state",
        content=json.dumps([{"op": "replace", "path": [], "value": root}]),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    with connect(server.ws_url("/")) as ws:
        assert json.loads(ws.recv(timeout=TIMEOUT)) == [
            {"op": "replace", "path": [], "value": root}
        ]


def test_lesson_actions_apply_on_the_server_and_reach_every_client(
    lesson_server: ServerProcess, start_client: StartClient
) -> None:
    server = lesson_server
    p1 = immer_client(start_client, server)
    fox, first = lesson_client(start_client, server, FOX)
    gifts = get_state(server)[0]["gifts"]
    assert first["data"] == [{"op": "replace", "path": ["gifts"], "value": gifts}]
    panda, _ = lesson_client(start_client, server, PANDA)
    license_id, circle_id = gifts[0]["id"], gifts[2]["id"]
    assert gifts[0]["reservedBy"] == FOX and "reservedBy" not in gifts[2]

    # cancelling a reservation: `reservedBy = undefined`, which JSON turns into a valueless replace
    toggle_license = {"type": "TOGGLE_RESERVATION", "id": license_id}
    sent = check_step(server, fox, toggle_license, [panda], p1, version=1)
    assert sent["patches"] == [{"op": "replace", "path": ["gifts", 0, "reservedBy"]}]
    assert "reservedBy" not in get_state(server)[0]["gifts"][0]

    # reserving again: a replace of a member the server does not have (undefined in Immer)
    sent = check_step(server, fox, toggle_license, [panda], p1, version=2)
    assert sent["patches"] == [{"op": "replace", "path": ["gifts", 0, "reservedBy"], "value": FOX}]

    socks = {"id": "socks", "description": "Warm socks 🧦", "image": "https://example.invalid/s"}
    sent = check_step(server, panda, {"type": "ADD_GIFT", **socks}, [fox], p1, version=3)
    assert sent["patches"] == [{"op": "add", "path": ["gifts", 3], "value": socks}]
    toggle_socks = {"type": "TOGGLE_RESERVATION", "id": "socks"}
    check_step(server, panda, toggle_socks, [fox], p1, version=4)

    # the panda toggles the fox's gift: nothing changes, and the lesson app still sends `[]`
    panda.command("dispatch", action=toggle_license)
    assert panda.next("sent")["patches"] == []
    # ...which makes no version: the next change is version 5
    toggle_circle = {"type": "TOGGLE_RESERVATION", "id": circle_id}
    sent = check_step(server, fox, toggle_circle, [panda], p1, version=5)
    assert sent["patches"] == [{"op": "add", "path": ["gifts", 2, "reservedBy"], "value": FOX}]

    sent = check_step(server, fox, {"type": "RESET"}, [panda], p1, version=6)
    assert sent["patches"] == [{"op": "replace", "path": ["gifts"], "value": gifts}]
    panda.command("state")
    panda_state = panda.next("state")["state"]
    assert panda_state["gifts"] == gifts
    assert panda_state["currentUser"]["id"] == PANDA and sent["state"]["currentUser"]["id"] == FOX
    assert get_state(server) == ({"gifts": gifts}, '"6"'), "client-local keys reached the server"


def expect_frame(ws: ClientConnection) -> Any:
    """The next lesson-mode frame (a bare array)."""
    return json.loads(ws.recv(timeout=TIMEOUT))


class Protocol1:
    """A ``websockets`` protocol-1 client; frames holding an array of messages are unpacked."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.buffer: list[dict[str, Any]] = []

    def next(self) -> dict[str, Any]:
        while not self.buffer:
            frame = json.loads(self.ws.recv(timeout=TIMEOUT))
            self.buffer.extend(frame if isinstance(frame, list) else [frame])
        return self.buffer.pop(0)

    def sync(self) -> int:
        """Read the snapshot, its tail (patch messages) and ``synced``; return the version."""
        snapshot = self.next()
        assert snapshot["type"] == "snapshot", snapshot
        version = snapshot["version"]
        for _ in range(10_000):
            message = self.next()
            if message["type"] == "synced":
                assert message["version"] == version, message
                return int(version)
            assert message["type"] == "patch" and message["version"] == version + 1, message
            version = message["version"]
        pytest.fail("no synced message")

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))


def test_protocol_batches_reach_lesson_clients_as_bare_arrays(
    lesson_server: ServerProcess, start_client: StartClient
) -> None:
    server = lesson_server
    p1 = immer_client(start_client, server)
    fox, _ = lesson_client(start_client, server, FOX)

    # an Immer-format protocol-1 batch
    p1.command(
        "send",
        id="p1",
        patches=[{"op": "replace", "path": ["gifts", 1, "description"], "value": "Renamed"}],
    )
    assert p1.next("message")["msg"] == {"type": "ack", "id": "p1", "version": 1}
    frame = next_change(fox)
    assert frame["state"]["gifts"][1]["description"] == "Renamed"

    # a JSON-Patch-format protocol-1 batch arrives in Immer format
    kite = {"id": "kite", "description": "Kite", "image": "https://example.invalid/k"}
    with connect(server.ws_url("/ws?format=json-patch")) as ws:
        jp = Protocol1(ws)
        assert jp.sync() == 1
        jp.send(
            {
                "type": "patch",
                "id": 7,
                "patches": [{"op": "add", "path": "/gifts/-", "value": kite}],
            }
        )
        # "-" was applied at index 3: the ack says so (it differs from what was sent)
        assert jp.next() == {"type": "ack", "id": 7, "version": 2, "patches": [
            {"op": "add", "path": "/gifts/3", "value": kite}]}
    frame = next_change(fox)
    assert frame["state"]["gifts"][-1] == kite and len(frame["state"]["gifts"]) == 4

    # and so does an HTTP PATCH
    response = httpx.patch(
        f"{server.url}/state",
        content=json.dumps([{"op": "remove", "path": "/gifts/0"}]),
        headers={"content-type": "application/json-patch+json"},
    )
    assert response.status_code == 200, response.text
    frame = next_change(fox)
    state, etag = get_state(server)
    assert etag == '"3"'
    assert frame["state"]["gifts"] == state["gifts"] and len(state["gifts"]) == 3
    assert frame["state"]["currentUser"]["id"] == FOX and len(frame["state"]["users"]) == 32
    for message in (p1.next("message"), p1.next("message")):
        assert message["msg"]["type"] == "patch" and "error" not in message, dump(message)
    assert message["state"] == state


def test_rejected_bare_array_gets_the_snapshot_frame_again(server: ServerProcess) -> None:
    gifts = [{"id": "a", "reservedBy": 1}, {"id": "b"}]
    with connect(server.ws_url("/ws")) as ws, connect(server.ws_url("/")) as lesson:
        p1 = Protocol1(ws)
        assert p1.sync() == 0
        assert expect_frame(lesson) == []
        lesson.send(json.dumps([{"op": "add", "path": ["gifts"], "value": gifts}]))
        assert p1.next()["version"] == 1
        snapshot_frame = [{"op": "replace", "path": ["gifts"], "value": gifts}]

        # a path through a missing array index
        lesson.send(json.dumps([{"op": "replace", "path": ["gifts", 5, "reservedBy"], "value": 2}]))
        assert expect_frame(lesson) == snapshot_frame
        # a batch whose second operation fails is rejected whole
        first_applies = {"op": "replace", "path": ["gifts", 0, "reservedBy"], "value": 9}
        lesson.send(json.dumps([first_applies, {"op": "remove", "path": ["gifts", 2]}]))
        assert expect_frame(lesson) == snapshot_frame
        # `[]` changes nothing (and is no error: no snapshot frame comes back for it)
        lesson.send("[]")

        # none of the above made a version: the next change is version 2
        lesson.send(json.dumps([{"op": "replace", "path": ["gifts", 1, "reservedBy"], "value": 3}]))
        message = p1.next()
        assert message["type"] == "patch" and message["version"] == 2, message
        state, etag = get_state(server)
        assert etag == '"2"'
        assert state == {"gifts": [{"id": "a", "reservedBy": 1}, {"id": "b", "reservedBy": 3}]}

        # and the lesson client got nothing else meanwhile (no echo of its own change, no
        # answer to `[]`): the next frame it gets is the next change made elsewhere
        marker = [{"op": "replace", "path": ["gifts", 0, "id"], "value": "A"}]
        p1.send({"type": "patch", "id": "marker", "patches": marker})
        assert p1.next() == {"type": "ack", "id": "marker", "version": 3}
        assert expect_frame(lesson) == marker


def test_a_stale_lesson_client_is_repaired_by_the_snapshot_frame(
    lesson_server: ServerProcess, start_client: StartClient
) -> None:
    server = lesson_server
    fox, _ = lesson_client(start_client, server, FOX)
    panda, _ = lesson_client(start_client, server, PANDA)
    socks = {"id": "socks", "description": "Socks", "image": ""}
    fox.command("dispatch", action={"type": "ADD_GIFT", **socks})
    fox.next("sent")
    next_change(panda)

    # the fox's network stalls while the panda resets the list, then the fox, still seeing
    # four gifts, reserves the socks: index 3 no longer exists on the server
    fox.command("pause")
    fox.next("paused")
    panda.command("dispatch", action={"type": "RESET"})
    panda.next("sent")
    assert fox.next("queued")["data"], "the panda's reset should reach the fox"
    fox.command("dispatch", action={"type": "TOGGLE_RESERVATION", "id": "socks"})
    assert fox.next("sent")["patches"] == [
        {"op": "replace", "path": ["gifts", 3, "reservedBy"], "value": FOX}
    ]
    state, etag = get_state(server)
    assert fox.next("queued")["data"] == [
        {"op": "replace", "path": ["gifts"], "value": state["gifts"]}
    ]

    fox.command("resume")
    repaired = fox.next("resumed")["state"]
    assert repaired["gifts"] == state["gifts"] and len(state["gifts"]) == 3
    assert repaired["currentUser"]["id"] == FOX and len(repaired["users"]) == 32
    assert get_state(server) == (state, etag), "the rejected frame changed the document"


def test_lesson_undo_sends_inverse_patches_as_a_head_applied_batch(server: ServerProcess) -> None:
    """The course's undo (immer-gifts lessons 19/20) sends a change's ``inversePatches`` as a bare
    array: a batch without ``base``, applied at the head like any lesson batch, also after
    another client's change; protocol-1 clients receive it as a ``patch``."""
    gifts = [{"id": "a"}, {"id": "b", "reservedBy": 1}, {"id": "c"}]
    with connect(server.ws_url("/ws")) as ws, connect(server.ws_url("/")) as lesson:
        p1 = Protocol1(ws)
        assert p1.sync() == 0
        assert expect_frame(lesson) == []
        lesson.send(json.dumps([{"op": "add", "path": ["gifts"], "value": gifts}]))
        assert p1.next()["version"] == 1

        # the lesson app adds a gift; Immer 9 gives the inverse of an append as a `length` replace
        kite = {"id": "kite", "description": "Kite"}
        lesson.send(json.dumps([{"op": "add", "path": ["gifts", 3], "value": kite}]))
        inverse_add = [{"op": "replace", "path": ["gifts", "length"], "value": 3}]
        # it frees gift b: `reservedBy = undefined` (a valueless replace), inverse: the old value
        lesson.send(json.dumps([{"op": "replace", "path": ["gifts", 1, "reservedBy"]}]))
        inverse_free = [{"op": "replace", "path": ["gifts", 1, "reservedBy"], "value": 1}]
        assert [p1.next()["version"], p1.next()["version"]] == [2, 3]

        # someone else reserves gift c meanwhile
        reserve_c = [{"op": "add", "path": ["gifts", 2, "reservedBy"], "value": 7}]
        p1.send({"type": "patch", "id": "other", "base": 3, "patches": reserve_c})
        assert p1.next() == {"type": "ack", "id": "other", "version": 4}
        assert expect_frame(lesson) == reserve_c

        # undo, undo: the inverse patches, newest first, each a bare array
        lesson.send(json.dumps(inverse_free))
        lesson.send(json.dumps(inverse_add))
        assert [p1.next()["version"], p1.next()["version"]] == [5, 6]
        state, etag = get_state(server)
        assert etag == '"6"'
        undone = [{"id": "a"}, {"id": "b", "reservedBy": 1}, {"id": "c", "reservedBy": 7}]
        assert state == {"gifts": undone}

        # redo: the original patches again
        lesson.send(json.dumps([{"op": "add", "path": ["gifts", 3], "value": kite}]))
        assert p1.next()["version"] == 7
        assert get_state(server)[0]["gifts"][3] == kite
