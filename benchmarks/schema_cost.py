"""schema_cost: what ``--schema`` costs per batch on a 1 MB document.

With a schema, every batch's result is validated as a whole (fastjsonschema, compiled once)
before it is kept. This measures, in process, the time of one small batch applied to a
document of about 1 KB, 100 KB and 1 MB (``apply_throughput``'s documents) without and with a
schema describing it, and the validation alone.

    python -m benchmarks.schema_cost [--quick]
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import fastjsonschema

from server.config import Limits
from server.document import Document
from server.patches import parse_immer
from server.schema import SchemaRule, checker

from . import report, workloads

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "title", "done", "n"],
                "properties": {
                    "id": {"type": "integer", "minimum": 0},
                    "title": {"type": "string", "maxLength": 200},
                    "done": {"type": "boolean"},
                    "n": {"type": "integer"},
                },
                "additionalProperties": False,
            },
        }
    },
}
SIZES = {"1 KB": 1_000, "100 KB": 100_000, "1 MB": 1_000_000}


def per_batch_ms(size: int, schema: bool, batches: int) -> float:
    doc = workloads.sized_doc(size)
    count = len(doc["items"])
    rule = SchemaRule("*", "bench", fastjsonschema.compile(SCHEMA))
    check = checker((rule,), "doc") if schema else None
    document = Document(doc)
    limits = Limits()
    rng = random.Random(5)
    ops = [parse_immer(workloads.small_edit(count, i + 1, rng), limits) for i in range(batches)]
    start = time.perf_counter()
    for batch in ops:
        document.apply(batch, None, check)
    return 1000 * (time.perf_counter() - start) / batches


def validate_ms(size: int, rounds: int) -> float:
    doc = workloads.sized_doc(size)
    validate = fastjsonschema.compile(SCHEMA)
    start = time.perf_counter()
    for _ in range(rounds):
        validate(doc)
    return 1000 * (time.perf_counter() - start) / rounds


def run(quick: bool = False, runs: int = 5) -> dict[str, Any]:
    runs = 1 if quick else runs
    machine = report.machine()
    rows = []
    for name, size in SIZES.items():
        batches = max(20, 2_000_000 // size) if not quick else 10
        plain = report.median([per_batch_ms(size, False, batches * 5) for _ in range(runs)])
        checked = report.median([per_batch_ms(size, True, batches) for _ in range(runs)])
        alone = report.median([validate_ms(size, batches) for _ in range(runs)])
        rows.append({"size": name, "batch_ms": plain, "batch_with_schema_ms": checked,
                     "validate_ms": alone, "batches_per_s_with_schema": 1000 / checked})
    text = "\n".join([
        f"Machine: {report.machine_line(machine)}", "",
        report.table(
            ["document", "batch, no schema (ms)", "batch with schema (ms)",
             "validation alone (ms)", "batches/s with schema (one core)"],
            [[r["size"], report.fmt(r["batch_ms"]), report.fmt(r["batch_with_schema_ms"]),
              report.fmt(r["validate_ms"]), report.fmt(r["batches_per_s_with_schema"])]
             for r in rows]),
    ])
    print(text)
    out = report.results_dir(quick)
    report.publish(out, "schema_cost", {"machine": machine, "results": rows}, text, machine)
    return {"machine": machine, "results": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="cost of --schema validation per batch")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    run(quick=args.quick)


if __name__ == "__main__":
    main()
