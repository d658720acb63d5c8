"""What became of every change of a contention run: pure functions, no IO.

Input: the workload's initial document, the final document (``GET /state``) and the driver's
result (per client, every change it made: tag, kind, target, effect, outcome, ack version).
Every change made is exactly one of:

- **present**: its effect is in the final document;
- **superseded**: its effect is legitimately gone: a later committed change undid it (a
  removal of its gift, a later committed toggle of the same gift, a later committed write of
  the same field), or the client dropped it as a no-op because on newer state it changed
  nothing (its gift was removed, or reserved by someone else, in the meantime);
- **dropped**: anything else: made but absent and not legitimately removed. ``reported`` says
  how many of the dropped changes the client reported through ``onError``; the others were
  lost silently;
- **pending**: would be dropped, but the client still held it, unsettled, when the settle
  timeout ran out (a backlog, not a loss; the row is then not converged).

Per workload ("committed" = acknowledged to the client that made it, at a version V; the
server's order of committed changes is the order of their versions, and within a squashed batch
(several changes of one client acknowledged together as one version) their ``index`` in it):

- (a) ``append`` pushes ``{id: tag}``: present if its tag is in ``items``; every occurrence
  beyond the first is a duplicate; otherwise dropped.
- (b) ``gifts``, gift ids unique. *append* of gift ``tag``: present if the gift is there (extra
  copies are duplicates); superseded if absent and a committed removal targeted it; otherwise
  dropped. *remove* of gift g: dropped if g is still there; present if g is gone and this
  removal was committed; superseded if g is gone and it was not (someone else's removal of g
  was). *toggle* of gift g (reserve when free, release when held, as the demo does): if g is
  gone, superseded when a committed removal targeted it; if g is there, the committed toggles of
  g ordered by version decide: the last one is present if g's ``reservedBy`` is what it did
  (its user for a reserve, absent for a release) and dropped otherwise; earlier committed ones
  are superseded; a toggle the client dropped as a no-op is superseded; one it reported or
  never settled is dropped (pending if the client still held it).
- (c) ``field`` sets ``title`` to its tag: the change whose tag is the final ``title`` is
  present; committed writes before it (lower versions; all of them when its own ack had not
  arrived at the settle timeout) are superseded, committed writes after it are dropped, writes
  never committed are dropped (reported or not; pending if still held).

Anomalies (should never happen; listed in ``problems``): items, gifts or reservations in the
final document that no change explains, initial gifts gone without a committed removal, two
committed changes acknowledged with the same version and index, changes reported through ``onError``
that were committed anyway. When a run did not settle in time (``converged`` false), effects
the server committed whose ``ack`` had not arrived yet can show up as anomalies too.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

Change = dict[str, Any]
OUTCOMES = ("present", "superseded", "dropped", "pending")


def canonical_hash(doc: Any) -> str:
    """SHA-256 of ``doc`` as JSON with sorted keys: the driver's ``stateHash`` of a state."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def percentile(values: Iterable[float], p: float) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def order(c: Change) -> tuple[int, int]:
    """A committed change's place in the server's history: its version, its index in its batch."""
    return (c["version"], c.get("index") or 0)


def changes_of(result: dict[str, Any]) -> list[Change]:
    """Every change of a run, each with its ``user``."""
    return [{**c, "user": client["user"]} for client in result["clients"]
            for c in client["changes"]]


class _Tally:
    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.by_kind: dict[str, Counter[str]] = {}
        self.reported = 0
        self.duplicated = 0
        self.problems: list[str] = []
        self.dropped: list[Change] = []

    def count(self, change: Change, outcome: str) -> None:
        if outcome == "dropped" and change["outcome"] == "pending":
            outcome = "pending"
        self.outcomes[outcome] += 1
        self.by_kind.setdefault(change["kind"], Counter())[outcome] += 1
        if outcome == "dropped":
            self.dropped.append(change)
            if change["outcome"] == "reported":
                self.reported += 1

    def problem(self, text: str) -> None:
        self.problems.append(text)


def _append(changes: list[Change], final: Any, tally: _Tally) -> None:
    ids = Counter(item.get("id") for item in final.get("items", []))
    tags = set()
    for c in changes:
        tags.add(c["tag"])
        n = ids.get(c["tag"], 0)
        tally.duplicated += max(0, n - 1)
        tally.count(c, "present" if n else "dropped")
    for unknown in sorted(set(ids) - tags, key=str)[:5]:
        tally.problem(f"item {unknown!r} that no change made")


