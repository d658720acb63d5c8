"""Shared Hypothesis strategies, a Python model of Immer's ``produceWithPatches``, and oracles.

The model is the independent side of the property tests: it never imports the server. It keeps
the client's JavaScript state (where a member or an array element may hold ``undefined``,
:data:`UNDEF`), runs random recipes through copy-on-write drafts that follow Immer's proxy traps
(``get``, ``set``, ``deleteProperty``, array ``length``) and the ECMAScript algorithms of
``push``/``pop``/``shift``/``unshift``/``splice``, and emits the patches Immer's finalization
emits (``generatePatchesFromAssigned``/``generateArrayPatches``: children first, then the
parent; array removals from the end, or one ``length`` replace in the legacy form of Immer
<= 3.2 and 7.0-9.0.21). What a client sends over the wire is the JSON image of those patches
(:func:`to_wire`); what the server must end with is the JSON image of the new state
(:func:`json_image`).

Other oracles: :func:`jp_apply` (the ``jsonpatch`` library) and :func:`apply_typed_immer`, a
strict applier of the server's outgoing Immer patches that insists on numbers for array
indexes and strings for object keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final

import jsonpatch
import jsonpointer
import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

Draw = Callable[[st.SearchStrategy[Any]], Any]

PROPERTY: Final = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

RESERVED: Final = ("__proto__", "constructor", "prototype")
# keys that need escaping, look like indexes or pointer syntax, or are not ASCII
WEIRD_KEYS: Final = (
    "a/b", "m~n", "", "-", "0", "1", "~1", "~0", "/", "~", "//", "length", "01",
    "é", "日本語", "😀", " ", "a", "b", "c",
)
# never generated as a key: paths through it are guaranteed to be missing
ABSENT_KEY: Final = "\u2603absent"

# -- JSON values -------------------------------------------------------------------------------

_chars = st.characters(exclude_categories=("Cs",))
keys: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(WEIRD_KEYS),
    st.text(_chars, max_size=3).filter(lambda k: k not in RESERVED and k != ABSENT_KEY),
)
# JavaScript has one number type: to keep `1 === 1.0` out of the comparison, floats are never
# integral (nor -0.0, which JSON.stringify writes as 0)
numbers = st.one_of(
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(_chars, max_size=6))
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(keys, c, max_size=4)),
    max_leaves=8,
)
json_objects = st.dictionaries(keys, json_values, max_size=5)
# documents: mostly objects with several members, sometimes anything (one_of would weigh the
# branches equally and give scalar documents a third of the examples)
_rich_objects = st.dictionaries(keys, json_values, min_size=2, max_size=6)
_doc_kinds = (_rich_objects,) * 6 + (json_objects, st.lists(json_values, max_size=4)) * 2 + (
    scalars,
)
json_docs: st.SearchStrategy[Any] = st.sampled_from(_doc_kinds).flatmap(lambda s: s)


def deep(value: Any) -> Any:
    """A deep copy of a JSON value (as it would cross the wire)."""
    return orjson.loads(orjson.dumps(value))


def canon(value: Any) -> bytes:
    """Order-insensitive but type-exact image: ``1`` != ``1.0`` != ``true``."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


# -- JavaScript values -------------------------------------------------------------------------


class _Undefined:
    __slots__ = ()

    def __repr__(self) -> str:
        return "undefined"


class _Hole:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<hole>"


UNDEF: Final = _Undefined()
HOLE: Final = _Hole()  # an array slot that does not exist (only while an array method runs)


def json_image(value: Any) -> Any:
    """``JSON.parse(JSON.stringify(value))``: undefined members dropped, array slots null."""
    if isinstance(value, dict):
        return {k: json_image(v) for k, v in value.items() if v is not UNDEF}
    if isinstance(value, list):
        assert HOLE not in value
        return [None if v is UNDEF else json_image(v) for v in value]
    assert value is not UNDEF and not isinstance(value, Draft)
    return value


