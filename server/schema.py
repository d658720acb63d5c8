"""``--schema DOC_GLOB=FILE.json``: JSON Schema validation of every batch's result."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

from .errors import InvalidInput
from .patches import to_pointer


@dataclass(frozen=True, slots=True)
class SchemaRule:
    pattern: str
    source: str
    validate: Callable[[Any], Any]

    @classmethod
    def parse(cls, spec: str) -> SchemaRule:
        pattern, sep, file = spec.partition("=")
        if not sep or not pattern or not file:
            raise ValueError(f"--schema takes DOC_GLOB=FILE.json, not {spec!r}")
        schema = orjson.loads(Path(file).read_bytes())
        return cls(pattern, file, fastjsonschema.compile(schema))


def checker(rules: tuple[SchemaRule, ...], doc: str) -> Callable[[Any], None] | None:
    """The check for ``doc`` (the first rule whose glob matches), for ``Document.apply``."""
    rule = next((r for r in rules if fnmatch.fnmatchcase(doc, r.pattern)), None)
    if rule is None:
        return None
    validate = rule.validate

    def check(state: Any) -> None:
        try:
            validate(state)
        except fastjsonschema.JsonSchemaValueException as exc:
            path = to_pointer(list(exc.path[1:])) if exc.path else ""
            raise InvalidInput(f"schema: {path or '/'}: {exc.message}", path=path) from None

    return check
