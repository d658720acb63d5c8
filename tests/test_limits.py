"""Input limits against a real server: frame/body size (1009 / 413), operations, depth, strings,
keys and document size (``too_large``), and the per-connection rate limit (``rate_limited``).

A refused batch is always answered (never dropped) and leaves the document as it was. Batches
built to make the server do far more work than their size suggests are refused within bounded
memory (peak RSS of the server process, ``VmHWM``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from .clients import Message, WsClient, closed_with, joined
from .conftest import ServerFactory, ServerProcess

MAX_FRAME, MAX_OPS, MAX_DEPTH, MAX_STRING, MAX_KEY, MAX_DOC = 4096, 5, 4, 16, 8, 2000
LIMITS = ("--max-frame-bytes", str(MAX_FRAME), "--max-ops", str(MAX_OPS),
          "--max-depth", str(MAX_DEPTH), "--max-string-bytes", str(MAX_STRING),
          "--max-key-bytes", str(MAX_KEY), "--max-document-bytes", str(MAX_DOC), "--rate", "0")
JSON_PATCH = {"content-type": "application/json-patch+json"}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with small limits for this module; each test uses its own documents."""
    tmp = tmp_path_factory.mktemp("limits")
    server = ServerProcess(["--store", "memory://", *LIMITS], tmp / "server.log")
    server.start()
    yield server
    server.stop()


def answer(client: WsClient, msg_id: Any, patches: list[Any], base: int | None = None) -> Message:
    """Send a batch and return its ack or reject."""
    client.patch(msg_id, patches, base)
    return client.until(lambda m: m["type"] in ("ack", "reject") and m.get("id") == msg_id)


def refused(client: WsClient, msg_id: Any, patches: list[Any]) -> str:
    msg = answer(client, msg_id, patches)
    assert msg["type"] == "reject", (msg_id, msg)
    assert msg["error"]["message"]
    return str(msg["error"]["code"])


def state_of(server: ServerProcess, doc: str) -> tuple[int, Any]:
    r = httpx.get(f"{server.url}/docs/{doc}/state")
    assert r.status_code == 200, r.text
    return int(r.headers["etag"].removeprefix("W/").strip('"')), r.json()


