"""Rebasing a stale batch over the batches committed after its base: array indexes transformed,
true overlaps refused.

Pure functions over operations, no document and no IO. A batch made at version B is a list of
:class:`~server.patches.Op` against the state at B; the history since B is, per version, the
operations as they were applied (:data:`Written`: the op name and the *typed* path, ints for
array indexes and strings for object members, as :class:`~server.document.Document` records
them). :func:`rebase` transforms the batch over that history, one committed operation at a
time, with json0's rules for arrays:

- an index into array A moves up by one for each later insert into A at or below it (two inserts
  at the same index: the one that arrived later, ours, goes after), and down by one for each later
  removal below it; so an append (an ``add`` at A's length as of B) lands at A's current end;
- it is a :class:`~server.errors.Conflict` when a later operation wrote the same object member,
  an ancestor or a descendant of one of the batch's paths, replaced or removed the element it
  addresses, or replaced or removed A itself; a stale ``remove`` of an element a later batch
  removed is a conflict too (the user meant *that* element, which is gone).

An insert is not an overlap: inserting at index i of A while someone edited element i (or
something inside it) moves that element to i+1 and keeps both changes.

Within one committed operation the batch is transformed op by op, and the committed operation is
itself carried over each op of the batch (the other side of the OT square), so later ops of the
batch, which address the state *after* the earlier ones, see it where it really is.

RFC 6902 ``move`` and ``copy`` are not transformed: they apply only when no later operation is
entangled with their paths (the same array, an ancestor or a descendant), else conflict. Immer's
``length`` (immer <= 9) addresses the end of its array: any later operation inside that array is
a conflict.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from .errors import Conflict
from .patches import Op, Segment, array_index, to_pointer

#: One applied operation: its name (add, remove or replace) and its typed path.
Written = tuple[str, tuple[Segment, ...]]


def rebase(ops: list[Op], later: Iterable[tuple[int, Sequence[Written]]],
           base: int) -> list[Op]:
    """``ops`` (made at ``base``) transformed over ``later``: ``(version, operations)`` of every
    batch committed after ``base``, in order. Returns ``ops`` itself when nothing moved; raises
    :class:`~server.errors.Conflict` on a true overlap."""
    current = ops
    for version, written in later:
        for committed in written:
            current = _over(current, committed, version, base)
    return current


def _over(ops: list[Op], committed: Written, version: int, base: int) -> list[Op]:
    """The batch transformed over one committed operation."""
    out: list[Op] | None = None
    for n, op in enumerate(ops):
        moved = _transform(op, committed, version, base)
        if moved is not op and out is None:
            out = list(ops[:n])
        if out is not None:
            out.append(moved)
        committed = _carry(committed, op)
    return ops if out is None else out


def _same(a: Sequence[Segment], b: Sequence[Segment]) -> bool:
    """Equal as JSON Pointer tokens (an Immer int and an RFC 6902 digit string are one index)."""
    return len(a) == len(b) and all(x == y or str(x) == str(y) for x, y in zip(a, b, strict=True))


def _structural(committed: Written) -> bool:
    """An insert into or a removal from an array (it shifts the elements after it)."""
    name, path = committed
    return name in ("add", "remove") and bool(path) and isinstance(path[-1], int)


def _inserts_at_or_above(op: Op, path: tuple[Segment, ...]) -> bool:
    """``op`` inserts into an array at the index ``path`` goes through (or at ``path`` itself)."""
    n = len(op.path)
    return (op.op == "add" and 0 < n <= len(path) and isinstance(path[n - 1], int)
            and _same(op.path, path[:n]))


def _conflict(op: Op, committed: Written, version: int, base: int, why: str) -> Conflict:
    return Conflict(
        f"{op.op} {to_pointer(op.path)!r}: version {version} {why} "
        f"{to_pointer(committed[1])!r} after base {base}"
    )


def _transform(op: Op, committed: Written, version: int, base: int) -> Op:
    """One op of the batch over one committed operation (both against the same state)."""
    name, cpath = committed
    if op.op in ("move", "copy"):
        for path in (op.path, op.from_ or ()):
            if _entangled(path, cpath):
                raise _conflict(op, committed, version, base, "changed")
        return op
    path = op.path
    if _structural(committed):
        array, at = cpath[:-1], cpath[-1]
        assert isinstance(at, int)
        if len(path) > len(array) and _same(path[: len(array)], array):
            seg = path[len(array)]
            if seg == "-" and not op.immer and len(path) == len(array) + 1:
                return op  # an RFC 6902 append: still the end
            idx = array_index(seg)
            if idx is None:  # Immer's "length", or a key that is no index
                raise _conflict(op, committed, version, base, "shifted the array at")
            inserting = op.op == "add" and len(path) == len(array) + 1
            if name == "add":
                if idx < at:
                    return op
                idx += 1  # at or above a later insert (ties: ours arrived later, goes after)
            elif idx > at:
                idx -= 1
            elif idx < at or inserting:
                return op
            else:
                raise _conflict(op, committed, version, base, "removed the element at")
            seg_out: Segment = idx if isinstance(seg, int) else str(idx)
            return replace(op, path=(*path[: len(array)], seg_out, *path[len(array) + 1:]))
    k = min(len(path), len(cpath))
    if not _same(path[:k], cpath[:k]):
        return op  # disjoint
    if _inserts_at_or_above(op, cpath):
        return op  # an insert before what was written: both survive
    if name == "replace" and len(cpath) < len(path):
        raise _conflict(op, committed, version, base, "replaced")
    raise _conflict(op, committed, version, base, "changed")


def _entangled(path: Sequence[Segment], cpath: tuple[Segment, ...]) -> bool:
    """One path is a prefix of the other, or ``path`` goes through the array ``cpath`` shifts."""
    k = min(len(path), len(cpath))
    if _same(path[:k], cpath[:k]):
        return True
    n = len(cpath) - 1
    return (n >= 0 and isinstance(cpath[-1], int) and len(path) > n
            and _same(path[:n], cpath[:n]))


def _carry(committed: Written, op: Op) -> Written:
    """The committed operation as it reads after ``op`` (taken untransformed, at the base).

    Only array inserts and removals of the batch move it; every other overlap was refused by
    :func:`_transform` already.
    """
    if op.op not in ("add", "remove"):
        return committed
    name, cpath = committed
    n = len(op.path)
    if n == 0 or n > len(cpath) or not isinstance(cpath[n - 1], int):
        return committed
    if not _same(op.path[:-1], cpath[: n - 1]):
        return committed
    j = array_index(op.path[-1])
    if j is None:  # "-": an append, after everything the committed operation addresses
        return committed
    i = cpath[n - 1]
    assert isinstance(i, int)
    tie_insert = name == "add" and len(cpath) == n  # both insert at one index: it stays first
    if op.op == "add":
        if j < i or (j == i and not tie_insert):
            i += 1
        else:
            return committed
    elif j < i:
        i -= 1
    else:
        return committed  # j == i with an overlap was refused; j > i does not move it
    return name, (*cpath[: n - 1], i, *cpath[n:])
