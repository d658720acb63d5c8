"""Real Immer as the oracle: random producers in Node, the server must end where Immer ends.

``tests/oracle/immer_oracle.mjs`` runs ``produceWithPatches`` with random recipes over random
documents (see ``tests/oracle/mutations.mjs``), sends each batch over protocol 1 and, after
every ack, compares ``GET /docs/{doc}/state`` with ``JSON.parse(JSON.stringify(immerState))``.
A second connection applies the server's outgoing ``patch`` messages with Immer's own
``applyPatches`` and must reach the same document at every version. Everything it reports is a
JSON line; this module runs it for Immer 11 (with and without ``enableArrayMethods``) and for
Immer 9 (which emits array ``length`` patches) and fails on any mismatch or rejection: every
batch is produced by real Immer from a JSON document, so the server must accept all of them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import ServerFactory, ServerProcess
from .oracle.nodejs import ORACLE_DIR, dump, node_executable, parse_json_lines

pytestmark = pytest.mark.node

ORACLE = ORACLE_DIR / "immer_oracle.mjs"
# a few seconds per variant by default; for a long fuzz run, e.g.
#   IMMER_ORACLE_SEEDS=50 IMMER_ORACLE_FIRST_SEED=1000 IMMER_ORACLE_STEPS=1000 pytest ...
FIRST_SEED = int(os.environ.get("IMMER_ORACLE_FIRST_SEED", "1"))
SEEDS = range(FIRST_SEED, FIRST_SEED + int(os.environ.get("IMMER_ORACLE_SEEDS", "3")))
STEPS = int(os.environ.get("IMMER_ORACLE_STEPS", "300"))

VARIANTS: dict[str, list[str]] = {
    "immer11": ["--package", "immer"],
    "immer11-array-methods": ["--package", "immer", "--array-methods"],
    "immer9": ["--package", "immer9"],
}

# what every run must have sent at least once (counted by the script from the patches it sent,
# against the JSON document the server holds), so the generator cannot quietly lose coverage
EXPECTED_FEATURES = {
    "op:add",
    "op:remove",
    "op:replace",
    "root-replace-object",  # the first state, and recipes returning a new document
    "root-replace-other",  # a recipe returning an array or a primitive
    "array-element-without-value",  # arr[i] = undefined, push(undefined): null over JSON
    "member-add-without-value",  # obj.newKey = undefined
    "member-replace-without-value",  # obj.key = undefined
    "replace-absent-member",  # replace of a member that holds undefined in Immer
    "remove-absent-member",  # delete of a member that holds undefined in Immer
    "key-needing-escape",  # "a/b", "m~n", "~1"
    "key-like-index-or-empty",  # "0", "-", "" as object keys
    "non-ascii-key",
}
FAILURE_TYPES = {
    "mismatch",
    "reject",
    "observer_mismatch",
    "observer_format",
    "observer_apply",
    "protocol",
    "immer_inconsistent",
    "error",
}
HINTS = {
    "mismatch": "GET state differs from Immer's; replay: set the root to `before`, send `patches`",
    "reject": "the server rejected a batch real Immer produced from `before`",
    "observer_mismatch": "a client applying the server's patches with Immer diverged",
    "observer_format": "an outgoing Immer patch is malformed for the document it applies to",
    "observer_apply": "Immer's applyPatches threw on the server's outgoing patches",
    "protocol": "unexpected message or version",
    "immer_inconsistent": "Immer cannot replay its own patches: a generator problem, not the "
    "server's (tests/oracle/mutations.mjs)",
    "error": "the script failed",
}


def run_oracle(
    server: ServerProcess,
    variant: str,
    seeds: Sequence[int],
    steps: int,
    doc_prefix: str = "oracle",
) -> dict[str, Any]:
    """Run the oracle; fail with the reported mismatches, else return its summary."""
    timeout = 60.0 + 0.02 * len(seeds) * steps  # about 1.5 ms a step on a laptop
    cmd = [
        node_executable(),
        str(ORACLE),
        "--url",
        server.url,
        *VARIANTS[variant],
        "--seeds",
        ",".join(map(str, seeds)),
        "--steps",
        str(steps),
        "--doc-prefix",
        doc_prefix,
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the oracle ran over {timeout} s; output so far: {exc.stdout!r:.3000}")
    records = parse_json_lines(done.stdout)
    failures = [r for r in records if r.get("type") in FAILURE_TYPES]
    if failures:
        lines = [f"{len(failures)} seed(s) of {variant} failed:"]
        for record in failures[:3]:
            hint = HINTS.get(record["type"], "")
            lines.append(f"- {record['type']} (seed {record.get('seed')}, {hint}):")
            lines.append(f"  {dump(record, 6000)}")
        lines.append(f"server log tail:\n{server.log()[-3000:]}")
        pytest.fail("\n".join(lines))
    summaries = [r for r in records if r.get("type") == "summary"]
    if done.returncode != 0 or len(summaries) != 1:
        pytest.fail(
            f"the oracle exited with {done.returncode} and no summary;"
            f"\nstdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}"
        )
    summary = summaries[0]
    # every seed sends the first state plus `steps` batches, and each must be acknowledged
    assert summary["acked"] == len(seeds) * (steps + 1), summary
    return summary


# the oracle sends batches back to back: without a rate limit it needs no retries (it does
# honour `rate_limited` and `retry_after`, so it also runs against a default server)
NO_RATE_LIMIT = ("--rate", "0")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_server_follows_real_immer(server_factory: ServerFactory, variant: str) -> None:
    server = server_factory(*NO_RATE_LIMIT)
    summary = run_oracle(server, variant, seeds=SEEDS, steps=STEPS)
    missing = EXPECTED_FEATURES - summary["features"].keys()
    if variant == "immer9":
        missing |= {"array-length"} - summary["features"].keys()
    assert not missing, f"the generator no longer covers {sorted(missing)}: {summary['features']}"
    # the second client compared its state at every version the writer's batches made (a batch
    # that changes nothing JSON can see, like `obj.gone = undefined`, may make no version)
    assert summary["observerChecked"] == summary["versions"] > 0.9 * summary["acked"], summary


@pytest.mark.parametrize("variant", ["immer11", "immer9"])
def test_documents_built_by_real_immer_survive_a_restart(
    server_factory: ServerFactory, tmp_path: Path, variant: str
) -> None:
    """The same batches on the SQLite store (snapshots every 25 versions, the rest replayed
    from the log), then a restart: every document reads back exactly as before."""
    server = server_factory(
        "--snapshot-every", "25", *NO_RATE_LIMIT, store=f"sqlite:///{tmp_path}/oracle.db"
    )
    seeds = [7, 8]
    run_oracle(server, variant, seeds=seeds, steps=150)
    suffix = {"immer11": "immer", "immer9": "immer9"}[variant]
    docs = [f"oracle-{suffix}-{seed}" for seed in seeds]
    before = {doc: httpx.get(f"{server.url}/docs/{doc}/state") for doc in docs}
    server.restart()
    for doc, old in before.items():
        new = httpx.get(f"{server.url}/docs/{doc}/state")
        assert old.status_code == new.status_code == 200, (doc, old.text, new.text)
        assert new.headers["etag"] == old.headers["etag"], doc
        assert new.json() == old.json(), f"{doc} changed across a restart"
