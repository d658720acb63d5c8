"""What a session keeps of its recent past (``server.window``), without a session: the recent
records a join is served from, the dedupe index, and the snapshot rule."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from server.window import MIN_SNAPSHOT_GAP, Dedupe, RecentLog, Record, SnapshotPolicy


def record(version: int, size: int = 10) -> Record:
    return Record(version, "[" + " " * (size - 2) + "]", "[]")


@given(st.integers(1, 60), st.integers(1, 20), st.integers(-2, 70), st.integers(0, 30))
def test_recent_log_serves_exactly_the_versions_it_still_holds(
    published: int, keep: int, since: int, floor: int
) -> None:
    log = RecentLog(max_records=keep)
    for v in range(1, published + 1):
        log.add(record(v))
    oldest = max(1, published - keep + 1)  # what a log of ``keep`` records still holds
    got = log.after(since, published, floor)
    if since >= published:
        assert got == []
    elif since < floor or since + 1 < oldest:
        assert got is None  # memory does not reach back: the store serves it
    else:
        assert got is not None and [r.version for r in got] == list(range(since + 1, published + 1))


def test_recent_log_is_bounded_by_bytes_too() -> None:
    log = RecentLog(max_records=1000)
    big = 8 << 20
    for v in range(1, 11):
        log.add(Record(v, "[" + " " * big + "]", "[]"))
    got = log.after(5, 10, 0)
    assert got is None  # 10 records of 8 MiB: only the newest few fit in 32 MiB
    kept = log.after(8, 10, 0)
    assert kept is not None and [r.version for r in kept] == [9, 10]


def test_dedupe_remembers_forgets_and_trims_at_the_floor() -> None:
    dedupe = Dedupe([("a", "1", 3), ("b", "1", 5)])
    dedupe.remember(("a", "2"), 7)
    assert dedupe.get(("a", "1")) == 3 and dedupe.get(("a", "2")) == 7 and len(dedupe) == 3
    dedupe.forget(("a", "2"))  # a commit taken back
    assert dedupe.get(("a", "2")) is None
    dedupe.remember(("a", "2"), 8)  # committed again, later
    dedupe.trim(5)  # compaction removed versions up to 5 from the store
    assert dedupe.get(("a", "1")) is None and dedupe.get(("b", "1")) is None
    assert dedupe.get(("a", "2")) == 8 and len(dedupe) == 1


def test_a_key_committed_again_after_the_floor_survives_the_trim() -> None:
    dedupe = Dedupe()
    dedupe.remember(("c", "9"), 2)
    dedupe.remember(("c", "9"), 12)  # the same id resent after a lost race, committed later
    dedupe.trim(5)
    assert dedupe.get(("c", "9")) == 12


def test_snapshot_due_every_n_versions_or_when_the_log_outweighs_it() -> None:
    policy = SnapshotPolicy(every=100, version=0, size=1000)
    state = {"k": "v"}
    assert all(policy.due(v, 10, state) is None for v in range(1, 50))
    serialized = policy.due(50, 600, state)  # 49*10 + 600 log bytes > the 1000-byte snapshot
    assert serialized == b'{"k":"v"}' and policy.version == 50 and policy.log_bytes == 0
    assert policy.size == len(serialized)
    for v in range(51, 51 + MIN_SNAPSHOT_GAP - 1):  # too soon for the byte rule
        assert policy.due(v, 10_000, state) is None
    assert policy.due(50 + MIN_SNAPSHOT_GAP, 1, state) is not None
    policy = SnapshotPolicy(every=5, version=0, size=10**9)
    assert [v for v in range(1, 16) if policy.due(v, 1, state) is not None] == [5, 10, 15]
