"""Fuzzing a live server with random and malformed frames of every kind.

Invariants, whatever is sent (the websockets library's own fuzzers assert the same shape:
every input is accepted, or rejected in a documented way):

- every frame is answered exactly once: a ``patch`` message with a valid id gets one ``ack`` or
  one ``reject`` carrying that id; every other frame gets one ``error``; every code is an
  :class:`~server.errors.ErrorCode`; a reject's version was already delivered to its sender;
- the server stays up, and the versions each connection sees come in order without gaps;
- every version was acknowledged to exactly one sender, and the document equals the replay of
  the accepted batches (``GET .../patches?since=0&format=json-patch`` applied with the
  ``jsonpatch`` library to the initial state);
- a well-behaved client connected throughout saw every version, and its replica equals the
  final state.

Frames come from Hypothesis (which shrinks a failure to a minimal list of frames) and, for
volume, from a seeded mutation loop over valid frames (100,000 frames, pipelined over asyncio
connections). Frames over ``--max-frame-bytes`` (closed with 1009) and text frames that are
not UTF-8 (closed with 1007, as RFC 6455 requires) end the connection: they are sent on a
separate connection that reconnects, while the main loop runs.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect

from server.errors import ErrorCode

from .clients import Message, WsClient
from .conftest import ServerFactory, ServerProcess

CODES = frozenset(code.value for code in ErrorCode)
MAX_FRAME = 65536
FLAGS = ("--rate", "0", "--retain-versions", "100000000", "--max-frame-bytes", str(MAX_FRAME),
         "--max-ops", "32", "--max-depth", "12", "--max-string-bytes", "512",
         "--max-key-bytes", "32", "--max-document-bytes", "4096",
         "--max-queue-messages", "10000000", "--max-queue-bytes", str(1 << 30))
INITIAL: dict[str, Any] = {
    "gifts": [{"id": "a", "name": "bike", "tags": ["x"]}, {"id": "b", "name": "kite", "tags": []}],
    "title": "list",
    "meta": {"n": 1, "flags": {"a": True}},
}
DOC = "fz"
WINDOW = 256  # frames in flight per connection
MAX_SAFE = 2**53


def same(a: Any, b: Any) -> bool:
    """JSON equality that keeps true apart from 1 and 1 from 1.0 (``==`` does not)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def answer_key(msg_id: Any) -> tuple[str, Any]:
    return ("s" if isinstance(msg_id, str) else "i", msg_id)


def expected_answer(payload: str | bytes) -> tuple[str, Any] | None:
    """The id key a frame must be answered with (ack or reject), or None for an ``error``.

    The protocol: a text frame holding a JSON object with ``type: "patch"`` and an id that is a
    string of at most 128 characters or an integer in the JSON-safe range. (JSON is parsed with
    orjson, like the server: whether, say, a byte order mark is JSON is not what this checks.)
    """
    if isinstance(payload, bytes):
        return None
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict) or message.get("type") != "patch":
        return None
    msg_id = message.get("id")
    if type(msg_id) is str and len(msg_id) <= 128:
        return answer_key(msg_id)
    if type(msg_id) is int and -MAX_SAFE < msg_id < MAX_SAFE:
        return answer_key(msg_id)
    return None


