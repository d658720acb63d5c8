"""The canonical document: atomic application of a batch, versions, and the history stale
batches are rebased over.

Plain Python, no IO. A batch made at an older version is first rebased (:mod:`server.rebase`)
and array shift cascades compacted (:mod:`server.compact`). :meth:`Document.apply` then
resolves each validated :class:`~server.patches.Op`
against the live state, mutates the state in place and records an undo journal; when any
operation does not apply, the journal is rolled back so the state is exactly as before (no copy
of the whole document is ever made). It returns the batch as it was actually applied, in both
formats: RFC 6902 for the log and JSON-Patch clients, Immer patches (numbers for array indexes,
strings for object keys, only add/remove/replace) for Immer clients.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .compact import compact
from .errors import Conflict, InvalidInput, TooLarge
from .patches import MISSING, Op, Segment, array_index, depth_of, to_pointer
from .rebase import Written, rebase
from .values import json_equal as json_equal  # re-exported: other modules import it from here
from .values import own


@dataclass(slots=True)
class Applied:
    """A batch as applied: its operations in both formats and what it touched."""

    json_patch: list[dict[str, Any]] = field(default_factory=list)
    immer: list[dict[str, Any]] = field(default_factory=list)
    # what it wrote, as (op, typed path): the history a later stale batch is rebased over
    written: list[Written] = field(default_factory=list)
    # the batch as applied differs from what was sent (rebased, compacted or normalised)
    rewritten: bool = False
    # what Document.revert needs to take the batch back (while it is the newest one)
    journal: list[tuple[Any, ...]] = field(default_factory=list, repr=False)
    delta: int = 0

    @property
    def empty(self) -> bool:
        return not self.json_patch

    def previous(self) -> dict[str, Any]:
        """The value each JSON Pointer the batch wrote held before the batch (absent where
        nothing was: a new member, an inserted element), from the undo journal: no copy. Valid
        until the next batch applies; the values are detached from the document."""
        before: dict[str, Any] = {}
        seen: set[str] = set()
        for op, entry in zip(self.json_patch, self.journal, strict=True):
            pointer = op["path"]
            if pointer in seen:
                continue
            seen.add(pointer)
            kind = entry[0]
            if kind == "root":
                before[pointer] = entry[1]
            elif kind in ("dset", "ddel", "lset", "lpop") and entry[3] is not MISSING:
                before[pointer] = entry[3]
        return before


def _size(value: Any) -> int:
    """Serialized size of a JSON value, in bytes."""
    if value is None or isinstance(value, bool):
        return 4 if value is not False else 5
    return len(orjson.dumps(value))


def _member_size(key: str, value_size: int) -> int:
    """An object member: its key, the colon, the value and a comma."""
    return len(orjson.dumps(key)) + 2 + value_size


class _Batch:
    """One application in progress: the undo journal and the outputs."""

    __slots__ = ("delta", "doc", "journal", "out", "out_bytes")

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.journal: list[tuple[Any, ...]] = []
        self.out = Applied()
        self.delta = 0  # change of the serialized size, in bytes (see Document.size)
        self.out_bytes = 0  # approximate size of the batch as applied (what is logged and sent)

    # -- navigation ----------------------------------------------------------------------------

    def walk(self, path: tuple[Segment, ...]) -> tuple[Any, list[Segment]]:
        """The container at ``path`` and the path typed (ints for array indexes)."""
        node = self.doc.state
        typed: list[Segment] = []
        for seg in path:
            if isinstance(node, dict):
                key = seg if isinstance(seg, str) else str(seg)
                if key not in node:
                    raise Conflict(f"path {to_pointer(path)!r}: no member {key!r}")
                node = node[key]
                typed.append(key)
            elif isinstance(node, list):
                idx = array_index(seg)
                if idx is None or idx >= len(node):
                    raise Conflict(f"path {to_pointer(path)!r}: no array element {seg!r}")
                node = node[idx]
                typed.append(idx)
            else:
                raise Conflict(f"path {to_pointer(path)!r} goes through a scalar")
        return node, typed

    def get(self, path: tuple[Segment, ...]) -> Any:
        if not path:
            return self.doc.state
        parent, _ = self.walk(path[:-1])
        last = path[-1]
        if isinstance(parent, dict):
            key = last if isinstance(last, str) else str(last)
            if key in parent:
                return parent[key]
        elif isinstance(parent, list):
            idx = array_index(last)
            if idx is not None and idx < len(parent):
                return parent[idx]
        raise Conflict(f"path {to_pointer(path)!r} does not exist")

    # -- primitive mutations, each journaled and emitted in both formats ----------------------

    def emit(self, op: str, typed: list[Segment], value: Any = MISSING, size: int = 0) -> None:
        """Record one applied operation in both formats; ``size`` is the value's JSON size."""
        pointer = to_pointer(typed)
        if value is MISSING:
            self.out.json_patch.append({"op": op, "path": pointer})
            self.out.immer.append({"op": op, "path": typed})
        else:
            self.out.json_patch.append({"op": op, "path": pointer, "value": value})
            self.out.immer.append({"op": op, "path": typed, "value": value})
        self.out.written.append((op, tuple(typed)))
        self.out_bytes += size + 2 * len(pointer) + 40  # both formats, with their punctuation

    def set_root(self, value: Any, shown: Any) -> None:
        self.journal.append(("root", self.doc.state))
        size = _size(value)
        self.delta += size - _size(self.doc.state)
        self.doc.state = value
        self.emit("replace", [], shown, size)

    def dict_set(self, parent: dict[str, Any], typed: list[Segment], key: str, value: Any,
                 shown: Any) -> None:
        old = parent.get(key, MISSING)
        self.journal.append(("dset", parent, key, old))
        parent[key] = value
        size = _size(value)
        if old is MISSING:
            self.delta += _member_size(key, size)
        else:
            self.delta += size - _size(old)
        self.emit("add" if old is MISSING else "replace", [*typed, key], shown, size)

    def dict_del(self, parent: dict[str, Any], typed: list[Segment], key: str) -> None:
        # a rollback must put the member back where it was: remember its position, unless it
        # is the last member (the common case, O(1)); finding it costs the size of this object
        position = None if next(reversed(parent)) == key else list(parent).index(key)
        old = parent.pop(key)
        self.journal.append(("ddel", parent, key, old, position))
        self.delta -= _member_size(key, _size(old))
        self.emit("remove", [*typed, key])

    def list_insert(self, parent: list[Any], typed: list[Segment], idx: int, value: Any,
                    shown: Any) -> None:
        parent.insert(idx, value)
        self.journal.append(("lins", parent, idx))
        size = _size(value)
        self.delta += size + 1
        self.emit("add", [*typed, idx], shown, size)

    def list_set(self, parent: list[Any], typed: list[Segment], idx: int, value: Any,
                 shown: Any) -> None:
        old = parent[idx]
        self.journal.append(("lset", parent, idx, old))
        parent[idx] = value
        size = _size(value)
        self.delta += size - _size(old)
        self.emit("replace", [*typed, idx], shown, size)

    def list_pop(self, parent: list[Any], typed: list[Segment], idx: int) -> Any:
        old = parent.pop(idx)
        self.journal.append(("lpop", parent, idx, old))
        self.delta -= _size(old) + 1
        self.emit("remove", [*typed, idx])
        return old

    def rollback(self) -> None:
        for entry in reversed(self.journal):
            kind = entry[0]
            if kind == "root":
                self.doc.state = entry[1]
            elif kind == "dset":
                _, parent, key, old = entry
                if old is MISSING:
                    del parent[key]
                else:
                    parent[key] = old
            elif kind == "ddel":
                _, parent, key, old, position = entry
                if position is None:
                    parent[key] = old
                else:
                    items = list(parent.items())
                    items.insert(position, (key, old))
                    parent.clear()
                    parent.update(items)
            elif kind == "lins":
                del entry[1][entry[2]]
            elif kind == "lset":
                entry[1][entry[2]] = entry[3]
            else:  # lpop
                entry[1].insert(entry[2], entry[3])
        self.journal.clear()

    # -- operations ----------------------------------------------------------------------------

    def apply(self, op: Op) -> None:
        if op.op == "test":
            if not json_equal(self.get(op.path), op.value):
                raise Conflict(f"test failed at {to_pointer(op.path)!r}")
            return
        if op.op in ("move", "copy"):
            self.move_or_copy(op)
            return
        if not op.path:
            if op.op == "remove":
                raise InvalidInput("the root cannot be removed")
            self.set_root(own(op.value), op.value)
            return
        parent, typed = self.walk(op.path[:-1])
        last = op.path[-1]
        if isinstance(parent, dict):
            self.on_dict(op, parent, typed, last if isinstance(last, str) else str(last))
        elif isinstance(parent, list):
            self.on_list(op, parent, typed, last)
        else:
            raise Conflict(f"path {to_pointer(op.path)!r} goes through a scalar")

    def on_dict(self, op: Op, parent: dict[str, Any], typed: list[Segment], key: str) -> None:
        present = key in parent
        if op.op == "remove" or op.value is MISSING:
            # Immer: an absent member, or one set to undefined, has no JSON image
            if present:
                self.dict_del(parent, typed, key)
            elif not op.immer:
                raise Conflict(f"path {to_pointer(op.path)!r} does not exist")
            return
        if op.op == "replace" and not present and not op.immer:
            raise Conflict(f"path {to_pointer(op.path)!r} does not exist")
        self.dict_set(parent, typed, key, own(op.value), op.value)

    def on_list(self, op: Op, parent: list[Any], typed: list[Segment], last: Segment) -> None:
        if op.immer and op.op == "replace" and last == "length":
            self.set_length(op, parent, typed)
            return
        if last == "-" and op.op == "add" and not op.immer:
            idx: int | None = len(parent)
        else:
            idx = array_index(last)
        if idx is None:
            raise Conflict(f"path {to_pointer(op.path)!r}: {last!r} is not an array index")
        value = None if op.value is MISSING else op.value  # undefined in an array is null
        if op.op == "add":
            if idx > len(parent):
                raise Conflict(f"path {to_pointer(op.path)!r}: index {idx} is out of range")
            self.list_insert(parent, typed, idx, own(value), value)
            return
        if idx >= len(parent):
            raise Conflict(f"path {to_pointer(op.path)!r}: index {idx} is out of range")
        if op.op == "replace":
            self.list_set(parent, typed, idx, own(value), value)
        else:
            self.list_pop(parent, typed, idx)

    def check_size(self, growth: int = 0, ops: int = 0) -> None:
        """The limits on what one batch may do, checked as it goes: the document's size, and
        the batch as applied (move, copy and length expand into more operations and values
        than were sent)."""
        doc = self.doc
        if doc.max_bytes is not None and doc.size + self.delta + growth > doc.max_bytes:
            raise TooLarge(f"the document would exceed {doc.max_bytes} bytes")
        if doc.max_batch_bytes is not None and self.out_bytes > doc.max_batch_bytes:
            raise TooLarge(f"the batch as applied would exceed {doc.max_batch_bytes} bytes")
        if doc.max_ops is not None and len(self.out.json_patch) + ops > doc.max_ops:
            raise TooLarge(f"the batch as applied would exceed {doc.max_ops} operations")

    def set_length(self, op: Op, parent: list[Any], typed: list[Segment]) -> None:
        n = op.value
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidInput(f"array length must be a non-negative integer, not {n!r}")
        # each padding null is 5 bytes, and each element added or removed one operation
        self.check_size(max(0, n - len(parent)) * 5, abs(n - len(parent)))
        while len(parent) > n:
            self.list_pop(parent, typed, len(parent) - 1)
        while len(parent) < n:
            self.list_insert(parent, typed, len(parent), None, None)

    def move_or_copy(self, op: Op) -> None:
        assert op.from_ is not None
        source = op.from_
        if op.op == "move":
            if op.path[: len(source)] == source and len(op.path) > len(source):
                raise InvalidInput("cannot move a value into one of its own children")
            if op.path == source:
                self.get(source)  # must exist; moving onto itself changes nothing
                return
            value = self.get(source)
            if len(op.path) + depth_of(value) > self.doc.max_depth:
                raise TooLarge(f"the document would nest deeper than {self.doc.max_depth} levels")
            self.apply(Op("remove", source, immer=False))
        else:
            value = own(self.get(source))
        if len(op.path) + depth_of(value) > self.doc.max_depth:
            raise TooLarge(f"the document would nest deeper than {self.doc.max_depth} levels")
        target = Op("add", op.path, value, immer=False)
        # the emitted value must not alias the document, which later operations may change
        if not op.path:
            self.set_root(value, own(value))
            return
        parent, typed = self.walk(op.path[:-1])
        last = op.path[-1]
        if isinstance(parent, dict):
            key = last if isinstance(last, str) else str(last)
            self.dict_set(parent, typed, key, value, own(value))
        elif isinstance(parent, list):
            idx = len(parent) if last == "-" else array_index(last)
            if idx is None or idx > len(parent):
                raise Conflict(f"path {to_pointer(target.path)!r}: bad array index {last!r}")
            self.list_insert(parent, typed, idx, value, own(value))
        else:
            raise Conflict(f"path {to_pointer(op.path)!r} goes through a scalar")