def _gifts(changes: list[Change], initial: Any, final: Any, tally: _Tally) -> None:
    gifts = {g["id"]: g for g in final.get("gifts", [])}
    counts = Counter(g["id"] for g in final.get("gifts", []))
    acked = [c for c in changes if c["outcome"] == "acked"]
    removed = {c["target"] for c in acked if c["kind"] == "remove"}
    toggles: dict[str, list[Change]] = {}
    for c in sorted((c for c in acked if c["kind"] == "toggle"), key=order):
        toggles.setdefault(c["target"], []).append(c)
    last = {g: cs[-1]["tag"] for g, cs in toggles.items()}
    for c in changes:
        target = c["target"]
        if c["kind"] == "append":
            n = counts.get(target, 0)
            tally.duplicated += max(0, n - 1)
            tally.count(c, "present" if n else "superseded" if target in removed else "dropped")
        elif c["kind"] == "remove":
            if target in gifts:
                tally.count(c, "dropped")
            else:
                tally.count(c, "present" if c["outcome"] == "acked" else "superseded")
        elif target not in gifts:  # a toggle of a gift that is gone
            tally.count(c, "superseded" if target in removed else "dropped")
        elif c["outcome"] == "acked":
            if last[target] != c["tag"]:
                tally.count(c, "superseded")
            else:
                want = c["user"] + 1 if c["effect"] == "reserve" else None
                tally.count(c, "present" if gifts[target].get("reservedBy") == want else "dropped")
        else:
            tally.count(c, "superseded" if c["outcome"] == "noop" else "dropped")
    started = {g["id"] for g in initial.get("gifts", [])}
    made = {c["target"] for c in changes if c["kind"] == "append"}
    for gid in sorted(started - set(gifts) - removed):  # appended ones: see their change
        tally.problem(f"gift {gid} gone without a committed removal")
    for gid, g in gifts.items():
        if gid not in made and gid not in started:
            tally.problem(f"gift {gid!r} that no change made")
        if "reservedBy" in g and gid not in toggles:
            tally.problem(f"gift {gid} reserved by {g['reservedBy']!r} without a committed toggle")


def _field(changes: list[Change], final: Any, tally: _Tally) -> None:
    title = final.get("title")
    writer = next((c for c in changes if c["tag"] == title), None)
    if writer is None and title != "start":
        tally.problem(f"title {title!r} that no change wrote")
    if writer is not None and writer["outcome"] in ("reported", "noop"):
        tally.problem(f"change {writer['tag']} is the final title but was given up")
    # the writer's version; unacknowledged (its ack still on its way): after every acked one
    last = order(writer) if writer is not None and writer["version"] is not None else None
    for c in changes:
        if c is writer:
            tally.count(c, "present")
        elif c["outcome"] != "acked":
            tally.count(c, "dropped")
        elif writer is not None and (last is None or order(c) < last):
            tally.count(c, "superseded")
        else:  # committed after the final title's write, or nothing shows: lost
            tally.count(c, "dropped")


def account(workload: str, initial: Any, finals: list[Any], result: dict[str, Any]
            ) -> dict[str, Any]:
    """The row of one run: ``finals`` is ``GET /state`` of every server process (first used)."""
    final = finals[0]
    changes = changes_of(result)
    tally = _Tally()
    if workload == "append":
        _append(changes, final, tally)
    elif workload == "gifts":
        _gifts(changes, initial, final, tally)
    elif workload == "field":
        _field(changes, final, tally)
    else:
        raise ValueError(f"unknown workload {workload!r}")
    versions = Counter(order(c) for c in changes if c["outcome"] == "acked")
    for (version, index), n in versions.items():
        if n > 1:
            tally.problem(f"{n} changes acknowledged as version {version}, index {index}")
    for c in changes:
        if c["outcome"] == "reported" and c["version"] is not None:
            tally.problem(f"change {c['tag']} reported as dropped but acknowledged")
    clients = result["clients"]
    want = canonical_hash(final)
    diverged = [c["user"] for c in clients if c["stateHash"] != want]
    servers_agree = all(canonical_hash(f) == want for f in finals)
    unsettled = [c["user"] for c in clients
                 if c["status"] != "synced" or c["version"] != result.get("serverVersion")]
    made = len(changes)
    conflicts = sum(c["conflictRejects"] for c in clients)
    latencies = [c["ms"] for c in changes if c["ms"] is not None]
    errors: Counter[str] = Counter()
    for client in clients:
        errors.update(e["code"] for e in client["errors"])
    return {
        "made": made,
        **{k: tally.outcomes[k] for k in OUTCOMES},
        "reported": tally.reported,
        "lost_silently": tally.outcomes["dropped"] - tally.reported,
        "duplicated": tally.duplicated,
        "conflicts": conflicts,
        "conflicts_per_100": 100 * conflicts / made if made else 0.0,
        "rejects": dict(sum((Counter(c["rejects"]) for c in clients), Counter())),
        "ack_p50_ms": percentile(latencies, 50),
        "ack_p99_ms": percentile(latencies, 99),
        "converged": result["settled"] and not diverged and not unsettled and servers_agree,
        "diverged_clients": diverged,
        "unsettled_clients": unsettled,
        "servers_agree": servers_agree,
        "errors": dict(errors),
        "by_kind": {k: dict(v) for k, v in tally.by_kind.items()},
        "problems": tally.problems[:20],
        "dropped_changes": tally.dropped[:20],  # the driver's records, to see what happened
        "anomalies": len(tally.problems),
    }