class Ledger:
    """What one connection was sent and answered, checked as the answers arrive."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent = 0
        self.answered = 0
        self.pending: Counter[tuple[str, Any]] = Counter()
        self.errors_expected = 0
        self.errors = 0
        self.version: int | None = None
        self.advanced: list[int] = []  # versions acknowledged to this connection
        self.kinds: Counter[str] = Counter()
        self.recent: deque[str | bytes] = deque(maxlen=20)

    def sending(self, payload: str | bytes) -> None:
        self.sent += 1
        self.recent.append(payload)
        key = expected_answer(payload)
        if key is None:
            self.errors_expected += 1
        else:
            self.pending[key] += 1

    @property
    def outstanding(self) -> int:
        return self.sent - self.answered

    def fail(self, message: Message, why: str) -> None:
        raise AssertionError(f"{self.name}: {why}: {message}\nlast frames sent: "
                             + "\n".join(repr(p)[:300] for p in self.recent))

    def take(self, message: Message) -> None:
        kind = message.get("type")
        self.kinds[str(kind)] += 1
        if kind == "snapshot":
            self.version = message["version"]
        elif kind == "synced":
            pass
        elif kind == "patch":
            self._advance(message, message["version"])
        elif kind in ("ack", "reject"):
            key = answer_key(message.get("id"))
            if self.pending[key] <= 0:
                self.fail(message, "answer to no outstanding batch (or a second answer)")
            self.pending[key] -= 1
            self.answered += 1
            if kind == "ack":
                if self.version is None or message["version"] > self.version:
                    self._advance(message, message["version"])
                    self.advanced.append(message["version"])
            else:
                self._check_error(message)
                if self.version is None or message["version"] > self.version:
                    self.fail(message, f"reject at a version not delivered (seen {self.version})")
        elif kind == "error":
            self._check_error(message)
            self.errors += 1
            self.answered += 1
            if self.errors > self.errors_expected:
                self.fail(message, "more errors than frames that deserve one")
        else:
            self.fail(message, "unknown message type")

    def _advance(self, message: Message, version: int) -> None:
        if self.version is None or version != self.version + 1:
            self.fail(message, f"version gap after {self.version}")
        self.version = version

    def _check_error(self, message: Message) -> None:
        error = message.get("error")
        if not isinstance(error, dict) or error.get("code") not in CODES or not isinstance(
                error.get("message"), str):
            self.fail(message, "undocumented error")

    def settled(self) -> None:
        assert self.errors == self.errors_expected, (self.name, self.errors, self.errors_expected)
        left = +self.pending
        assert not left, f"{self.name}: unanswered: {list(left.items())[:10]}"


def messages_of(data: str | bytes) -> list[Message]:
    parsed = json.loads(data)
    return parsed if isinstance(parsed, list) else [parsed]


class Watcher:
    """A well-behaved ``WsClient`` reading in a thread for the whole run: its replica follows
    every version (``WsClient`` asserts there is no gap)."""

    def __init__(self, server: ServerProcess) -> None:
        # no keepalive pings: they draw from the global `random` in a background thread, which
        # Hypothesis reports as a strategy depending on external state
        self.client = WsClient(server.ws_url(f"/ws/{DOC}"), ping_interval=None)
        self.client.expect("snapshot")
        self.client.until(lambda m: m["type"] == "synced")
        self.target: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            deadline = time.monotonic() + 600
            while self.target is None or (self.client.version or 0) < self.target:
                assert time.monotonic() < deadline, "the watcher ran out of time"
                try:
                    self.client.recv(timeout=0.5)
                except TimeoutError:
                    continue
        except BaseException as exc:  # reported by finish() in the test's thread
            self.error = exc

    def close(self) -> None:
        self.client.ws.close()  # idempotent; ends the thread's recv
        self.thread.join(timeout=10)

    def finish(self, version: int) -> WsClient:
        self.target = version
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "the watcher did not reach the final version"
        if self.error is not None:
            raise self.error
        self.client.close()
        return self.client


@pytest.fixture
def watchers(server_factory: ServerFactory) -> Iterator[list[Watcher]]:
    """Watchers to close at the end of the test, passed or failed (before its servers stop)."""
    started: list[Watcher] = []
    yield started
    for watcher in started:
        watcher.close()


def check_final(server: ServerProcess, ledgers: list[Ledger], watcher: Watcher) -> int:
    """The server is up, every version was acked once, the log replays to the state, and the
    watcher's replica equals it. Returns the final version."""
    assert httpx.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"
    r = httpx.get(f"{server.url}/docs/{DOC}/state", timeout=30)
    assert r.status_code == 200
    version, state = int(r.headers["etag"].strip('"')), r.json()
    acked = sorted(itertools.chain.from_iterable(ledger.advanced for ledger in ledgers))
    assert acked == list(range(1, version + 1)), "a version not acknowledged exactly once"
    log = httpx.get(f"{server.url}/docs/{DOC}/patches?since=0&format=json-patch", timeout=60)
    assert log.status_code == 200, log.text[:500]
    body = log.json()
    assert body["from"] == 0 and body["version"] == version
    replayed = jsonpatch.apply_patch(INITIAL, body["patches"])
    assert same(replayed, state), "the replay of the accepted batches differs from the state"
    seen = watcher.finish(version)
    assert seen.version == version
    assert same(seen.state, state), "the watcher's replica differs from the state"
    return version


