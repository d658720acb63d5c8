"""Compaction of array shift cascades into the index operations they stand for.

Pure functions, no IO. Immer writes a mid-array insertion or removal as one whole-element
``replace`` per shifted element plus an ``add``/``remove`` at the end (or, up to 9.0.21, a
``replace [..., "length"]``): deleting the first of 10,000 elements is 9,999 replaces and a
remove. :func:`compact` recognises such runs in a batch whose base is the document's current
state and rewrites each into the fewest index operations with the same result (here one
``remove [..., 0]``), so the log, the fan-out and the stale-base rule see what really happened.

A run is a contiguous sequence of ``add``/``remove``/``replace`` operations on the elements of
one array A that only replace existing elements, append at the end and remove from the end
(Immer's ``generateArrayPatches`` shape). Shifts are found by comparing the run's values with
the elements of A at the indexes the run names; values compare by their exact JSON image
(``orjson`` bytes: key order, and ``1`` against ``1.0``, included), so a kept element is
byte-for-byte the one the original batch would have written. A run is left alone when an
earlier operation of the batch touched A, an ancestor or a descendant (its base would no longer
be the document's), when it does not resolve to an array, or when the rewrite is not shorter.
The cost is proportional to the batch: only elements at indexes the batch names are read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from .patches import MISSING, Op, Segment, array_index
from .values import own

Tokens = tuple[str, ...]
# one edit of a rewritten run: (op, index, value, the value is the document's own)
Edit = tuple[str, int, Any, bool]


def compact(ops: list[Op], state: Any) -> list[Op] | None:
    """``ops`` with every compactable array run rewritten, or None when none is.

    ``state`` is the document the batch applies to; neither it nor ``ops`` is modified.
    Applying the result gives the same document as applying ``ops`` (and raises where ``ops``
    would raise, since every operation outside a rewritten run meets the same state).
    """
    out: list[Op] = []
    changed = False
    earlier = _Earlier()
    i = 0
    while i < len(ops):
        op = ops[i]
        if op.op in ("add", "remove", "replace") and op.path and _element(op.path[-1]):
            parent = op.path[:-1]
            tokens = tuple(str(s) for s in parent)
            if earlier.allows(tokens):
                array = _resolve(state, parent)
                if isinstance(array, list):
                    run = _Run(array)
                    end = i
                    while end < len(ops) and run.take(ops[end], parent, tokens):
                        end += 1
                    if end - i >= 2 and earlier.unchanged_from(tokens, run.lowest):
                        rewritten = run.rewrite(ops[i:end], parent)
                        changed = changed or rewritten is not None
                        out.extend(ops[i:end] if rewritten is None else rewritten)
                        # as if the array itself was written: coarser, and O(1) a run
                        earlier.touch(Op("replace", parent))
                        i = end
                        continue
        if op.op == "replace" and isinstance(op.value, list):
            rewritten = _whole_array(op, state, earlier)
            if rewritten is not None:
                out.extend(rewritten)
                changed = True
                earlier.touch(op)
                i += 1
                continue
        out.append(op)
        earlier.touch(op)
        i += 1
    return out if changed else None


def _whole_array(op: Op, state: Any, earlier: _Earlier) -> list[Op] | None:
    """A replaced array (Immer writes ``draft.list = draft.list.filter(...)`` so) as the index
    operations that turn the document's array into the new one, when they are few: at most
    half as many as the new array's elements (a filter that drops one gift is one remove)."""
    tokens = tuple(str(s) for s in op.path)
    if not earlier.allows(tokens) or not earlier.unchanged_from(tokens, 0):
        return None
    old = _resolve(state, op.path)
    if not isinstance(old, list) or not old:
        return None
    new: list[Any] = op.value
    budget = len(new) // 2
    if budget == 0 or len(old) > 2 * len(new):
        return None
    try:  # the window read is bounded by the new array's size, which the batch carries
        edits = shortest_edits(old, len(new), dict(enumerate(new)), len(new), _key)
    except orjson.JSONEncodeError:
        return None
    if edits is None or len(edits) > budget:
        return None
    return _as_ops(edits, op.path, op.immer, numeric=op.immer)


