"""Who may connect, and what they may do: principals, roles, the token file and the WebSocket
origin policy. Plain data and pure checks; signed tokens are :mod:`server.jwt_auth`, the order in
which the sources are asked is :mod:`server.auth`.

Tokens come from ``--auth FILE`` (JSON or TOML): a map of token to the documents it may reach
(one glob or a list of globs) and its role, ``read`` or ``write``, optionally a ``sub`` and a
``name``::

    {"s3cr3t": {"docs": "*", "role": "write"},
     "viewer": {"docs": ["public-*", "default"], "role": "read"}}

Without ``--auth``, ``--jwt-key``/``--jwks-file`` or an ``authenticate`` hook the server is open:
anyone who can reach it may read and write every document.
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson


class Role(StrEnum):
    READ = "read"
    WRITE = "write"


def covers(patterns: tuple[str, ...], doc: str) -> bool:
    return any(fnmatch.fnmatchcase(doc, pattern) for pattern in patterns)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is connected: a user id, a display name, the documents and role they were granted,
    and when their credential expires (seconds since the epoch; None: never). ``claims`` holds
    the verified token's claims (empty for the token file)."""

    id: str
    name: str | None = None
    docs: tuple[str, ...] = ("*",)
    role: Role = Role.WRITE
    expires: float | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:  # accept "read"/"write" and a single glob from hooks
        object.__setattr__(self, "role", Role(self.role))
        if isinstance(self.docs, str):
            object.__setattr__(self, "docs", (self.docs,))

    def covers(self, doc: str) -> bool:
        return covers(self.docs, doc)

    def expired(self, now: float | None = None) -> bool:
        return self.expires is not None and (time.time() if now is None else now) >= self.expires


ANONYMOUS = Principal("anonymous")


@dataclass(frozen=True, slots=True)
class Handshake:
    """What a client presents when it connects (WebSocket) or sends a request (HTTP): the input
    of an ``authenticate`` hook. ``token`` is the bearer token found in the usual places."""

    transport: Literal["websocket", "http"]
    doc: str
    token: str | None
    headers: Mapping[str, str]
    query: Mapping[str, str]
    client: str | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    docs: tuple[str, ...]
    role: Role
    sub: str | None = None
    name: str | None = None

    def covers(self, doc: str) -> bool:
        return covers(self.docs, doc)


@dataclass(frozen=True, slots=True)
class Tokens:
    grants: dict[str, Grant]

    @classmethod
    def load(cls, path: str | Path) -> Tokens:
        raw = Path(path).read_bytes()
        data: Any = tomllib.loads(raw.decode()) if str(path).endswith(".toml") else (
            orjson.loads(raw)
        )
        if not isinstance(data, dict):
            raise ValueError("the auth file must map tokens to {docs, role}")
        grants = {}
        for token, grant in data.items():
            if not isinstance(grant, dict) or grant.get("role") not in ("read", "write"):
                raise ValueError(f"token {token[:4]}...: role must be read or write")
            docs = grant.get("docs", "*")
            docs = (docs,) if isinstance(docs, str) else tuple(docs)
            if not docs or not all(isinstance(d, str) for d in docs):
                raise ValueError(f"token {token[:4]}...: docs must be a glob or a list of globs")
            sub, name = grant.get("sub"), grant.get("name")
            if not isinstance(sub, str | None) or not isinstance(name, str | None):
                raise ValueError(f"token {token[:4]}...: sub and name must be strings")
            grants[token] = Grant(docs, Role(grant["role"]), sub, name)
        return cls(grants)

    def principal(self, token: str) -> Principal | None:
        """The principal of a token of the file, or None when the file does not have it."""
        grant = self.grants.get(token)
        if grant is None:
            return None
        sub = grant.sub or "token:" + hashlib.sha256(token.encode()).hexdigest()[:12]
        return Principal(sub, grant.name, grant.docs, grant.role)


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """Cross-site WebSocket hijacking defence. Browsers always send Origin on an upgrade;
    other clients usually do not, and are allowed. A browser origin must be the server's own
    (its host and port equal the Host header) or listed with ``--allow-origin`` (``*``: any)."""
    if origin is None:
        return True
    if "*" in allowed or origin.rstrip("/") in allowed:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and host is not None and parts.netloc == host
