"""Processes under test: our server, the two relays and the Node clients.

Every server listens on 127.0.0.1 on a free port, is started as a subprocess and stopped (by its
own pid) when the ``with`` block ends. Readiness is ``GET /health`` for our server and a
``listening PORT`` line for the relays. Memory is RSS from ``/proc/PID/status``, CPU time from
``/proc/PID/stat``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
NODE_DIR = BENCH / "node"
RELAY_DIR = BENCH / "relay"
LOG_DIR = BENCH / "results" / "logs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        raise RuntimeError("node is not on PATH")
    return exe


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from ``/proc/stat``."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:8]) - idle) / tick, sum(fields[:8]) / tick


def busy_cores(seconds: float = 0.5) -> float:
    """How many cores the machine keeps busy over ``seconds`` (all processes)."""
    b0, t0 = system_busy()
    time.sleep(seconds)
    b1, t1 = system_busy()
    cores = os.cpu_count() or 1
    return cores * (b1 - b0) / max(t1 - t0, 1e-9)


# how long wait_for_quiet may wait each time, and in all (per process); --quick lowers them
QUIET_TIMEOUT = {"seconds": 60.0, "budget": 300.0}


def wait_for_quiet(limit: float = 0.25, timeout: float | None = None) -> float:
    """Wait until other processes keep under ``limit`` cores busy, so that runs do not share the
    CPU with unrelated work; returns the last background load seen (the results record it).
    Bounded: at most ``timeout`` s each time and ``QUIET_TIMEOUT["budget"]`` s in all."""
    if timeout is None:
        timeout = QUIET_TIMEOUT["seconds"]
    timeout = min(timeout, QUIET_TIMEOUT["budget"])
    start = time.monotonic()
    load = busy_cores()
    while load > limit and time.monotonic() - start < timeout:
        load = busy_cores(1.0)
    QUIET_TIMEOUT["budget"] = max(0.0, QUIET_TIMEOUT["budget"] - (time.monotonic() - start))
    return load


class Proc:
    """A server subprocess; ``url`` is its http://127.0.0.1:PORT."""

    def __init__(self, name: str, cmd: Sequence[str], port: int, log: Path) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.port = port
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to flush anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _spawn(name: str, cmd: Sequence[str], port: int) -> Proc:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    proc = Proc(name, cmd, port, LOG_DIR / f"{name}.log")
    _start(proc, "wb")
    return proc


def _start(proc: Proc, mode: str) -> None:
    log = proc.log_path.open(mode)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc.proc = subprocess.Popen(
        proc.cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, env=env
    )
    log.close()


def restart_our_server(proc: Proc) -> None:
    """Start a stopped or killed :func:`our_server` again, same command and port (its data
    store is kept), and wait until it is healthy."""
    if proc.proc is not None and proc.proc.poll() is None:
        raise RuntimeError(f"{proc.name} is still running")
    _start(proc, "ab")
    _wait(proc, lambda: _healthy(proc.url))


def _wait(proc: Proc, ready: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.proc is not None
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.proc.returncode}:\n{proc.log()}")
        if ready():
            return
        time.sleep(0.05)  # polling a process start-up
    proc.stop()
    raise RuntimeError(f"{proc.name} did not become ready:\n{proc.log()}")


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# every benchmark server: quiet, and no per-connection rate limit (we measure capacity)
BENCH_DEFAULTS = {"--log-level": "warning", "--rate": "0"}
_help: str | None = None


def supported(args: dict[str, str]) -> list[str]:
    """``args`` as a command line, keeping only the flags ``python -m server --help`` lists."""
    global _help
    if _help is None:
        _help = server_help()
    return [x for flag, value in args.items() if f"{flag} " in _help for x in (flag, value)]


@contextmanager
def our_server(name: str, args: Sequence[str] = (), **flags: str | int) -> Iterator[Proc]:
    """``python -m server`` on a free port with ``args`` (e.g. ``--store memory://``), plus
    ``flags`` (``retain_versions=N`` -> ``--retain-versions N``) and :data:`BENCH_DEFAULTS`
    where the server has those flags."""
    port = free_port()
    optional = {**BENCH_DEFAULTS, **{"--" + k.replace("_", "-"): str(v) for k, v in flags.items()}}
    cmd = [
        sys.executable,
        "-m",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args,
        *supported(optional),
    ]
    proc = _spawn(name, cmd, port)
    try:
        _wait(proc, lambda: _healthy(proc.url))
        yield proc
    finally:
        proc.stop()


@contextmanager
def _relay(name: str, cmd: Callable[[int], list[str]]) -> Iterator[Proc]:
    """A relay listening on a free port (``cmd(port)``), ready once the port accepts."""
    port = free_port()
    proc = _spawn(name, cmd(port), port)
    try:
        _wait(proc, lambda: _port_open(port))
        yield proc
    finally:
        proc.stop()


def lesson_relay(name: str = "lesson-relay", per_message: bool = False
                 ) -> AbstractContextManager[Proc]:
    """The lesson relay; ``per_message``: a newcomer gets each stored message as its own frame."""
    flags = ["--per-message"] if per_message else []
    return _relay(name, lambda port: [node(), str(RELAY_DIR / "lesson_relay.mjs"), str(port),
                                      "--exit-with-stdin", *flags])


def state_frame_server(state: Path, name: str = "state-frame") -> AbstractContextManager[Proc]:
    """A Node server sending each connection ``state`` as one frame: the network floor of a join
    (``relay/state_frame_server.mjs``)."""
    return _relay(name, lambda port: [node(), str(RELAY_DIR / "state_frame_server.mjs"),
                                      str(port), str(state), "--exit-with-stdin"])


def starlette_relay(name: str = "starlette-relay") -> AbstractContextManager[Proc]:
    return _relay(name, lambda port: [sys.executable, str(RELAY_DIR / "starlette_relay.py"),
                                      "--port", str(port)])


def run_node(script: str, opts: dict[str, Any], timeout: float = 1800.0) -> dict[str, Any]:
    """Run ``benchmarks/node/SCRIPT`` with ``opts`` (JSON) and parse its one-line JSON output."""
    cmd = [node(), str(NODE_DIR / script), json.dumps(opts)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=timeout, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(
            f"{script} gave no result (rc {done.returncode}):\n{done.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    if "error" in result:
        raise RuntimeError(f"{script}: {result['error']}\n{done.stderr[-2000:]}")
    return result


def server_help() -> str:
    """``python -m server --help``, to adapt to the flags that exist."""
    done = subprocess.run(
        [sys.executable, "-m", "server", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout + done.stderr