def to_wire(patches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Immer patches as a client sends them: JSON drops a ``value`` that is undefined."""
    out = []
    for p in patches:
        wire = {"op": p["op"], "path": list(p["path"])}
        if "value" in p and p["value"] is not UNDEF:
            wire["value"] = json_image(p["value"])
        out.append(wire)
    return deep(out)


fresh_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda c: st.one_of(
        st.lists(st.one_of(c, st.just(UNDEF)), max_size=3),
        st.dictionaries(keys, st.one_of(c, st.just(UNDEF)), max_size=3),
    ),
    max_leaves=6,
)


def _peek(container: Any, key: Any) -> Any:
    if isinstance(container, dict):
        return container.get(key, UNDEF)
    if isinstance(key, int) and 0 <= key < len(container):
        value = container[key]
        return UNDEF if value is HOLE else value
    return UNDEF


def _has(container: Any, key: Any) -> bool:
    if isinstance(container, dict):
        return key in container
    return isinstance(key, int) and 0 <= key < len(container) and container[key] is not HOLE


def js_same(a: Any, b: Any) -> bool:
    """``a === b`` for the values of the model (no NaN, no -0)."""
    if a is b:
        return True
    if isinstance(a, dict | list | Draft) or isinstance(b, dict | list | Draft):
        return False
    if a is None or b is None or a is UNDEF or b is UNDEF:
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return isinstance(a, str) and isinstance(b, str) and a == b


class Draft:
    """An Immer proxy state: ``base``, a lazy shallow ``copy``, ``assigned`` keys."""

    __slots__ = ("assigned", "base", "copy", "finalized", "modified", "parent")

    def __init__(self, base: dict[str, Any] | list[Any], parent: Draft | None) -> None:
        self.base = base
        self.copy: Any = None
        self.assigned: dict[Any, bool] = {}
        self.parent = parent
        self.modified = False
        self.finalized = False

    def latest(self) -> Any:
        return self.base if self.copy is None else self.copy

    def prepare_copy(self) -> None:
        if self.copy is None:
            self.copy = dict(self.base) if isinstance(self.base, dict) else list(self.base)

    def mark_changed(self) -> None:
        state: Draft | None = self
        while state is not None and not state.modified:
            state.modified = True
            state = state.parent

    def get(self, key: Any) -> Any:  # the get trap
        value = _peek(self.latest(), key)
        if isinstance(value, dict | list) and value is _peek(self.base, key):
            self.prepare_copy()
            child = Draft(value, self)
            self.copy[key] = child
            return child
        return value

    def set(self, key: Any, value: Any) -> None:  # the set trap
        if not self.modified:
            current = _peek(self.latest(), key)
            if js_same(value, current) and (value is not UNDEF or _has(self.base, key)):
                return
            self.prepare_copy()
            self.mark_changed()
        copy = self.copy
        if js_same(_peek(copy, key), value) and (value is not UNDEF or _has(copy, key)):
            return
        if isinstance(copy, list) and key >= len(copy):
            copy.extend([HOLE] * (key + 1 - len(copy)))
        copy[key] = value
        self.assigned[key] = True

    def delete(self, key: Any) -> None:  # the deleteProperty trap
        if isinstance(self.base, list):
            self.set(key, UNDEF)  # Immer's array trap: delete is a set to undefined
            return
        if key in self.base:
            self.assigned[key] = False
            self.prepare_copy()
            self.mark_changed()
        else:
            self.assigned.pop(key, None)
        if self.copy is not None:
            self.copy.pop(key, None)

    def set_length(self, n: int) -> None:  # the set trap for "length"
        if not self.modified:
            if n == len(self.latest()):
                return
            self.prepare_copy()
            self.mark_changed()
        copy = self.copy
        if len(copy) == n:
            return
        if n < len(copy):
            del copy[n:]
        else:
            copy.extend([HOLE] * (n - len(copy)))
        self.assigned["length"] = True


# generic operations on a draft or on a plain (new in this recipe, so untracked) container


def _latest(c: Any) -> Any:
    return c.latest() if isinstance(c, Draft) else c


def js_len(c: Any) -> int:
    return len(_latest(c))


def js_has(c: Any, key: Any) -> bool:
    return _has(_latest(c), key)


def js_get(c: Any, key: Any) -> Any:
    return c.get(key) if isinstance(c, Draft) else _peek(c, key)


def js_set(c: Any, key: Any, value: Any) -> None:
    if isinstance(c, Draft):
        c.set(key, value)
    elif isinstance(c, list):
        if key >= len(c):
            c.extend([HOLE] * (key + 1 - len(c)))
        c[key] = value
    else:
        c[key] = value


def js_delete(c: Any, key: Any) -> None:
    if isinstance(c, Draft):
        c.delete(key)
    elif isinstance(c, list):
        if key < len(c):
            c[key] = HOLE
    else:
        c.pop(key, None)


def js_set_length(c: Any, n: int) -> None:
    if isinstance(c, Draft):
        c.set_length(n)
    elif n < len(c):
        del c[n:]
    else:
        c.extend([HOLE] * (n - len(c)))


def js_push(c: Any, value: Any) -> None:
    n = js_len(c)
    js_set(c, n, value)
    js_set_length(c, n + 1)


def js_pop(c: Any) -> None:
    n = js_len(c)
    if n == 0:
        js_set_length(c, 0)
        return
    js_get(c, n - 1)
    js_delete(c, n - 1)
    js_set_length(c, n - 1)


def js_shift(c: Any) -> None:
    n = js_len(c)
    if n == 0:
        js_set_length(c, 0)
        return
    js_get(c, 0)
    for k in range(1, n):
        if js_has(c, k):
            js_set(c, k - 1, js_get(c, k))
        else:
            js_delete(c, k - 1)
    js_delete(c, n - 1)
    js_set_length(c, n - 1)


def js_splice(c: Any, start: int, delete_count: int, items: list[Any]) -> None:
    """``Array.prototype.splice`` (ES2023 23.1.3.31) with an in-range start and count."""
    n = js_len(c)
    for k in range(delete_count):
        if js_has(c, start + k):
            js_get(c, start + k)
    m = len(items)
    if m < delete_count:
        for k in range(start, n - delete_count):
            src, dst = k + delete_count, k + m
            if js_has(c, src):
                js_set(c, dst, js_get(c, src))
            else:
                js_delete(c, dst)
        for k in range(n, n - delete_count + m, -1):
            js_delete(c, k - 1)
    elif m > delete_count:
        for k in range(n - delete_count, start, -1):
            src, dst = k + delete_count - 1, k + m - 1
            if js_has(c, src):
                js_set(c, dst, js_get(c, src))
            else:
                js_delete(c, dst)
    for j, item in enumerate(items):
        js_set(c, start + j, item)
    js_set_length(c, n - delete_count + m)


def js_unshift(c: Any, items: list[Any]) -> None:
    js_splice(c, 0, 0, items)  # same Get/Set sequence as the unshift algorithm


# -- recipes -----------------------------------------------------------------------------------

OBJECT_MUTATIONS = ("set", "set", "set-undefined", "delete", "delete-absent")
ARRAY_MUTATIONS = (
    "set", "set-undefined", "push", "push-undefined", "pop", "shift", "unshift", "splice",
    "truncate",
)


def _children(c: Any) -> list[Any]:
    latest = _latest(c)
    items = latest.items() if isinstance(latest, dict) else enumerate(latest)
    return [k for k, v in items if isinstance(v, dict | list | Draft)]


def pick_container(draw: Draw, root: Draft) -> Any:
    node: Any = root
    while True:
        children = _children(node)
        if not children or draw(st.booleans()):
            return node
        node = js_get(node, draw(st.sampled_from(children)))


def mutate(draw: Draw, target: Any) -> None:
    """One random assignment, deletion or array method call on ``target``."""
    latest = _latest(target)
    if isinstance(latest, dict):
        kind = draw(st.sampled_from(OBJECT_MUTATIONS))
        existing = list(latest)
        if kind == "delete-absent" or not existing or draw(st.integers(0, 3)) == 0:
            key = draw(keys)
        else:
            key = draw(st.sampled_from(existing))
        if kind == "set":
            js_set(target, key, draw(fresh_values))
        elif kind == "set-undefined":
            js_set(target, key, UNDEF)
        else:
            js_delete(target, key)
        return
    n = len(latest)
    kind = draw(st.sampled_from(ARRAY_MUTATIONS))
    if kind in ("set", "set-undefined", "pop", "shift", "truncate") and n == 0:
        kind = "push"
    if kind == "set":
        js_set(target, draw(st.integers(0, n - 1)), draw(fresh_values))
    elif kind == "set-undefined":
        js_set(target, draw(st.integers(0, n - 1)), UNDEF)
    elif kind == "push":
        js_push(target, draw(fresh_values))
    elif kind == "push-undefined":
        js_push(target, UNDEF)
    elif kind == "pop":
        js_pop(target)
    elif kind == "shift":
        js_shift(target)
    elif kind == "unshift":
        js_unshift(target, draw(st.lists(fresh_values, min_size=1, max_size=2)))
    elif kind == "splice":
        start = draw(st.integers(0, n))
        count = draw(st.integers(0, n - start))
        js_splice(target, start, count, draw(st.lists(fresh_values, max_size=3)))
    else:
        js_set_length(target, draw(st.integers(0, n - 1)))


def _finalize(value: Any, path: list[Any] | None, patches: list[dict[str, Any]],
              legacy: bool) -> Any:
    if not isinstance(value, Draft):
        return value
    if not value.modified:
        return value.base
    result = value.copy
    if not value.finalized:
        value.finalized = True
        for key in list(range(len(result)) if isinstance(result, list) else result):
            child = result[key]
            if isinstance(child, Draft):
                # Immer: a child at an assigned key is part of the parent's patch
                child_path = None if path is None or key in value.assigned else [*path, key]
                result[key] = _finalize(child, child_path, patches, legacy)
        if path is not None:
            if isinstance(result, dict):
                _object_patches(value, result, path, patches)
            else:
                _array_patches(value, result, path, patches, legacy)
    return result


def _object_patches(state: Draft, copy: dict[str, Any], path: list[Any],
                    patches: list[dict[str, Any]]) -> None:
    base = state.base
    for key, assigned in state.assigned.items():
        orig, value = _peek(base, key), _peek(copy, key)
        op = "remove" if not assigned else "replace" if key in base else "add"
        if op == "replace" and js_same(orig, value):
            continue
        patch: dict[str, Any] = {"op": op, "path": [*path, key]}
        if op != "remove":
            patch["value"] = value
        patches.append(patch)


def _array_patches(state: Draft, copy: list[Any], path: list[Any],
                   patches: list[dict[str, Any]], legacy: bool) -> None:
    assert HOLE not in copy
    base = state.base
    for i in range(min(len(base), len(copy))):
        if state.assigned.get(i) and not js_same(copy[i], base[i]):
            patches.append({"op": "replace", "path": [*path, i], "value": copy[i]})
    for i in range(len(base), len(copy)):
        patches.append({"op": "add", "path": [*path, i], "value": copy[i]})
    if len(copy) < len(base):
        if legacy:
            patches.append({"op": "replace", "path": [*path, "length"], "value": len(copy)})
        else:
            for i in range(len(base) - 1, len(copy) - 1, -1):
                patches.append({"op": "remove", "path": [*path, i]})


def produce(draw: Draw, base: Any, legacy: bool = False,
            max_steps: int = 4) -> tuple[Any, list[dict[str, Any]]]:
    """One ``produceWithPatches(base, recipe)`` with a random recipe: (new state, patches)."""
    if not isinstance(base, dict | list):
        # Immer on a primitive: the recipe's result (or the base) with one root replace
        new = draw(st.one_of(st.just(base), fresh_values))
        return new, [{"op": "replace", "path": [], "value": new}]
    if draw(st.integers(0, 11)) == 0:
        new = draw(fresh_values)  # the recipe returns a new document
        return new, [{"op": "replace", "path": [], "value": new}]
    root = Draft(base, None)
    for _ in range(draw(st.integers(1, max_steps))):
        mutate(draw, pick_container(draw, root))
    patches: list[dict[str, Any]] = []
    return _finalize(root, [], patches, legacy), patches


# -- oracles and helpers ------------------------------------------------------------------------


def pointer(parts: list[Any] | tuple[Any, ...]) -> str:
    """RFC 6901 by the ``jsonpointer`` library (independent of ``server.patches``)."""
    return str(jsonpointer.JsonPointer.from_parts([str(p) for p in parts]).path)


def pointer_parts(ptr: str) -> tuple[str, ...]:
    return tuple(jsonpointer.JsonPointer(ptr).parts)


def jp_apply(state: Any, ops: list[dict[str, Any]]) -> Any:
    """Apply RFC 6902 ``ops`` with the ``jsonpatch`` library, on copies of both."""
    return jsonpatch.apply_patch(deep(state), deep(ops), in_place=True)


JP_ERRORS = (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException)


def walk_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (typed path, value) in a JSON value, the root first."""
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk_paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk_paths(v, (*path, i))


def value_at(value: Any, path: tuple[Any, ...] | list[Any]) -> Any:
    for seg in path:
        value = value[seg]
    return value


def _check_segment(node: Any, seg: Any, patch: dict[str, Any]) -> None:
    if isinstance(node, list):
        assert type(seg) is int, f"array index {seg!r} is not a number in {patch}"
    else:
        assert isinstance(node, dict), f"{patch} goes through a scalar"
        assert type(seg) is str, f"object key {seg!r} is not a string in {patch}"


def apply_typed_immer(state: Any, patches: list[dict[str, Any]]) -> Any:
    """Apply outgoing Immer patches strictly: only add/remove/replace, ``int`` indexes into
    arrays and ``str`` keys into objects, replace/remove only of what exists."""
    state = deep(state)
    for p in patches:
        assert p["op"] in ("add", "remove", "replace"), p
        path = p["path"]
        assert isinstance(path, list), p
        if not path:
            assert p["op"] != "remove", p
            state = deep(p["value"])
            continue
        node = state
        for seg in path[:-1]:
            _check_segment(node, seg, p)
            node = node[seg]
        last = path[-1]
        _check_segment(node, last, p)
        if isinstance(node, list):
            if p["op"] == "add":
                assert 0 <= last <= len(node), p
                node.insert(last, deep(p["value"]))
            else:
                assert 0 <= last < len(node), p
                if p["op"] == "remove":
                    del node[last]
                else:
                    node[last] = deep(p["value"])
        elif p["op"] == "remove":
            assert last in node, p
            del node[last]
        else:
            assert p["op"] == "add" or last in node, p
            node[last] = deep(p["value"])
    return state


# -- random RFC 6902 batches, checked against jsonpatch ----------------------------------------


def _rfc_target(draw: Draw, cur: Any, containers: list[tuple[Any, ...]]) -> str | None:
    if not containers:
        return None
    path = draw(st.sampled_from(containers))
    node = value_at(cur, path)
    if isinstance(node, dict):
        last: Any = draw(st.one_of(st.sampled_from([*node, ""]), keys))
    else:
        last = draw(st.one_of(st.integers(0, len(node)), st.just("-")))
    return pointer([*path, last])


def _rfc_op(draw: Draw, cur: Any) -> dict[str, Any] | None:
    paths = list(walk_paths(cur))
    every = [p for p, _ in paths]
    inner = every[1:]
    containers = [p for p, v in paths if isinstance(v, dict | list)]
    kinds = ["replace", "test"]
    if containers:
        kinds += ["add", "add", "copy"]
    if inner:
        kinds += ["remove", "move", "move"]
    kind = draw(st.sampled_from(kinds))
    if kind == "add":
        return {"op": "add", "path": _rfc_target(draw, cur, containers), "value": draw(json_values)}
    if kind == "remove":
        return {"op": "remove", "path": pointer(draw(st.sampled_from(inner)))}
    if kind == "replace":
        return {"op": "replace", "path": pointer(draw(st.sampled_from(every))),
                "value": draw(json_values)}
    if kind == "test":
        path = draw(st.sampled_from(every))
        return {"op": "test", "path": pointer(path), "value": deep(value_at(cur, path))}
    if kind == "copy":
        source = draw(st.sampled_from(every))
        return {"op": "copy", "from": pointer(source), "path": _rfc_target(draw, cur, containers)}
    source = draw(st.sampled_from(inner))
    # never into its own children (jsonpatch does not refuse that inside arrays)
    outside = [p for p in containers if p[: len(source)] != source]
    target = pointer(source) if draw(st.integers(0, 7)) == 0 else None
    target = target or _rfc_target(draw, cur, outside) or pointer(source)
    return {"op": "move", "from": pointer(source), "path": target}


def rfc_batch(draw: Draw, state: Any, max_ops: int = 4) -> tuple[list[dict[str, Any]], Any]:
    """A random valid RFC 6902 batch (add/remove/replace/move/copy/test) for ``state`` and the
    state ``jsonpatch`` computes for it."""
    ops: list[dict[str, Any]] = []
    cur = deep(state)
    for _ in range(draw(st.integers(1, max_ops))):
        op = _rfc_op(draw, cur)
        try:
            cur = jp_apply(cur, [op]) if op is not None else cur
        except JP_ERRORS:
            continue  # e.g. a move target index that the removal put out of range
        if op is not None:
            ops.append(op)
    return ops, cur