Check = Callable[[Any], None]


class Document:
    """A JSON value with a version; every non-empty applied batch adds exactly 1.

    ``size`` tracks the serialized size in bytes, exact at construction and kept within a few
    bytes per change by each batch (commas are approximated); ``max_bytes`` bounds it.
    """

    def __init__(self, state: Any, version: int = 0, max_base_lag: int = 1000,
                 max_bytes: int | None = None, max_depth: int = 64, max_ops: int | None = None,
                 max_batch_bytes: int | None = None) -> None:
        self.state = state
        self.version = version
        self.max_base_lag = max_base_lag
        self.max_bytes = max_bytes
        self.max_depth = max_depth  # move and copy may not nest the document deeper
        self.max_ops = max_ops  # operations of a batch as applied
        self.max_batch_bytes = max_batch_bytes  # size of a batch as applied
        self.size = _size(state)
        # (version, what it wrote) of the recent batches: what a stale batch is rebased over
        self._history: deque[tuple[int, list[Written]]] = deque(maxlen=max_base_lag)

    def apply(self, ops: list[Op], base: int | None = None, check: Check | None = None,
              *, compacting: bool = True) -> Applied:
        """Apply ``ops`` atomically or raise, leaving the state untouched.

        A batch made at an older ``base`` is first rebased over the batches applied since
        (:mod:`server.rebase`); then array shift cascades are compacted (:mod:`server.compact`).
        ``compacting=False`` skips compaction (a replay of our own log, compact already).
        ``check`` sees the resulting state before the batch is kept and may raise to refuse it
        (schema validation). Returns the applied batch (``rewritten`` when it differs from
        ``ops``); when it changed nothing (``Applied.empty``) the version stays the same.
        """
        sent = ops
        if base is not None:
            ops = self.rebase(ops, base)
        if compacting:
            ops = compact(ops, self.state) or ops
        batch = _Batch(self)
        try:
            for op in ops:
                batch.apply(op)
                batch.check_size()  # per operation: one batch cannot balloon the document
            if check is not None and not batch.out.empty:
                check(self.state)
        except BaseException:
            batch.rollback()
            raise
        out = batch.out
        if not out.empty:
            out.journal, out.delta = batch.journal, batch.delta
            out.rewritten = _rewritten(sent, out)
            self.size += batch.delta
            self.version += 1
            self._history.append((self.version, out.written))
        return out

    def revert(self, applied: Applied) -> None:
        """Take back ``applied``, which must be the newest batch applied (a commit that lost a
        race in a shared store). The state is exactly as before it."""
        batch = _Batch(self)
        batch.journal = applied.journal
        batch.rollback()
        self.size -= applied.delta
        self.version -= 1
        # a round can stage more batches than the history keeps: the entry may be gone already
        # (bases from before what remains are then refused as too old, never accepted wrongly)
        if self._history and self._history[-1][0] == self.version + 1:
            self._history.pop()

    def rebase(self, ops: list[Op], base: int) -> list[Op]:
        """``ops``, made at ``base``, as they apply at the head: array indexes moved over what
        was inserted and removed since, ``conflict`` where a later batch changed what they
        address (the rules are in :mod:`server.rebase`)."""
        if isinstance(base, bool) or not isinstance(base, int) or base < 0:
            raise InvalidInput("base must be a non-negative integer")
        if base > self.version:
            raise InvalidInput(f"base {base} is ahead of the current version {self.version}")
        if base == self.version:
            return ops
        oldest = self._history[0][0] if self._history else self.version + 1
        if base + 1 < oldest:
            raise Conflict(f"base {base} is too old to rebase (current {self.version})")
        later = (entry for entry in self._history if entry[0] > base)
        return rebase(ops, later, base)


def _rewritten(sent: list[Op], out: Applied) -> bool:
    """Whether the batch as applied differs from the one sent, in the sender's format (op, path
    and value, compared by identity: the applied value is the sent object when unchanged)."""
    if len(sent) != len(out.immer):
        return True
    for op, immer, json_patch in zip(sent, out.immer, out.json_patch, strict=True):
        if op.op != immer["op"] or immer.get("value", MISSING) is not op.value:
            return True
        if op.immer:
            if len(op.path) != len(immer["path"]) or any(
                a != b or type(a) is not type(b)
                for a, b in zip(op.path, immer["path"], strict=True)
            ):
                return True
        elif to_pointer(op.path) != json_patch["path"]:
            return True
    return False
