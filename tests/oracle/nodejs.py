"""Running the Node test clients in ``tests/oracle`` from pytest.

The npm packages (immer, the immer9 alias, ws) come from ``client_demo/node_modules``; the
Makefile installs them. When Node or a package is missing the tests fail (never skip) and say
what to install.
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

import pytest

ORACLE_DIR = Path(__file__).resolve().parent
ROOT = ORACLE_DIR.parent.parent
NODE_MODULES = ROOT / "client_demo" / "node_modules"
REQUIRED_PACKAGES = ("immer", "immer9", "ws")
MIN_NODE_MAJOR = 20  # global fetch, AbortSignal.timeout

Event = dict[str, Any]


def node_executable() -> str:
    """The ``node`` binary, checked to be recent enough and to find the npm packages."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            f"Node.js (>= {MIN_NODE_MAJOR}) is not on PATH: these tests drive real Immer; "
            "install Node.js and run the Makefile's npm install (client_demo)."
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    if major < MIN_NODE_MAJOR:
        pytest.fail(f"Node.js {version.stdout.strip()} is too old: need >= {MIN_NODE_MAJOR}")
    missing = [p for p in REQUIRED_PACKAGES if not (NODE_MODULES / p / "package.json").is_file()]
    if missing:
        pytest.fail(
            f"npm packages {', '.join(missing)} are missing from {NODE_MODULES}: run "
            "`npm ci` in client_demo (the Makefile does)."
        )
    return node


def parse_json_lines(stdout: str) -> list[Event]:
    records = []
    for line in stdout.split("\n"):  # not splitlines(): JSON keeps U+2028 etc. unescaped
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a Node script printed a line that is not JSON: {line[:500]!r}")
    return records


def dump(value: Any, limit: int = 3000) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


class NodeClient:
    """A scripted Node client: JSON commands on its stdin, JSON events from its stdout.

    ``next(event)`` returns the next event of that name in the order the client emitted them;
    events of other names stay queued for their own ``next`` calls. Every wait has a timeout.
    """

    def __init__(self, script: str, *args: str, name: str = "client") -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [node_executable(), str(ORACLE_DIR / script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self._events: queue.Queue[Event | None] = queue.Queue()
        self._backlog: list[Event] = []
        self._stderr: list[str] = []
        self.history: list[Event] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                try:
                    self._events.put(json.loads(line))
                except json.JSONDecodeError:
                    self._events.put({"event": "garbage", "line": line})
        self._events.put(None)  # end of output

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def command(self, cmd: str, **fields: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.proc.stdin.flush()

    def next(self, event: str, timeout: float = 10.0) -> Event:
        for i, item in enumerate(self._backlog):
            if item.get("event") == event:
                return self._backlog.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                item = self._events.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                item = None
            if item is None and self.proc.poll() is None and self._events.empty():
                self._fail(f"timed out waiting for a {event!r} event")
            if item is None:
                self._events.put(None)  # keep end-of-output visible to later calls
                self._fail(f"exited while waiting for a {event!r} event")
            self.history.append(item)
            if item.get("event") in ("error", "garbage"):
                self._fail(f"reported {dump(item)}")
            if item.get("event") == event:
                return item
            self._backlog.append(item)

    def _fail(self, what: str) -> NoReturn:
        pytest.fail(
            f"{self.name}: {what}; last events: {dump(self.history[-10:])}; "
            f"stderr: {''.join(self._stderr)[-2000:]}"
        )

    def pending(self, event: str) -> list[Event]:
        """Events of that name already received and not yet taken (no waiting)."""
        while True:
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._events.put(None)
                break
            self.history.append(item)
            self._backlog.append(item)
        return [e for e in self._backlog if e.get("event") == event]

    def close(self) -> None:
        """Ask the client to close its socket and exit; kill it if it does not."""
        if self.proc.poll() is None:
            try:
                self.command("close")
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
