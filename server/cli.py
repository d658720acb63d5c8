"""``python -m server``: flags (each also an ``IMMER_SERVER_*`` environment variable) over
:func:`run`."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from .access import Tokens
from .app import create_app
from .config import DEFAULT_STORE, Limits, Settings
from .schema import SchemaRule

ENV_PREFIX = "IMMER_SERVER_"
_LIMITS = Limits()
DEFAULT_DEMO = Path(__file__).resolve().parent.parent / "client_demo" / "dist"


def _env(name: str, default: Any) -> Any:
    return os.environ.get(ENV_PREFIX + name.upper().replace("-", "_"), default)


def _env_list(name: str) -> list[str]:
    raw = _env(name, "")
    return [item for item in raw.split(",") if item] if raw else []


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m server",
        description="Authoritative collaborative-state server for Immer apps.",
        epilog=f"Every flag can also be set as an environment variable {ENV_PREFIX}<FLAG>, "
        f"e.g. {ENV_PREFIX}STORE=memory://.",
    )
    p.add_argument("--host", default=_env("host", "127.0.0.1"), help="interface to listen on")
    p.add_argument("--port", type=int, default=int(_env("port", 8000)), help="TCP port")
    p.add_argument("--store", default=_env("store", DEFAULT_STORE),
                   help="memory://, sqlite:///path/to.db[?synchronous=full|normal] or "
                   f"redis://host:port/db (default {DEFAULT_STORE})")
    p.add_argument("--initial-state", type=Path, default=_env("initial_state", None),
                   metavar="FILE", help="JSON document new documents start from (default {})")
    p.add_argument("--demo-dir", type=Path, default=_env("demo_dir", DEFAULT_DEMO),
                   help="built demo served at / (default client_demo/dist, when it exists)")
    p.add_argument("--snapshot-every", type=int, default=int(_env("snapshot_every", 1000)),
                   metavar="N", help="write a snapshot every N versions (default 1000)")
    p.add_argument("--retain-versions", type=int, default=int(_env("retain_versions", 10_000)),
                   metavar="N", help="keep N versions of log behind the head (default 10000)")
    p.add_argument("--max-base-lag", type=int, default=int(_env("max_base_lag", 1000)),
                   metavar="N", help="oldest base accepted, in versions behind the head")
    p.add_argument("--idle-seconds", type=float, default=float(_env("idle_seconds", 60)),
                   help="evict documents without connections after this long (default 60)")
    p.add_argument("--max-frame-bytes", type=int,
                   default=int(_env("max_frame_bytes", _LIMITS.max_frame_bytes)),
                   help="largest WebSocket frame / HTTP body (default 1 MiB; over it: 1009/413)")
    p.add_argument("--max-ops", type=int, default=int(_env("max_ops", _LIMITS.max_ops)),
                   help="operations per batch (default 10000)")
    p.add_argument("--max-depth", type=int, default=int(_env("max_depth", _LIMITS.max_depth)),
                   choices=range(1, 201), metavar="1..200",
                   help="nesting depth of the document, paths and values (default 64)")
    p.add_argument("--max-string-bytes", type=int,
                   default=int(_env("max_string_bytes", _LIMITS.max_string_bytes)),
                   help="longest string value (default 1 MiB)")
    p.add_argument("--max-key-bytes", type=int,
                   default=int(_env("max_key_bytes", _LIMITS.max_key_bytes)),
                   help="longest object key or path segment (default 1024)")
    p.add_argument("--max-document-bytes", type=int,
                   default=int(_env("max_document_bytes", _LIMITS.max_document_bytes)),
                   help="largest document after a batch (default 16 MiB; over it: too_large)")
    p.add_argument("--max-queue-messages", type=int,
                   default=int(_env("max_queue_messages", 10_000)),
                   help="outbound queue bound per connection; over it: close 1013")
    p.add_argument("--max-queue-bytes", type=int, default=int(_env("max_queue_bytes", 16 << 20)),
                   help="outbound queue bound in bytes per connection (default 16 MiB)")
    p.add_argument("--rate", type=float, default=float(_env("rate", 100)),
                   help="batches per second per connection, sustained (default 100; 0: off)")
    p.add_argument("--burst", type=float, default=float(_env("burst", 200)),
                   help="batches per connection allowed in a burst (default 200)")
    p.add_argument("--allow-origin", action="append", default=_env_list("allow_origin"),
                   metavar="ORIGIN", help="an origin (e.g. https://app.example.com) allowed to "
                   "open WebSockets besides the server's own; repeatable; * allows any")
    p.add_argument("--auth", type=Path, default=_env("auth", None), metavar="FILE",
                   help="JSON or TOML map of token -> {docs: glob(s), role: read|write}; "
                   "without it the server is open to anyone who can reach it")
    p.add_argument("--schema", action="append", default=_env_list("schema"),
                   metavar="DOC_GLOB=FILE.json",
                   help="validate documents matching the glob against a JSON Schema; repeatable")
    p.add_argument("--ws-deflate", action=argparse.BooleanOptionalAction,
                   default=_env("ws_deflate", "1") not in ("0", "false", "no"),
                   help="negotiate permessage-deflate when a client offers it, one compressed "
                   "frame shared by all (default on)")
    p.add_argument("--ws-prepared-frames", action=argparse.BooleanOptionalAction,
                   default=_env("ws_prepared_frames", "1") not in ("0", "false", "no"),
                   help="build each frame once and write it directly to every subscriber "
                   "(server.wsfast; default on; off: uvicorn's own WebSocket protocol)")
    p.add_argument("--log-level", default=_env("log_level", "info"),
                   choices=["debug", "info", "warning", "error"])
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    initial: Any = {}
    if args.initial_state is not None:
        initial = orjson.loads(Path(args.initial_state).read_bytes())
    limits = Limits(
        max_frame_bytes=args.max_frame_bytes,
        max_ops=args.max_ops,
        max_depth=args.max_depth,
        max_string_bytes=args.max_string_bytes,
        max_key_bytes=args.max_key_bytes,
        max_document_bytes=args.max_document_bytes,
    )
    return Settings(
        store_url=args.store,
        initial_state=initial,
        limits=limits,
        snapshot_every=args.snapshot_every,
        retain_versions=args.retain_versions,
        max_base_lag=args.max_base_lag,
        idle_seconds=args.idle_seconds,
        max_queue_messages=args.max_queue_messages,
        max_queue_bytes=args.max_queue_bytes,
        rate=args.rate,
        burst=args.burst,
        allow_origins=tuple(o.rstrip("/") for o in args.allow_origin),
        tokens=Tokens.load(args.auth) if args.auth else None,
        schemas=tuple(SchemaRule.parse(spec) for spec in args.schema),
        demo_dir=str(args.demo_dir) if args.demo_dir else None,
    )


class RedactTokens(logging.Filter):
    """Access tokens travel in WebSocket URLs (``?token=``): keep them out of every log line."""

    PATTERN = re.compile(r"(token=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = self.PATTERN.sub(r"\1[redacted]", message), ()
        return True


WS_PROTOCOL = "server.wsfast:PreparedFrameProtocol"


def run(settings: Settings, host: str = "127.0.0.1", port: int = 8000,
        log_level: str = "info", *, ws_deflate: bool = True,
        prepared_frames: bool = True) -> None:
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    for name in ("uvicorn.access", "uvicorn.error", "server"):
        logging.getLogger(name).addFilter(RedactTokens())
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        ws=WS_PROTOCOL if prepared_frames else "auto",
        ws_max_size=settings.limits.max_frame_bytes,
        # uvicorn's own deflate compresses every frame once per connection: only ours shares it
        ws_per_message_deflate=ws_deflate and prepared_frames,
        timeout_graceful_shutdown=10,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except (OSError, ValueError) as exc:  # unreadable or malformed file named by a flag
        sys.exit(f"error: {exc}")
    run(settings, args.host, args.port, args.log_level, ws_deflate=args.ws_deflate,
        prepared_frames=args.ws_prepared_frames)
