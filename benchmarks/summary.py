"""``results/SUMMARY.md``: every target of the issue and how far it is, from the JSON results.

python -m benchmarks.summary [--quick]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from . import report


def _load(out: Path, name: str) -> dict[str, Any] | None:
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _value(v: dict[str, Any]) -> str:
    if v.get("measured") is None:
        return "-"
    return f"{report.fmt(v['measured'])} {v.get('unit', '')}".strip()


def build(out: Path) -> str:
    rows: list[list[Any]] = []
    machines: dict[str, str] = {}
    replay = _load(out, "replay_cost")
    if replay:
        machines["replay_cost"] = (
            f"{report.machine_line(replay['machine'])} ({replay['machine']['date']})"
        )
        for v in replay["targets"]:
            rows.append(["replay_cost", f"{v['workload']}: {v['target']}", _value(v), v["how_far"]])
    apply = _load(out, "apply_throughput")
    if apply:
        machines["apply_throughput"] = (
            f"{report.machine_line(apply['machine'])} ({apply['machine']['date']})"
        )
        for v in apply["targets"]:
            by = v.get("by_writers", {})
            detail = ", ".join(f"{w} writers: {report.fmt(x)}/s" for w, x in by.items())
            rows.append(
                [
                    "apply_throughput",
                    v["target"],
                    f"{report.fmt(v.get('measured'))}/s ({detail})",
                    v["how_far"],
                ]
            )
    fanout = _load(out, "fanout")
    if fanout:
        machines["fanout"] = (
            f"{report.machine_line(fanout['machine'])} ({fanout['machine']['date']})"
        )
        for v in fanout["targets"]:
            rows.append(["fanout", v["target"], f"{v['measured']:.2f} {v['unit']}", v["how_far"]])
    contention = _load(out, "contention")
    if contention:
        machines["contention"] = (
            f"{report.machine_line(contention['machine'])} ({contention['machine']['date']})"
        )
        for v in contention["targets"]:
            rows.append(["contention", v["target"], _value(v), v["how_far"]])
    lines = ["# Benchmark targets: latest results", ""]
    for name, m in machines.items():
        lines.append(f"- `{name}`: {m}")
    lines += ["", report.table(["benchmark", "target", "measured", "status"], rows), ""]
    return "\n".join(lines)


def write(quick: bool = False) -> Path:
    out = report.results_dir(quick)
    path = out / "SUMMARY.md"
    text = build(out)
    report.write_text(path, text)
    print(text)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="summarize the targets from results/*.json")
    parser.add_argument("--quick", action="store_true", help="summarize results/quick/")
    args = parser.parse_args(argv)
    write(args.quick)


if __name__ == "__main__":
    main()