def _as_ops(edits: list[Edit], parent: tuple[Segment, ...], immer: bool, *,
            numeric: bool) -> list[Op]:
    """The operations of ``edits`` on the array at ``parent``; indexes as ints when
    ``numeric``, else as digit strings."""
    ops = []
    for name, idx, value, borrowed in edits:
        path = (*parent, idx if numeric else str(idx))
        if name == "remove":
            ops.append(Op("remove", path, MISSING, None, immer))
        else:
            # an element taken from the document must not alias it in the applied batch
            ops.append(Op("replace" if name == "edit" else name,  # type: ignore[arg-type]
                          path, own(value) if borrowed else value, None, immer))
    return ops


def _shifts(name: str, last: str) -> bool:
    """An insert or removal by index (an object member's key is no index, usually), or an Immer
    <= 9 ``length`` cut."""
    if name == "replace":
        return last == "length"
    return name in ("add", "remove", "move", "copy") and (
        last == "-" or (last.isascii() and last.isdigit()))


class _Earlier:
    """What the operations before a run did, so a run compares only elements that are still
    the document's: its array and its ancestors unwritten, nothing inserted into or removed
    from it, and no element at or above the run's lowest index written inside (Immer puts the
    edits of elements that stay where they are before the cascade of the elements that move)."""

    __slots__ = ("below", "paths", "pending", "shifted")

    def __init__(self) -> None:
        self.pending: list[Op] = []  # not indexed yet: a batch with no run to check pays nothing
        self.paths: set[Tokens] = set()  # paths written (or read) by earlier operations
        self.below: dict[Tokens, set[str]] = {}  # for each prefix of those, the tokens under it
        self.shifted: set[Tokens] = set()  # arrays an earlier operation inserted or removed in

    def touch(self, op: Op) -> None:
        self.pending.append(op)

    def _index_pending(self) -> None:
        for op in self.pending:
            self._index(op)
        self.pending.clear()

    def _index(self, op: Op) -> None:
        for path in (op.path, op.from_):
            if path is None:
                continue
            tokens = tuple(str(s) for s in path)
            self.paths.add(tokens)
            for k in range(len(tokens)):
                self.below.setdefault(tokens[:k], set()).add(tokens[k])
            if tokens and _shifts(op.op, tokens[-1]):
                self.shifted.add(tokens[:-1])

    def allows(self, array: Tokens) -> bool:
        """Neither ``array`` nor an ancestor was written, nor was anything inserted into or
        removed from it or an ancestor (which would make its path name another value)."""
        self._index_pending()
        return not any(array[:k] in self.paths or array[:k] in self.shifted
                       for k in range(len(array) + 1))

    def unchanged_from(self, array: Tokens, lowest: int) -> bool:
        """No element of ``array`` at index ``lowest`` or above was written inside."""
        self._index_pending()
        for token in self.below.get(array, ()):
            if not (token.isascii() and token.isdigit()) or int(token) >= lowest:
                return False
        return True


def _element(seg: Segment) -> bool:
    """Whether an operation ending in ``seg`` may address an array element (or its length):
    only those can start a run."""
    return isinstance(seg, int) or seg in ("-", "length") or array_index(seg) is not None


def _resolve(state: Any, path: tuple[Segment, ...]) -> Any:
    """The value at ``path`` as :class:`~server.document.Document` would find it, or None."""
    node = state
    for seg in path:
        if isinstance(node, dict):
            key = seg if isinstance(seg, str) else str(seg)
            if key not in node:
                return None
            node = node[key]
        elif isinstance(node, list):
            idx = array_index(seg)
            if idx is None or idx >= len(node):
                return None
            node = node[idx]
        else:
            return None
    return node


def _key(value: Any) -> bytes:
    """The exact JSON image of a value: equal keys mean interchangeable values."""
    return orjson.dumps(value)