def fuzz_server(server_factory: ServerFactory, tmp_path: Path) -> ServerProcess:
    initial = tmp_path / "initial.json"
    initial.write_text(json.dumps(INITIAL))
    return server_factory("--initial-state", str(initial), *FLAGS)


# -- frames: a seeded generator of valid frames, and mutations of them --------------------------

KEYS = ("gifts", "title", "meta", "n", "flags", "a", "name", "tags", "id", "", "a/b", "m~n",
        "~1", "é", "😀", "0", "-", "length", " ")
RESERVED = ("__proto__", "constructor", "prototype")
TEXT_CHARS = "abcxyz 019_-/~\"\\\u00e9\u65e5\u00ff\U0001f600\t\n\x00\x1f{}[]:,"
NASTY_LITERALS = ("NaN", "-Infinity", "Infinity", "1e400", "-1e400", "1" * 400, "-0", "01",
                  "1.", ".5", "0x10", "+1", "1e", "\"\\ud800\"", "\"\\udc00x\"", "tru",
                  "null null", "[1,]", "{\"a\":1,}", "\"\\x41\"", "'a'", "undefined", "")


class Frames:
    """Random frames for one connection (``fmt``: immer or json-patch)."""

    def __init__(self, seed: int, fmt: str) -> None:
        self.r = random.Random(seed)
        self.fmt = fmt
        self.ids = itertools.count(1)

    # -- valid pieces --------------------------------------------------------------------------

    def text(self, n: int = 6) -> str:
        return "".join(self.r.choice(TEXT_CHARS) for _ in range(self.r.randint(0, n)))

    def key(self) -> str:
        return self.r.choice(KEYS) if self.r.random() < 0.8 else self.text(4)

    def scalar(self) -> Any:
        r = self.r
        return r.choice([
            lambda: r.randint(-5, 5), lambda: r.randint(-MAX_SAFE, MAX_SAFE),
            lambda: r.uniform(-1e6, 1e6), lambda: r.random() < 0.5, lambda: None,
            lambda: self.text(), lambda: r.choice([0.5, -0.0, 1e-300, 1.7e308, 2**63, 2**64]),
        ])()

    def value(self, depth: int = 0) -> Any:
        roll = self.r.random()
        if depth >= 3 or roll < 0.6:
            return self.scalar()
        if roll < 0.8:
            return [self.value(depth + 1) for _ in range(self.r.randint(0, 3))]
        return {self.key(): self.value(depth + 1) for _ in range(self.r.randint(0, 3))}

    def path(self) -> list[Any]:
        r = self.r
        if r.random() < 0.03:
            return []
        head = r.choice([["gifts", r.randint(0, 3)], ["gifts", r.randint(0, 2), "name"],
                         ["gifts", r.randint(0, 2), "tags", r.randint(0, 2)], ["meta", self.key()],
                         ["meta", "flags", self.key()], [self.key()], ["title"]])
        return head if r.random() < 0.9 else [*head, self.key()]

    def pointer(self, path: list[Any]) -> str:
        tokens = [str(s).replace("~", "~0").replace("/", "~1") for s in path]
        if tokens and tokens[0] == "gifts" and len(tokens) == 2 and self.r.random() < 0.2:
            tokens[1] = "-"
        return "".join("/" + t for t in tokens)

    def op(self) -> dict[str, Any]:
        r = self.r
        path = self.path()
        if not path and r.random() < 0.9:  # a root replace: mostly back to a sane document
            value = copy.deepcopy(INITIAL) if r.random() < 0.8 else self.value()
            return {"op": "replace", "path": [] if self.fmt == "immer" else "", "value": value}
        if self.fmt == "immer":
            name = r.choice(["add", "add", "replace", "remove"])
            op: dict[str, Any] = {"op": name, "path": path}
            if name != "remove" or r.random() < 0.1:
                op["value"] = self.value()
            if name == "replace" and path and r.random() < 0.05:
                op["path"] = [*path[:-1], "length"]
                op["value"] = r.randint(0, 4)
            return op
        name = r.choice(["add", "add", "replace", "remove", "move", "copy", "test"])
        op = {"op": name, "path": self.pointer(path)}
        if name in ("add", "replace", "test"):
            op["value"] = self.value()
        if name in ("move", "copy"):
            op["from"] = self.pointer(self.path())
        return op

    def message(self) -> dict[str, Any]:
        n = next(self.ids)
        count = self.r.choice([0, 1, 1, 2, 3])
        msg: dict[str, Any] = {"type": "patch", "id": n if n % 2 else f"{self.fmt}-{n}",
                               "patches": [self.op() for _ in range(count)]}
        if self.r.random() < 0.1:
            msg["base"] = self.r.randint(0, 50)
        return msg

    # -- mutations -----------------------------------------------------------------------------

    def nasty(self) -> Any:
        r = self.r
        return r.choice([
            lambda: None, lambda: True, lambda: False, lambda: 0, lambda: -1, lambda: 1.5,
            lambda: MAX_SAFE, lambda: -MAX_SAFE, lambda: 2**64, lambda: 10**30,
            lambda: float("nan"), lambda: float("inf"), lambda: "",
            lambda: "x" * r.randint(129, 700),
            lambda: [], lambda: {}, lambda: [[[[[]]]]], lambda: {"a": {"b": {"c": {}}}},
            lambda: self.deep(r.randint(11, 60)), lambda: r.choice(RESERVED),
            lambda: {r.choice(RESERVED): 1}, lambda: [r.choice(RESERVED)],
            lambda: "k" * r.randint(33, 80), lambda: {"k" * r.randint(33, 80): 1},
            lambda: ["x"] * r.randint(33, 80), lambda: self.text(20), lambda: "patch",
            lambda: {"op": "add"}, lambda: [{"op": "add", "path": [], "value": 1}] * 40,
        ])()

    def deep(self, levels: int) -> Any:
        value: Any = 1
        for _ in range(levels):
            value = [value] if self.r.random() < 0.5 else {"d": value}
        return value

    def mutate(self, msg: dict[str, Any]) -> None:
        r = self.r
        patches = msg.get("patches")
        ops = [p for p in patches if isinstance(p, dict)] if isinstance(patches, list) else []
        choice = r.randrange(12)
        if choice == 0:
            msg[r.choice(["type", "id", "base", "patches"])] = self.nasty()
        elif choice == 1:
            msg.pop(r.choice(["type", "id", "patches"]), None)
        elif choice == 2 and ops:
            r.choice(ops)[r.choice(["op", "path", "value", "from"])] = self.nasty()
        elif choice == 3 and ops:
            r.choice(ops).pop(r.choice(["op", "path", "value", "from"]), None)
        elif choice == 4 and ops:
            op = r.choice(ops)
            if isinstance(op.get("path"), list) and op["path"]:
                op["path"][r.randrange(len(op["path"]))] = self.nasty()
            else:
                op["path"] = self.nasty()
        elif choice == 5 and isinstance(patches, list):
            patches.insert(r.randint(0, len(patches)), self.nasty())
        elif choice == 6:
            msg[r.choice((*RESERVED, "extra", "type2"))] = self.value()
        elif choice == 7 and ops:
            r.choice(ops)["value"] = {r.choice(RESERVED): self.value()}
        elif choice == 8 and ops:
            op = r.choice(ops)
            op["path"] = ([r.choice(RESERVED)] if self.fmt == "immer"
                          else "/" + r.choice(RESERVED))
        elif choice == 9:
            msg["patches"] = [self.op() for _ in range(r.randint(33, 60))]  # over --max-ops
        elif choice == 10 and ops:
            r.choice(ops)["value"] = self.deep(r.randint(12, 40))  # over --max-depth
        else:
            msg["id"] = r.choice([True, 1.0, -MAX_SAFE, MAX_SAFE, "i" * 128, "i" * 129, None,
                                  [1], {"id": 1}, -0, 2**63])

    def mutate_text(self, text: str) -> str:
        r = self.r
        if not text:
            return r.choice(NASTY_LITERALS)
        i = r.randrange(len(text))
        choice = r.randrange(9)
        if choice == 0:
            return text[:i]  # truncated
        if choice == 1:
            return text[:i] + text[i + 1:]
        if choice == 2:
            return text[:i] + r.choice("{}[]\",:\\ \x00\x7f\u2028") + text[i:]
        if choice == 3:
            return text[:i] + r.choice(NASTY_LITERALS) + text[i:]
        if choice == 4:  # a number replaced by something that is not a JSON number
            for digit in range(i, len(text)):
                if text[digit].isdigit():
                    return text[:digit] + r.choice(NASTY_LITERALS[:12]) + text[digit + 1:]
            return text + r.choice(NASTY_LITERALS)
        if choice == 5:
            return r.choice(["[", "{\"a\":"]) * (n := r.choice([100, 1023, 1024, 1025, 4000])) \
                + "1" + r.choice(["]", "}"]) * n
        if choice == 6:
            return "\ufeff" + text if r.random() < 0.5 else text + r.choice(["x", "}", " 1"])
        if choice == 7:
            return text.replace("\"patch\"", r.choice(["\"Patch\"", "\"patch \"", "\"ack\""]))
        return text[i:] + text[:i]

    def frame(self) -> str | bytes:
        r = self.r
        msg = self.message()
        roll = r.random()
        if roll < 0.3:  # a valid frame
            return json.dumps(msg)
        if roll < 0.7:  # wrong shapes and types
            for _ in range(r.randint(1, 3)):
                self.mutate(msg)
            text = json.dumps(msg)  # NaN and Infinity come out as the invalid literals
        elif roll < 0.85:
            text = self.mutate_text(json.dumps(msg))
        elif roll < 0.9:
            text = json.dumps(r.choice([msg["patches"], [msg], "patch", 1, None, self.value()]))
        elif roll < 0.95:  # binary frames: UTF-8 JSON, invalid UTF-8, random bytes
            data = json.dumps(msg).encode()
            return r.choice([data, data[: r.randrange(len(data))] + b"\xff\xfe" + data,
                             bytes(r.randrange(256) for _ in range(r.randint(0, 64))), b""])
        else:
            text = r.choice(NASTY_LITERALS) if r.random() < 0.5 else self.text(40)
        if len(text.encode()) > MAX_FRAME:  # oversized frames are sent separately
            text = json.dumps(self.message())
        return text


