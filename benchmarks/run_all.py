"""Run every benchmark: ``python -m benchmarks [--quick]`` or ``python benchmarks/run_all.py``.

Each benchmark writes ``results/NAME.json``, ``NAME.md`` (its tables) and ``NAME.png``; with
``--quick`` (a smoke check of a few seconds each) they go to ``results/quick/`` instead.
``--only replay_cost,fanout`` runs a subset.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks import (
    apply_throughput,
    contention,
    fanout,
    presence,
    replay_cost,
    scaleout,
    schema_cost,
    summary,
)

BENCHMARKS = {
    "replay_cost": replay_cost.run,
    "apply_throughput": apply_throughput.run,
    "fanout": fanout.run,
    "scaleout": scaleout.run,
    "schema_cost": schema_cost.run,
    "presence": presence.run,
    "contention": contention.run,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="run all benchmarks")
    parser.add_argument("--quick", action="store_true", help="smoke check: small sizes, short runs")
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    t0 = time.monotonic()
    for name in names:
        print(f"\n=== {name} ===\n", flush=True)
        BENCHMARKS[name](quick=args.quick)
    print("\n=== summary ===\n")
    summary.write(args.quick)
    print(f"\nall done in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