class _Run:
    """A cascade on one array being read: the array's length and the values written where."""

    __slots__ = ("base", "immer", "length", "lowest", "written")

    def __init__(self, base: list[Any]) -> None:
        self.base = base
        self.length = len(base)
        self.lowest = len(base)  # the lowest index the run names (it reads nothing below)
        self.written: dict[int, Any] = {}
        self.immer: bool | None = None  # the run's semantics, Immer or RFC 6902, are one

    def take(self, op: Op, parent: tuple[Segment, ...], tokens: Tokens) -> bool:
        """Account for ``op`` if it continues the run (and changes nothing otherwise)."""
        path = op.path
        if op.op not in ("add", "remove", "replace") or len(path) != len(parent) + 1:
            return False
        if self.immer is None:
            self.immer = op.immer
        elif op.immer != self.immer:
            return False
        if path[:-1] != parent and tuple(map(str, path[:-1])) != tokens:
            return False
        last = path[-1]
        value = None if op.value is MISSING else op.value  # undefined in an array is null
        if op.immer and op.op == "replace" and last == "length":
            n = op.value
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= self.length:
                return False
            if any(k >= n for k in self.written):
                self.written = {k: v for k, v in self.written.items() if k < n}
            self.length = n
            self.lowest = min(self.lowest, n)
            return True
        appends = last == "-" and op.op == "add" and not op.immer
        idx = self.length if appends else array_index(last)
        if idx is None:
            return False
        if op.op == "replace" and idx < self.length:
            self.written[idx] = value
        elif op.op == "add" and idx == self.length:
            self.written[idx] = value
            self.length += 1
        elif op.op == "remove" and idx == self.length - 1 and self.length > 0:
            self.written.pop(idx, None)
            self.length -= 1
        else:
            return False
        self.lowest = min(self.lowest, idx)
        return True

    def _foreign(self, run: list[Op]) -> int:
        """How many of the run's replaces put another element where one was."""
        count = 0
        for op in run:
            idx = array_index(op.path[-1])
            if op.op == "replace" and idx is not None and idx < len(self.base):
                value = None if op.value is MISSING else op.value
                old = self.base[idx]
                if _identity(value, _key(value)) != _identity(old, _key(old)):
                    count += 1
        return count

    def rewrite(self, run: list[Op], parent: tuple[Segment, ...]) -> list[Op] | None:
        try:
            edits = shortest_edits(self.base, self.length, self.written, len(run), _key)
        except orjson.JSONEncodeError:
            return None
        # fewer operations, or as many with fewer replaces of one element by another (an
        # insert and the edit of the element it moved, rather than two replaces)
        if edits is None or len(edits) > len(run) or (
            len(edits) == len(run) and _foreign(edits) >= self._foreign(run)
        ):
            return None
        immer = run[0].immer
        # keep the input's segment type: ints, unless the run used digit strings
        numeric = immer and all(isinstance(op.path[-1], int) or op.path[-1] == "length"
                                for op in run)
        return _as_ops(edits, parent, immer, numeric=numeric)


