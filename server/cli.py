"""``python -m server``: flags (each also an ``IMMER_SERVER_*`` environment variable) over
:func:`run`."""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette

from .app import Entry, create_app
from .config import DEFAULT_STORE, JwtSettings, Limits, Settings
from .hooks import Hooks
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
    p.add_argument("--jwt-key", default=_env("jwt_key", None), metavar="SECRET|FILE",
                   help="verify signed access tokens (JWT): an HMAC secret (HS256, at least 32 "
                   "bytes; better in the environment variable or a file), or a file holding "
                   "one or an RSA/EC public key (PEM)")
    p.add_argument("--jwks-file", type=Path, default=_env("jwks_file", None), metavar="FILE",
                   help="verify JWTs against a JSON Web Key Set (the key picked by kid)")
    p.add_argument("--jwt-algorithms", default=_env("jwt_algorithms", ""), metavar="ALG,...",
                   help="accepted algorithms (default: from the key: HS256, RS256, ES256...); "
                   "never taken from the token")
    p.add_argument("--jwt-issuer", default=_env("jwt_issuer", None),
                   help="required iss claim")
    p.add_argument("--jwt-audience", default=_env("jwt_audience", None),
                   help="required aud claim")
    p.add_argument("--jwt-leeway", type=float, default=float(_env("jwt_leeway", 10)),
                   metavar="SECONDS", help="clock skew allowed on exp/nbf/iat (default 10)")
    p.add_argument("--jwt-claims", default=_env("jwt_claims", ""),
                   metavar="FIELD=CLAIM,...", help="claim names for sub, name, docs and role "
                   "(e.g. sub=uid,docs=rooms; default: the same names)")
    p.add_argument("--hooks", default=_env("hooks", None), metavar="MODULE:ATTRIBUTE",
                   help="server-side hooks: a server.Hooks object, e.g. myapp.collab:hooks")
    p.add_argument("--schema", action="append", default=_env_list("schema"),
                   metavar="DOC_GLOB=FILE.json",
                   help="validate documents matching the glob against a JSON Schema; repeatable")
    p.add_argument("--presence-ttl", type=float, default=float(_env("presence_ttl", 30)),
                   metavar="S", help="presence of a socket that stops answering pings, or of a "
                   "dead process, is gone after S seconds (default 30; WebSocket pings every S/2)")
    p.add_argument("--presence-tick", type=float, default=float(_env("presence_tick", 0.05)),
                   metavar="S", help="presence changes go out once per tick (default 0.05; "
                   "0: every update at once)")
    p.add_argument("--presence-rate", type=float, default=float(_env("presence_rate", 20)),
                   help="presence updates per second per connection; over it they are dropped "
                   "(default 20; 0: off)")
    p.add_argument("--presence-burst", type=float, default=float(_env("presence_burst", 40)),
                   help="presence updates per connection allowed in a burst (default 40)")
    p.add_argument("--read-only-presence", action=argparse.BooleanOptionalAction,
                   default=_env("read_only_presence", "1") not in ("0", "false", "no", "off"),
                   help="read-only connections may set presence (default on)")
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
        auth_file=str(args.auth) if args.auth else None,
        jwt=jwt_settings(args),
        schemas=tuple(SchemaRule.parse(spec) for spec in args.schema),
        demo_dir=str(args.demo_dir) if args.demo_dir else None,
        presence_ttl=args.presence_ttl,
        presence_tick=args.presence_tick,
        presence_rate=args.presence_rate,
        presence_burst=args.presence_burst,
        presence_read_only=args.read_only_presence,
    )


def jwt_settings(args: argparse.Namespace) -> JwtSettings | None:
    if not args.jwt_key and not args.jwks_file:
        return None
    key = args.jwt_key
    if key and Path(key).is_file():
        key = Path(key).read_text()
    elif key and key.endswith((".pem", ".key")):
        raise ValueError(f"--jwt-key: no such file {key}")
    claims = {}
    for item in filter(None, args.jwt_claims.split(",")):
        field, sep, claim = item.partition("=")
        if not sep or field not in ("sub", "name", "docs", "role") or not claim:
            raise ValueError(f"--jwt-claims takes sub|name|docs|role=CLAIM, not {item!r}")
        claims[f"claim_{field}"] = claim
    return JwtSettings(
        key=key or None,
        jwks=Path(args.jwks_file).read_text() if args.jwks_file else None,
        algorithms=tuple(a.strip() for a in args.jwt_algorithms.split(",") if a.strip()),
        issuer=args.jwt_issuer,
        audience=args.jwt_audience,
        leeway=args.jwt_leeway,
        **claims,
    )


def load_hooks(spec: str) -> Hooks:
    """``package.module:attribute`` -> the Hooks object it names."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"--hooks takes package.module:attribute, not {spec!r}")
    try:
        hooks = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--hooks {spec}: {exc}") from exc
    if not isinstance(hooks, Hooks):
        raise ValueError(f"--hooks {spec}: not a server.Hooks object")
    return hooks


class RedactTokens(logging.Filter):
    """Access tokens travel in WebSocket URLs (``?token=``): keep them out of every log line."""

    PATTERN = re.compile(r"(token=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = self.PATTERN.sub(r"\1[redacted]", message), ()
        return True


WS_PROTOCOL = "server.wsfast:PreparedFrameProtocol"


def tune_gc() -> None:
    """Our process only (not an app that embeds create_app): what is alive at startup (modules,
    the app) is frozen out of the cyclic collector's scans, and the youngest generation is
    collected every 50,000 allocations instead of 700; the older two keep their default ratios,
    so cycles left by closed connections are still collected every few million allocations.
    Reference counting frees nearly all of this server's garbage; the collector's pauses showed
    as the slowest deliveries (a paced fan-out's maximum latency fell from about 25 to 10 ms)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)


def run(settings: Settings, host: str = "127.0.0.1", port: int = 8000,
        log_level: str = "info", app: Starlette | None = None, *, ws_deflate: bool = True,
        prepared_frames: bool = True) -> None:
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    for name in ("uvicorn.access", "uvicorn.error", "server"):
        logging.getLogger(name).addFilter(RedactTokens())
    tune_gc()
    uvicorn.run(
        Entry(app if app is not None else create_app(settings)),
        interface="asgi3",  # Entry returns the app's coroutine rather than being a coroutine
        host=host,
        port=port,
        log_level=log_level,
        ws=WS_PROTOCOL if prepared_frames else "auto",
        ws_max_size=settings.limits.max_frame_bytes,
        # uvicorn's own deflate compresses every frame once per connection: only ours shares it
        ws_per_message_deflate=ws_deflate and prepared_frames,
        # a socket that stops answering pings is closed, and its presence removed, within the
        # presence TTL (ASGI does not show pings to the application: see server/presence_hub.py)
        ws_ping_interval=settings.presence_ttl / 2,
        ws_ping_timeout=settings.presence_ttl / 2,
        timeout_graceful_shutdown=10,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        hooks = load_hooks(args.hooks) if args.hooks else None
        app = create_app(settings, hooks=hooks)
    except (OSError, ValueError) as exc:  # unreadable or malformed file named by a flag
        sys.exit(f"error: {exc}")
    run(settings, args.host, args.port, args.log_level, app, ws_deflate=args.ws_deflate,
        prepared_frames=args.ws_prepared_frames)