def depth(value: Any) -> int:
    """0 for a scalar, 1 for a flat array or object."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def peak_rss_kib(server: ServerProcess) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/PID/status")


def padded_frame(client: WsClient, msg_id: int, size: int) -> str:
    """A valid patch message of exactly ``size`` bytes (JSON whitespace as padding)."""
    patches = [{"op": "add", "path": ["n"], "value": msg_id}]
    client.sent[msg_id] = patches  # what the client's replica applies on the ack
    text = json.dumps({"type": "patch", "id": msg_id, "patches": patches})
    assert len(text) <= size
    return text + " " * (size - len(text))


# -- frame and body size -----------------------------------------------------------------------


def test_frame_over_the_limit_closes_1009_and_changes_nothing(limited: ServerProcess) -> None:
    with joined(limited, "/ws/frame") as c:
        c.send(padded_frame(c, 1, MAX_FRAME))  # exactly at the limit: read and applied
        assert c.expect("ack")["version"] == 1
        c.send(padded_frame(c, 2, MAX_FRAME + 1))
        assert closed_with(c) == 1009
    with joined(limited, "/ws/frame") as c:  # a binary frame is measured the same way
        assert c.version == 1
        c.ws.send(padded_frame(c, 3, MAX_FRAME + 1).encode())
        assert closed_with(c) == 1009
    with joined(limited, "/ws/frame") as c:  # so is a message sent in small fragments
        # Only the last fragment crosses the limit: had the client more to send after the
        # server's close, the server's socket would close with unread input and reset the
        # connection (TCP RST), which can discard the close frame before the client reads it.
        fragments = padded_frame(c, 4, MAX_FRAME + 1)
        try:
            c.ws.send(iter([fragments[i:i + 512] for i in range(0, len(fragments), 512)]))
        except ConnectionClosed as closed:
            # websockets ends a fragmented message with an empty final frame: the server's
            # close may arrive before the client sends it, and then the send is refused
            assert closed.rcvd is not None and closed.rcvd.code == 1009, closed
        else:
            assert closed_with(c) == 1009
    with joined(limited, "/ws/frame") as c:  # the connection can be reopened
        assert c.state == {"n": 1} and c.version == 1
        assert answer(c, 5, [{"op": "replace", "path": ["n"], "value": 5}])["version"] == 2
    assert state_of(limited, "frame") == (2, {"n": 5})
    assert httpx.get(f"{limited.url}/health").status_code == 200


def test_http_body_over_the_limit_is_413(limited: ServerProcess) -> None:
    url = f"{limited.url}/docs/body/state"
    patch = json.dumps([{"op": "add", "path": ["n"], "value": 1}])
    r = httpx.patch(url, content=patch + " " * (MAX_FRAME - len(patch)),
                    headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    r = httpx.patch(url, content=patch + " " * (MAX_FRAME + 1 - len(patch)),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert state_of(limited, "body") == (1, {"n": 1})


def test_chunked_http_body_is_refused_without_buffering_it(
    server_factory: ServerFactory,
) -> None:
    """A body without Content-Length must be cut off at --max-frame-bytes, not read whole into
    memory and measured afterwards."""
    server = server_factory("--max-frame-bytes", "65536")
    before = peak_rss_kib(server)
    chunk = b" " * (1 << 20)

    def body() -> Iterator[bytes]:
        yield b"["
        for _ in range(96):
            yield chunk
        yield b"]"

    try:
        r = httpx.patch(f"{server.url}/docs/chunked/state", content=body(),
                        headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    except httpx.TransportError:
        pass  # the server may cut the upload short, which is fine
    growth_mib = (peak_rss_kib(server) - before) / 1024
    assert growth_mib < 32, f"the server buffered the body: peak RSS grew {growth_mib:.0f} MiB"
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert state_of(server, "chunked") == (0, {})


# -- operations, depth, strings, keys ----------------------------------------------------------


def test_max_ops(limited: ServerProcess) -> None:
    adds = [{"op": "add", "path": [f"k{i}"], "value": i} for i in range(MAX_OPS + 1)]
    with joined(limited, "/ws/ops") as c:
        assert answer(c, 1, adds[:MAX_OPS])["version"] == 1
        assert refused(c, 2, [{"op": "replace", "path": ["k0"], "value": -1}] * (MAX_OPS + 1)) \
            == "too_large"
    with joined(limited, "/ws/ops?format=json-patch") as jp:
        ops = [{"op": "test", "path": "/k0", "value": 0}] * (MAX_OPS + 1)
        assert refused(jp, 3, ops) == "too_large"
    r = httpx.patch(f"{limited.url}/docs/ops/state", json=adds)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert state_of(limited, "ops") == (1, {f"k{i}": i for i in range(MAX_OPS)})


def test_array_length_cannot_bypass_max_ops(limited: ServerProcess) -> None:
    """Immer's array ``length`` patch expands to one operation per element: one operation in
    the frame must not become more than --max-ops operations in the log and broadcast."""
    url = f"{limited.url}/docs/len/state"
    with joined(limited, "/ws/len") as watcher:
        assert httpx.patch(url, json=[{"op": "add", "path": ["a"], "value": []}]).status_code \
            == 200
        assert watcher.expect("patch")["version"] == 1
        r = httpx.patch(url, json=[{"op": "replace", "path": ["a", "length"],
                                    "value": 10 * MAX_OPS}])
        if r.status_code != 200:
            assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
            assert state_of(limited, "len") == (1, {"a": []})
        else:
            sent = watcher.expect("patch")["patches"]
            assert len(sent) <= MAX_OPS, f"one operation became {len(sent)} (--max-ops 5)"


def test_array_length_bomb_is_refused_in_bounded_memory(server_factory: ServerFactory) -> None:
    """A 60-byte frame asking for a 300,000-element array must be refused against
    --max-document-bytes before the server materialises it."""
    server = server_factory("--max-document-bytes", "100000")
    with joined(server, "/ws/bomb") as c:
        assert answer(c, 1, [{"op": "add", "path": ["a"], "value": []}])["version"] == 1
        before = peak_rss_kib(server)
        c.patch(2, [{"op": "replace", "path": ["a", "length"], "value": 300_000}])
        msg = c.until(lambda m: m.get("id") == 2, timeout=60)
        assert msg["type"] == "reject" and msg["error"]["code"] == "too_large", msg
        growth_mib = (peak_rss_kib(server) - before) / 1024
        assert growth_mib < 32, f"peak RSS grew {growth_mib:.0f} MiB for one 60-byte frame"
    assert state_of(server, "bomb") == (1, {"a": []})


def test_copy_amplification_is_bounded(server_factory: ServerFactory) -> None:
    """RFC 6902 ``copy`` repeated in one batch: each operation duplicates a large value. The
    document stays within its limit (the copies overwrite each other), so only a bound on
    the work of a batch stops a 15 KB frame from costing hundreds of MiB."""
    server = server_factory("--max-document-bytes", "1000000")
    big = [f"item-{i:06d}-" + "x" * 20 for i in range(5000)]  # ~150 KB of JSON
    assert httpx.patch(f"{server.url}/docs/amp/state",
                       json=[{"op": "add", "path": ["a"], "value": big}]).status_code == 200
    with joined(server, "/ws/amp?format=json-patch") as c:
        before = peak_rss_kib(server)
        copies = [{"op": "copy", "from": "/a", "path": "/b"}] * 400
        c.patch(1, copies)
        msg = c.until(lambda m: m.get("id") == 1, timeout=60)
        assert msg["type"] in ("ack", "reject"), msg
        growth_mib = (peak_rss_kib(server) - before) / 1024
        assert growth_mib < 64, f"peak RSS grew {growth_mib:.0f} MiB for a 15 KB frame"
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_max_depth(limited: ServerProcess) -> None:
    def nested(levels: int) -> Any:
        value: Any = 1
        for _ in range(levels):
            value = [value]
        return value

    with joined(limited, "/ws/depth") as c:
        # path + value reach exactly --max-depth
        assert answer(c, 1, [{"op": "add", "path": ["a"], "value": nested(MAX_DEPTH - 1)}]
                      )["type"] == "ack"
        assert refused(c, 2, [{"op": "add", "path": ["b"], "value": nested(MAX_DEPTH + 3)}]) \
            == "too_large"
        assert refused(c, 3, [{"op": "add", "path": ["b"], "value": nested(MAX_DEPTH)}]) \
            == "too_large"
        assert refused(c, 4, [{"op": "add", "path": ["a", 0, 0, 0, 0], "value": 1}]) \
            == "too_large"
        obj = {"x": {"y": {"z": {"w": 1}}}}
        assert refused(c, 5, [{"op": "add", "path": ["c"], "value": obj}]) == "too_large"
    with joined(limited, "/ws/depth?format=json-patch") as jp:
        # copy and move must not nest a value deeper than where it was checked
        assert refused(jp, "copy", [{"op": "copy", "from": "/a", "path": "/a/0/0"}]) \
            == "too_large"
        assert refused(jp, "move", [{"op": "add", "path": "/m", "value": {}},
                                    {"op": "move", "from": "/a", "path": "/m/a"}]) == "too_large"
    r = httpx.patch(f"{limited.url}/docs/depth/state", content=json.dumps(
        [{"op": "add", "path": "/d", "value": nested(MAX_DEPTH + 1)}]), headers=JSON_PATCH)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    version, state = state_of(limited, "depth")
    assert depth(state) <= MAX_DEPTH, f"the document nests {depth(state)} levels"
    assert state["a"] == nested(MAX_DEPTH - 1) and version == 1


def test_max_string_and_key_bytes_ascii(limited: ServerProcess) -> None:
    with joined(limited, "/ws/str") as c:
        assert answer(c, 1, [{"op": "add", "path": ["s"], "value": "x" * MAX_STRING}]
                      )["type"] == "ack"
        assert answer(c, 2, [{"op": "add", "path": ["k" * MAX_KEY], "value": 1}])["type"] == "ack"
        cases = {
            "long string": [{"op": "add", "path": ["t"], "value": "x" * (MAX_STRING + 1)}],
            "nested string": [{"op": "add", "path": ["t"], "value": {"a": ["x" * 99]}}],
            "long path key": [{"op": "add", "path": ["k" * (MAX_KEY + 1)], "value": 1}],
            "long value key": [{"op": "add", "path": ["t"], "value": {"k" * (MAX_KEY + 1): 1}}],
        }
        for name, patches in cases.items():
            assert refused(c, name, patches) == "too_large", name
    with joined(limited, "/ws/str?format=json-patch") as jp:
        assert refused(jp, 3, [{"op": "add", "path": "/" + "k" * (MAX_KEY + 1), "value": 1}]) \
            == "too_large"
        assert refused(jp, 4, [{"op": "test", "path": "/s", "value": "y" * 100}]) == "too_large"
    assert state_of(limited, "str") == (2, {"s": "x" * MAX_STRING, "k" * MAX_KEY: 1})


def test_max_string_and_key_bytes_count_utf8_bytes(limited: ServerProcess) -> None:
    """The limits are in bytes (--max-string-bytes, --max-key-bytes): a string of 9 'é' is 18
    bytes of UTF-8, over a 16-byte limit, though only 9 characters."""
    with joined(limited, "/ws/utf8") as c:
        assert answer(c, 1, [{"op": "add", "path": ["ok"], "value": "é" * (MAX_STRING // 2)}]
                      )["type"] == "ack"
        cases = {
            "2-byte string": [{"op": "add", "path": ["s"], "value": "é" * (MAX_STRING // 2 + 1)}],
            "4-byte string": [{"op": "add", "path": ["s"], "value": "😀" * 5}],
            "2-byte key": [{"op": "add", "path": ["é" * (MAX_KEY // 2 + 1)], "value": 1}],
            "4-byte value key": [{"op": "add", "path": ["s"], "value": {"😀" * 3: 1}}],
        }
        for name, patches in cases.items():
            assert refused(c, name, patches) == "too_large", name
    assert state_of(limited, "utf8") == (1, {"ok": "é" * (MAX_STRING // 2)})


# -- document size -----------------------------------------------------------------------------


def test_max_document_bytes(limited: ServerProcess) -> None:
    url = f"{limited.url}/docs/size/state"
    with joined(limited, "/ws/size") as c:
        rejected = None
        for i in range(200):  # ~ 40 bytes a batch: full after ~50
            msg = answer(c, i, [{"op": "add", "path": [f"k{i:03d}"], "value": "v" * 16}])
            if msg["type"] == "reject":
                rejected = msg
                break
        assert rejected is not None, "the document never filled up"
        assert rejected["error"]["code"] == "too_large"
        version, state = state_of(limited, "size")
        assert rejected["version"] == version and f"k{i:03d}" not in state
        size = len(json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode())
        assert size <= MAX_DOC, f"the document holds {size} bytes"
        assert MAX_DOC - size < 100, "refused well before the limit"
        # nothing of a refused batch is kept, even its operations that fit
        assert refused(c, "mixed", [{"op": "remove", "path": ["k000"]},
                                    {"op": "add", "path": ["big"], "value": ["v" * 16] * 20}]
                       ) == "too_large"
        assert refused(c, "root", [{"op": "replace", "path": [],
                                    "value": {"a": ["v" * 16] * 150}}]) == "too_large"
        r = httpx.patch(url, json=[{"op": "add", "path": ["more"], "value": ["v" * 16] * 10}])
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        assert state_of(limited, "size") == (version, state)
        # making room lets writes through again
        assert answer(c, "free", [{"op": "remove", "path": ["k000"]},
                                  {"op": "remove", "path": ["k001"]}])["type"] == "ack"
        assert answer(c, "again", [{"op": "add", "path": ["new"], "value": 1}])["type"] == "ack"
        assert c.state == state_of(limited, "size")[1]


# -- rate limit --------------------------------------------------------------------------------


def test_rate_limit_answers_every_frame(server_factory: ServerFactory) -> None:
    server = server_factory("--rate", "10", "--burst", "5")
    with joined(server, "/ws/rate") as c:
        n = 40
        for i in range(n):  # pipelined: far faster than 10 a second
            c.patch(i, [{"op": "add", "path": [f"k{i}"], "value": i}])
        answers: dict[int, Message] = {}
        while len(answers) < n:
            msg = c.until(lambda m: m["type"] in ("ack", "reject"))
            assert msg["id"] not in answers, f"answered twice: {msg}"
            answers[msg["id"]] = msg
        acked = sorted(i for i, m in answers.items() if m["type"] == "ack")
        limited = [m for m in answers.values() if m["type"] == "reject"]
        assert 5 <= len(acked) < n, acked
        assert all(m["error"]["code"] == "rate_limited" for m in limited), limited
        retry = [m["error"]["retry_after"] for m in limited]
        assert all(isinstance(r, int | float) and 0 < r <= 1 for r in retry), retry
        assert state_of(server, "rate")[1] == {f"k{i}": i for i in acked}
        # retry_after is the backoff the protocol asks for: honouring it is not a race
        time.sleep(max(retry))
        assert answer(c, "later", [{"op": "add", "path": ["later"], "value": 1}])["type"] \
            == "ack"
    assert c.state == state_of(server, "rate")[1]


def test_retry_after_is_positive_for_sub_millisecond_waits(
    server_factory: ServerFactory,
) -> None:
    """At 2500 batches a second a token comes every 0.4 ms: a client told ``retry_after: 0``
    retries at once and is refused again."""
    server = server_factory("--rate", "2500", "--burst", "1")
    with joined(server, "/ws/fast") as c:
        n = 200
        for i in range(n):
            c.patch(i, [])
        seen = 0
        rejects = []
        while seen < n:
            msg = c.until(lambda m: m["type"] in ("ack", "reject"))
            seen += 1
            if msg["type"] == "reject":
                rejects.append(msg["error"])
        assert rejects, "no batch was rate limited: the test needs a faster burst"
        assert all(e["code"] == "rate_limited" for e in rejects)
        zero = [e for e in rejects if not e["retry_after"] > 0]
        assert not zero, f"{len(zero)} of {len(rejects)} rejects say retry_after {zero[0]}"
