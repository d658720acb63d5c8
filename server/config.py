"""Server settings: one frozen dataclass built by the CLI (or by tests) and passed down."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .schema import SchemaRule

DOC_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}\Z")
CLIENT_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
DEFAULT_DOC = "default"
DEFAULT_STORE = "sqlite:///./data/documents.db"


@dataclass(frozen=True, slots=True)
class Limits:
    """Input limits; each is a CLI flag (see ``server.cli``)."""

    max_frame_bytes: int = 1 << 20
    max_ops: int = 10_000
    max_depth: int = 64
    max_string_bytes: int = 1 << 20
    max_key_bytes: int = 1024
    max_document_bytes: int = 16 << 20


@dataclass(frozen=True, slots=True)
class JwtSettings:
    """Signed access tokens (``--jwt-key``/``--jwks-file``), as plain data; verified by
    :mod:`server.jwt_auth`. ``key`` is an HMAC secret or a PEM public key (its text);
    ``jwks`` a JSON Web Key Set (its text). The algorithms are fixed here, never read from a
    token; empty: derived from the key (HS256, RS256, ES256/384/512 by curve)."""

    key: str | None = None
    jwks: str | None = None
    algorithms: tuple[str, ...] = ()
    issuer: str | None = None
    audience: str | None = None
    leeway: float = 10.0
    # claim names: the user id, display name, documents (glob or list of globs) and role
    claim_sub: str = "sub"
    claim_name: str = "name"
    claim_docs: str = "docs"
    claim_role: str = "role"


@dataclass(frozen=True, slots=True)
class Settings:
    store_url: str = DEFAULT_STORE
    initial_state: Any = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    # a snapshot is written every this many versions (and when the log since it outgrows it)
    snapshot_every: int = 1000
    # versions of log kept behind the head (resume with since=, GET .../patches, stale bases)
    retain_versions: int = 10_000
    # a base older than this many versions behind the head is rejected as a conflict
    max_base_lag: int = 1000
    # documents with no connection are dropped from memory after this many seconds
    idle_seconds: float = 60.0
    # newcomers get a cached snapshot plus at most this many patches after it
    max_join_tail: int = 64
    # per-connection outbound queue bounds; over them the client is closed with 1013
    max_queue_messages: int = 10_000
    max_queue_bytes: int = 16 << 20
    # per-connection token bucket: sustained batches per second and burst (0: no limit)
    rate: float = 100.0
    burst: float = 200.0
    # origins allowed to open WebSockets besides the server's own ("*": any)
    allow_origins: tuple[str, ...] = ()
    # the token file (``--auth``) and signed tokens (``--jwt-key``/``--jwks-file``)
    auth_file: str | None = None
    jwt: JwtSettings | None = None
    schemas: tuple[SchemaRule, ...] = ()
    demo_dir: str | None = None