# -- the 100,000-frame run ---------------------------------------------------------------------


class Progress:
    """Frames sent so far over all connections; events at thresholds (to spread the
    interruptions over the run without sleeping)."""

    def __init__(self, total: int, marks: int) -> None:
        self.sent = 0
        self.marks = [(total * (i + 1) // (marks + 1), asyncio.Event()) for i in range(marks)]
        self.events = [event for _, event in self.marks]

    def advance(self) -> None:
        self.sent += 1
        while self.marks and self.sent >= self.marks[0][0]:
            self.marks.pop(0)[1].set()


async def pump(ws: ClientConnection, frames: Frames, ledger: Ledger, count: int,
               progress: Progress) -> None:
    """Send ``count`` frames, at most WINDOW unanswered at a time, reading every answer."""
    room = asyncio.Event()
    room.set()

    async def read() -> None:
        while ledger.sent < count or ledger.outstanding:
            data = await asyncio.wait_for(ws.recv(), timeout=30)
            for message in messages_of(data):
                ledger.take(message)
            if ledger.outstanding < WINDOW:
                room.set()

    async def write() -> None:
        for _ in range(count):
            if ledger.outstanding >= WINDOW:
                room.clear()
                await asyncio.wait_for(room.wait(), timeout=30)
            payload = frames.frame()
            ledger.sending(payload)
            await ws.send(payload)
            progress.advance()

    await asyncio.gather(read(), write())


async def until_type(ws: ClientConnection, kind: str) -> None:
    for _ in range(100_000):  # other connections' patches stream in meanwhile
        if any(m["type"] == kind for m in messages_of(await asyncio.wait_for(ws.recv(), 10))):
            return
    raise AssertionError(f"no {kind}")


async def interrupter(server: ServerProcess, progress: Progress, seed: int) -> list[int]:
    """On its own connection, at each progress mark, a frame that ends the connection: one
    byte over --max-frame-bytes (text, binary, or in fragments) -> 1009, a text frame that is
    not UTF-8 -> 1007. Each time it reconnects and checks the new connection is served."""
    r = random.Random(seed)
    codes = []
    for i, reached in enumerate(progress.events):
        await reached.wait()
        async with connect(server.ws_url(f"/ws/{DOC}"), max_size=None) as ws:
            await until_type(ws, "synced")
            await ws.send(json.dumps({"type": "hello"}))  # served before the bad frame
            await until_type(ws, "error")
            kind = i % 4
            big = "[" + " " * MAX_FRAME + "]"
            if kind == 0:
                await ws.send(big)
            elif kind == 1:
                await ws.send(big.encode())
            elif kind == 2:
                await ws.send([big[j:j + 4096] for j in range(0, len(big), 4096)])
            else:
                data = json.dumps({"type": "patch", "id": 1, "patches": []}).encode()
                cut = r.randrange(1, len(data))
                await ws.send(data[:cut] + r.choice([b"\xff", b"\xc3", b"\xed\xa0\x80"])
                              + data[cut:], text=True)
            try:
                for _ in range(100_000):
                    await asyncio.wait_for(ws.recv(), timeout=10)
            except ConnectionClosed as closed:
                assert closed.rcvd is not None, "closed without a close frame"
                codes.append(closed.rcvd.code)
    return codes


@pytest.mark.slow
def test_100k_mutated_frames(server_factory: ServerFactory, tmp_path: Path,
                             watchers: list[Watcher]) -> None:
    server = fuzz_server(server_factory, tmp_path)
    watcher = Watcher(server)
    watchers.append(watcher)
    per_connection = 50_000
    ledgers = [Ledger("immer"), Ledger("json-patch")]

    async def main() -> list[int]:
        progress = Progress(2 * per_connection, 8)
        immer = await connect(server.ws_url(f"/ws/{DOC}?client=fuzzer"), max_size=None)
        jp = await connect(server.ws_url(f"/ws/{DOC}?format=json-patch"), max_size=None)
        try:
            for ws, ledger in ((immer, ledgers[0]), (jp, ledgers[1])):
                while ledger.kinds["synced"] == 0:
                    for message in messages_of(await asyncio.wait_for(ws.recv(), 10)):
                        ledger.take(message)
            *_, codes = await asyncio.gather(
                pump(immer, Frames(1, "immer"), ledgers[0], per_connection, progress),
                pump(jp, Frames(2, "json-patch"), ledgers[1], per_connection, progress),
                interrupter(server, progress, 3),
            )
        finally:
            await immer.close()
            await jp.close()
        return codes

    started = time.monotonic()
    codes = asyncio.run(asyncio.wait_for(main(), timeout=240))
    elapsed = time.monotonic() - started
    for ledger in ledgers:
        ledger.settled()
    assert codes == [1009, 1009, 1009, 1007] * 2
    assert sum(ledger.sent for ledger in ledgers) >= 100_000
    version = check_final(server, ledgers, watcher)
    # the mix exercised every kind of answer
    kinds = ledgers[0].kinds + ledgers[1].kinds
    assert kinds["ack"] > 10_000 and kinds["reject"] > 10_000 and kinds["error"] > 10_000, kinds
    assert version > 5_000, version
    print(f"100k frames in {elapsed:.1f} s: {dict(kinds)}, {version} versions")


# -- Hypothesis: structured random frames, shrunk to a minimal failing list --------------------

_chars = st.characters(exclude_categories=("Cs",))
keys = st.one_of(st.sampled_from(KEYS), st.text(_chars, max_size=4))
json_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64),
              st.floats(allow_nan=False, allow_infinity=False), st.text(_chars, max_size=8)),
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(keys, c, max_size=3)),
    max_leaves=8,
)
junk: st.SearchStrategy[Any] = st.one_of(
    json_values, st.floats(), st.sampled_from(RESERVED), st.dictionaries(
        st.sampled_from(RESERVED), json_values, min_size=1, max_size=1),
    st.integers(13, 80).map(lambda n: [n] * n), st.integers(13, 40).map(
        lambda n: json.loads("[" * n + "]" * n)), st.text(_chars, min_size=33, max_size=600),
)


