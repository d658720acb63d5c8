"""Who may connect, and what they may do: the WebSocket origin policy and bearer tokens.

Tokens come from ``--auth FILE`` (JSON or TOML): a map of token to the documents it may reach
(one glob or a list of globs) and its role, ``read`` or ``write``::

    {"s3cr3t": {"docs": "*", "role": "write"},
     "viewer": {"docs": ["public-*", "default"], "role": "read"}}

Without ``--auth`` the server is open: anyone who can reach it may read and write every
document.
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from .errors import Forbidden, Unauthorized


class Role(StrEnum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class Grant:
    docs: tuple[str, ...]
    role: Role
    user: str | None = None  # the token's ``user`` (or ``name``): who it is, shown in presence

    def covers(self, doc: str) -> bool:
        return any(fnmatch.fnmatchcase(doc, pattern) for pattern in self.docs)


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
            user = grant.get("user", grant.get("name"))
            if user is not None and not isinstance(user, str):
                raise ValueError(f"token {token[:4]}...: user must be a string")
            grants[token] = Grant(docs, Role(grant["role"]), user)
        return cls(grants)

    def role(self, token: str | None, doc: str) -> Role:
        """The role of ``token`` on ``doc``; raises Unauthorized or Forbidden."""
        if not token:
            raise Unauthorized("a token is required")
        grant = self.grants.get(token)
        if grant is None:
            raise Unauthorized("unknown token")
        if not grant.covers(doc):
            raise Forbidden(f"this token does not grant access to document {doc!r}")
        return grant.role

    def user(self, token: str | None) -> str | None:
        """Who ``token`` is (the identity presence shows), or None: never from the client."""
        grant = self.grants.get(token) if token else None
        return grant.user if grant is not None else None


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
