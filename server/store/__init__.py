"""Stores, chosen by URL scheme (``memory://``, ``sqlite:///path``, ``redis://host:port/db``),
imported lazily."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from .base import CommitResult, Duplicate, LogEntry, Stale, Store, StoredDocument

__all__ = ["CommitResult", "Duplicate", "LogEntry", "Stale", "Store", "StoredDocument",
           "open_store"]


def open_store(url: str) -> Store:
    """A store for ``url`` (not yet opened: call ``await store.open()``)."""
    parts = urlsplit(url)
    if parts.scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore()
    if parts.scheme == "sqlite":
        from .sqlite import SQLiteStore

        # sqlite:///relative/path, sqlite:////absolute/path (as SQLAlchemy spells them)
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise ValueError("sqlite:// needs a path, e.g. sqlite:///./data/documents.db")
        options = parse_qs(parts.query)
        return SQLiteStore(path, synchronous=options.get("synchronous", ["full"])[0])
    if parts.scheme in ("redis", "rediss", "unix"):
        from .redis import RedisStore

        return RedisStore(url)
    raise ValueError(
        f"unknown store scheme {parts.scheme!r} (use memory://, sqlite:///path or redis://host)"
    )