def branch(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``s`` as one branch of a ``one_of``: ``one_of`` flattens nested ``one_of`` (even through
    ``map``), so a union of seven strategies would otherwise be picked seven times as often."""
    return st.tuples(s).map(lambda t: t[0])


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(branch(good), branch(good), branch(bad))


valid_ids = st.one_of(st.integers(-MAX_SAFE + 1, MAX_SAFE - 1), st.text(_chars, max_size=128))
bad_ids = st.one_of(st.sampled_from([MAX_SAFE, -MAX_SAFE, 2**64, 1.0, True, None]),
                    st.text(_chars, min_size=129, max_size=140), junk)
segments = mostly(st.one_of(keys, st.integers(0, 3)),
                  st.one_of(st.sampled_from(RESERVED), st.integers(-2, -1), junk))
immer_ops = st.fixed_dictionaries(
    {"op": mostly(st.sampled_from(["add", "replace", "remove"]), junk),
     "path": mostly(st.lists(segments, max_size=4), junk)},
    optional={"value": mostly(json_values, junk)},
)
pointers = mostly(
    st.lists(st.one_of(keys, st.sampled_from(["-", "0", "1", "01", "~", "~2"])), max_size=4).map(
        lambda p: "".join("/" + s.replace("~", "~0").replace("/", "~1") for s in p)),
    st.one_of(st.text(_chars, max_size=8), st.sampled_from(["/~", "/~2", "a", "/__proto__"]),
              junk),
)
json_patch_ops = st.fixed_dictionaries(
    {"op": mostly(st.sampled_from(["add", "replace", "remove", "move", "copy", "test"]), junk),
     "path": pointers},
    optional={"value": mostly(json_values, junk), "from": pointers},
)


def patch_messages(ops: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Well-formed envelopes (answered ack or reject) around random patches."""
    return st.fixed_dictionaries(
        {"type": st.just("patch"), "id": valid_ids,
         "patches": mostly(st.lists(ops, max_size=5), junk)},
        optional={"base": mostly(st.integers(0, 100), st.one_of(st.integers(-2, -1), junk)),
                  "__proto__": json_values, "extra": junk},
    )


def bad_envelopes(ops: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Messages that are not valid patch messages (answered error): a wrong type, a wrong id,
    or a member missing."""
    good = patch_messages(ops)
    return st.one_of(
        st.builds(lambda m, t: {**m, "type": t}, good, junk.filter(lambda t: t != "patch")),
        st.builds(lambda m, i: {**m, "id": i}, good, bad_ids),
        st.builds(lambda m, drop: {k: v for k, v in m.items() if k != drop}, good,
                  st.sampled_from(["type", "id"])),
    )


def frames_for(ops: st.SearchStrategy[Any]) -> st.SearchStrategy[str | bytes]:
    as_text = patch_messages(ops).map(json.dumps)  # NaN, Infinity: invalid literals
    return st.one_of(*map(branch, [
        as_text, as_text, as_text,
        bad_envelopes(ops).map(json.dumps),
        st.text(_chars, max_size=40),
        st.binary(max_size=40),
        as_text.map(str.encode),
        junk.map(json.dumps),
        st.builds(lambda t, i, s: t[:i] + s + t[i:], as_text, st.integers(0, 200),
                  st.sampled_from(NASTY_LITERALS)),
        st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
    ]))


def exchange(ws: Any, ledger: Ledger, frames: list[str | bytes]) -> None:
    """Send the frames pipelined, then read until each has its answer."""
    for payload in frames:
        ledger.sending(payload)
        ws.send(payload)
    deadline = time.monotonic() + 30
    while ledger.outstanding:
        assert time.monotonic() < deadline, f"{ledger.outstanding} frames unanswered"
        for message in messages_of(ws.recv(timeout=10)):
            ledger.take(message)


def test_hypothesis_frames(server_factory: ServerFactory, tmp_path: Path,
                           watchers: list[Watcher]) -> None:
    """Each example is two fresh connections (Immer and JSON Patch formats) sending lists of
    frames pipelined: a failure shrinks to the fewest, simplest frames that break a rule."""
    server = fuzz_server(server_factory, tmp_path)
    watcher = Watcher(server)
    watchers.append(watcher)
    ledgers: list[Ledger] = []

    def run_frames(fmt: str, frames: list[str | bytes]) -> None:
        ledger = Ledger(fmt)
        with sync_connect(server.ws_url(f"/ws/{DOC}?format={fmt}"), max_size=None,
                          ping_interval=None) as ws:
            while ledger.kinds["synced"] == 0:
                for message in messages_of(ws.recv(timeout=10)):
                    ledger.take(message)
            exchange(ws, ledger, frames)
        ledger.settled()
        ledgers.append(ledger)

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(frames_for(immer_ops), max_size=12),
           st.lists(frames_for(json_patch_ops), max_size=12))
    def run(immer_frames: list[str | bytes], jp_frames: list[str | bytes]) -> None:
        run_frames("immer", immer_frames)
        run_frames("json-patch", jp_frames)

    run()
    assert sum(ledger.sent for ledger in ledgers) > 1000
    check_final(server, ledgers, watcher)
