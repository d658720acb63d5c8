"""Results: the machine, medians, tables on stdout, JSON and PNG files under ``results/``."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .harness import BENCH, node

RESULTS = BENCH / "results"


def results_dir(quick: bool) -> Path:
    """``results/`` for full runs; ``results/quick/`` (not committed) for smoke checks."""
    path = RESULTS / "quick" if quick else RESULTS
    path.mkdir(parents=True, exist_ok=True)
    return path


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    node_version = subprocess.run(
        [node(), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return {
        "server_revision": _revision(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 2**20, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "node": node_version,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def _revision() -> str:
    """The commit the benchmarked server comes from, "+changes" when server/ differs from it."""
    git = ["git", "-C", str(BENCH.parent)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "unknown"
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "server"], capture_output=True, text=True
    ).stdout.strip()
    return head.stdout.strip() + ("+changes" if dirty else "")


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}, "
        f"Python {m['python']}, Node {m['node']}; server at {m.get('server_revision', '?')}"
    )


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (also readable on a terminal)."""
    cells = [[fmt(c) for c in row] for row in rows]
    left = [isinstance(c, str) and not c[:1].isdigit() for c in (rows[0] if rows else [])]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "| " + " | ".join("-" * w for w in widths) + " |",
    ]
    for row in cells:
        padded = (
            c.ljust(w) if left[i] else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        lines.append("| " + " | ".join(padded) + " |")
    return "\n".join(lines)


SATURATED = 0.9  # CPU share of one core above which a process counts as saturated


def saturated_side(server: float | None, loadgen: float | None, other: float | None) -> str:
    """Which side limited a measurement, from the CPU (cores) each used during it."""
    sides = [
        name
        for name, cpu in (("server", server), ("load generator", loadgen))
        if cpu is not None and cpu >= SATURATED
    ]
    if sides:
        return " + ".join(sides)
    total = (server or 0.0) + (loadgen or 0.0) + (other or 0.0)
    if total >= SATURATED * (os.cpu_count() or 1):
        return "all cores busy (other processes too)"
    return "neither (latency-bound)"


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")


def write_text(path: Path, text: str) -> None:
    path.write_text(text if text.endswith("\n") else text + "\n")


def publish(out: Path, name: str, data: dict[str, Any], text: str, machine: dict[str, Any],
            plot: Any = None) -> None:
    """Write a benchmark's ``NAME.json``, ``NAME.md`` (its tables under the machine line) and,
    given a ``plot(path)``, ``NAME.png``."""
    write_json(out / f"{name}.json", data)
    write_text(out / f"{name}.md", f"Machine: {machine_line(machine)}\n\n{text}")
    if plot is not None:
        plot(out / f"{name}.png")
    print(f"\nwrote {out / name}.json, .md" + (", .png" if plot is not None else ""))


def new_figure(ncols: int, title: str, width: float = 6.0) -> tuple[Any, Any]:
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, 4.4), squeeze=False)
    fig.suptitle(title, fontsize=11)
    return fig, axes[0]


def save_figure(fig: Any, path: Path, footnote: str) -> None:
    fig.text(0.01, 0.01, footnote, fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
