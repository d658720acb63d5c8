"""HTTP endpoints: the state (GET/PATCH with ETags), the patches since a version, health."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from . import encoded
from .access import Handshake, Role
from .auth import Authenticator
from .config import DEFAULT_DOC, DOC_ID_RE
from .errors import ErrorCode, Forbidden, InvalidInput, ServerError, TooLarge
from .hooks import HookContext
from .hub import Hub, Session
from .messages import FORMATS, PatchRequest
from .protocol import loads, parse_ops

JSON = "application/json"
JSON_PATCH = "application/json-patch+json"


def error_response(exc: ServerError, extra: dict[str, Any] | None = None) -> Response:
    body: dict[str, Any] = {"error": exc.as_dict(), **(extra or {})}
    return Response(orjson.dumps(body), status_code=exc.http_status, media_type=JSON)


def _etag(version: int) -> str:
    return f'"{version}"'


def _etag_versions(header: str, weak: bool = True) -> set[str]:
    """The entity tags of a header, compared weakly (``W/`` ignored: If-None-Match) or strongly
    (weak tags never match: If-Match, RFC 9110 13.1.1)."""
    tags = set()
    for part in header.split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            if not weak:
                continue
            tag = tag[2:]
        tags.add(tag)
    return tags


# compressed state bodies, one per version and coding (the hub hands every reader of a version
# the same serialized text)
_BODIES = encoded.DerivedCache(max_entries=16, max_bytes=64 << 20)


async def _state_response(request: Request, version: int, body: str, *,
                          cached: bool = True) -> Response:
    """The state as the client accepts it: brotli or gzip when asked for (and worth it), else as
    it is.

    A compressed body is another representation of the same version, so its ETag is the weak
    ``W/"N"`` (RFC 9110 8.8.1: a strong tag names exactly these bytes); the identity keeps the
    strong ``"N"`` that ``If-Match`` needs. ``cached``: the head's text, shared by its readers
    (a past version is rebuilt per request, so its compressed body is not kept)."""
    coding = (encoded.negotiate(request.headers.get("accept-encoding"))
              if len(body) >= encoded.MIN_COMPRESS_BYTES else None)
    tag = _etag(version)
    headers = {"ETag": tag if coding is None else "W/" + tag, "Vary": "Accept-Encoding"}
    inm = request.headers.get("if-none-match")
    if inm is not None and (inm.strip() == "*" or tag in _etag_versions(inm)):
        return Response(status_code=304, headers=headers)
    if coding is None:
        return Response(body, media_type=JSON, headers=headers)
    encode = encoded.ENCODERS[coding]
    if cached:
        data = await _BODIES.get_async(body, coding, encode)
    elif len(body) >= encoded.THREAD_BYTES:
        data = await asyncio.to_thread(encode, body)
    else:
        data = encode(body)
    headers["Content-Encoding"] = coding
    return Response(data, media_type=JSON, headers=headers)


def _doc_id(request: Request) -> str:
    doc: str = request.path_params.get("doc", DEFAULT_DOC)
    if not DOC_ID_RE.match(doc):
        raise InvalidInput("document id must be 1-128 characters of [A-Za-z0-9._-]")
    return doc


def _version_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit():
        raise InvalidInput(f"{name} must be a non-negative integer")
    return int(raw)


async def _session(request: Request, write: bool = False) -> tuple[Session, HookContext]:
    """The document's session and who asks, once the bearer token (or the authenticate hook)
    allows it (see :mod:`server.auth`)."""
    hub: Hub = request.app.state.hub
    auth: Authenticator = request.app.state.auth
    doc = _doc_id(request)
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else None
    principal, role = await auth.admit(
        Handshake("http", doc, token or None, request.headers, request.query_params))
    if write and role is not Role.WRITE:
        raise Forbidden("this token is read-only")
    return await hub.session(doc), HookContext(principal, doc)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed ``limit``: from Content-Length,
    or while a chunked body streams in, so an oversized body is never held in memory."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def get_state(request: Request) -> Response:
    try:
        session, _ = await _session(request)
        at = _version_param(request, "version")
        if at is not None and at != session.published:
            body = await session.read_state_at(at)
            return await _state_response(request, at, body, cached=False)
        version, body = await session.read_state()
    except ServerError as exc:
        return error_response(exc)
    return await _state_response(request, version, body)


async def patch_state(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in (JSON, JSON_PATCH):
        return error_response(ServerError(
            f"use {JSON_PATCH} (RFC 6902) or {JSON} (Immer patches)",
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        ))
    try:
        body = await _read_body(request, hub.settings.limits.max_frame_bytes)
        session, ctx = await _session(request, write=True)
        ops = parse_ops(loads(body), "immer" if content_type == JSON else "json-patch",
                        hub.settings.limits)
        base = None
        if_match = request.headers.get("if-match")
        if if_match is not None and if_match.strip() != "*":
            current = session.published
            if _etag(current) not in _etag_versions(if_match, weak=False):
                raise ServerError(
                    f"the document is at version {current}", ErrorCode.PRECONDITION_FAILED
                )
            base = current
        version = await session.submit(PatchRequest(None, ops, base), context=ctx)
    except ServerError as exc:
        hub.metrics.rejected.labels(exc.code.value).inc()
        return error_response(exc)
    return Response(orjson.dumps({"version": version}), media_type=JSON,
                    headers={"ETag": _etag(version)})


async def get_patches(request: Request) -> Response:
    try:
        since = _version_param(request, "since")
        if since is None:
            raise InvalidInput("since is required")
        fmt = request.query_params.get("format", "immer")
        if fmt not in FORMATS:
            raise InvalidInput("format must be immer or json-patch")
        session, _ = await _session(request)
        if since > session.published:
            raise ServerError(
                f"since {since} is ahead of the current version {session.published}",
                ErrorCode.NOT_FOUND,
            )
        result = await session.read_patches(since, "immer" if fmt == "immer" else "json-patch")
    except ServerError as exc:
        return error_response(exc)
    if isinstance(result, int):
        return error_response(
            ServerError(f"versions after {since} were compacted away", ErrorCode.GONE),
            {"oldest": result},
        )
    version, patches = result
    body = f'{{"from":{since},"version":{version},"patches":{patches}}}'
    return Response(body, media_type=JSON)


async def health(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    try:
        await hub.store.ping()
    except Exception as exc:  # any failure of the store is unhealthy, whatever its type
        down = {"status": "unavailable", "store": f"error: {exc}"}
        return Response(orjson.dumps(down), status_code=503, media_type=JSON)
    body = {"status": "ok", "store": "ok", "epoch": hub.store.epoch,
            "documents": len(hub.sessions)}
    return Response(orjson.dumps(body), media_type=JSON)


async def metrics(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    return Response(hub.metrics.render(), media_type=CONTENT_TYPE_LATEST)