def shortest_edits(
    base: list[Any],
    length: int,
    written: dict[int, Any],
    budget: int,
    key: Callable[[Any], Any],
) -> list[Edit] | None:
    """Index edits turning ``base`` into the array a cascade makes, or None if too costly.

    The result array has ``length`` elements: ``written[k]`` where written, else ``base[k]``
    (an unwritten index was never cut off, so it still holds the base's element). ``key`` maps a
    value to something hashable that is equal exactly for interchangeable values. ``budget``,
    the run's operation count, bounds the elements read beyond those named: a common prefix and
    suffix are kept, and only the middle between them is diffed, greedily.
    """
    n, m = len(base), length
    shorter = min(n, m)
    order = sorted(written)

    def same_at(k: int, q: int) -> bool:
        """Whether the result's element ``k`` is the base's element ``q``."""
        return bool(key(written[k] if k in written else base[k]) == key(base[q]))

    # common prefix: unwritten indexes below `shorter` hold the base's elements
    p = shorter
    for k in order:
        if k >= shorter or key(written[k]) != key(base[k]):
            p = min(k, shorter)
            break
    # common suffix, walking down from both ends
    s = 0
    spare = budget
    ptr = len(order) - 1
    i, q = m - 1, n - 1
    while i >= p and q >= p:
        while ptr >= 0 and order[ptr] > i:
            ptr -= 1
        if not (ptr >= 0 and order[ptr] == i):
            if m == n:  # unwritten and unshifted down to the next written index: all equal
                step = i - max(order[ptr] if ptr >= 0 else -1, p - 1)
                i, q, s = i - step, q - step, s + step
                continue
            if spare == 0:
                break
            spare -= 1
        if not same_at(i, q):
            break
        i, q, s = i - 1, q - 1, s + 1
    old_n, new_n = n - s - p, m - s - p
    if old_n + new_n > 2 * budget + 2:
        return None
    old = base[p : p + old_n]
    new: list[tuple[Any, bool]] = [
        (written[k], False) if k in written else (base[k], True) for k in range(p, p + new_n)
    ]
    old_values = [key(v) for v in old]
    new_values = [key(v) for v, _ in new]
    # elements are aligned by their `id` member when they have one, so a moved element that was
    # also edited is one element (kept in place, then replaced), not a removal and an insert
    old_keys = [_identity(v, k) for v, k in zip(old, old_values, strict=True)]
    new_keys = [_identity(v, k) for (v, _), k in zip(new, new_values, strict=True)]
    in_old = _Occurrences(old_keys)
    in_new = _Occurrences(new_keys)
    edits: list[Edit] = []
    a = b = 0  # next element of old, of new
    pos = p  # where the next element of new goes
    while a < old_n or b < new_n:
        if a < old_n and b < new_n and old_keys[a] == new_keys[b]:
            if old_values[a] != new_values[b]:  # the same element, edited
                value, borrowed = new[b]
                edits.append(("edit", pos, value, borrowed))
                if len(edits) > budget:
                    return None
            a, b, pos = a + 1, b + 1, pos + 1
            continue
        if b >= new_n:
            action = "remove"
        elif a >= old_n:
            action = "add"
        else:
            later_old = in_old.after(new_keys[b], a)  # the new element is an old one, later
            later_new = in_new.after(old_keys[a], b)  # the old element is kept, later
            if later_old is None and later_new is None:
                action = "replace"
            elif later_new is None:
                action = "remove"
            elif later_old is None:
                action = "add"
            else:
                action = "remove" if later_old - a <= later_new - b else "add"
        if action == "remove":
            edits.append(("remove", pos, None, False))
            a += 1
        else:
            value, borrowed = new[b]
            edits.append((action, pos, value, borrowed))
            b, pos = b + 1, pos + 1
            if action == "replace":
                a += 1
        if len(edits) > budget:
            return None  # longer than the run: no need to finish
    return edits


def _foreign(edits: list[Edit]) -> int:
    """How many edits put another element where one was (aligned edits are ``edit``)."""
    return sum(1 for name, _, _, _ in edits if name == "replace")


def _identity(value: Any, image: Any) -> Any:
    """What aligns an element with itself across an edit: ``("id", id)`` for an object with a
    string or integer ``id`` member, else its exact JSON image."""
    if isinstance(value, dict):
        ident = value.get("id")
        if isinstance(ident, str) or (isinstance(ident, int) and not isinstance(ident, bool)):
            return ("id", ident)
    return image


class _Occurrences:
    """The next index holding a key, after a position that only moves forward."""

    __slots__ = ("cursor", "where")

    def __init__(self, keys: list[Any]) -> None:
        self.where: dict[Any, list[int]] = {}
        for i, k in enumerate(keys):
            self.where.setdefault(k, []).append(i)
        self.cursor: dict[Any, int] = {}

    def after(self, key: Any, position: int) -> int | None:
        indexes = self.where.get(key)
        if indexes is None:
            return None
        c = self.cursor.get(key, 0)
        while c < len(indexes) and indexes[c] <= position:
            c += 1
        self.cursor[key] = c
        return indexes[c] if c < len(indexes) else None
