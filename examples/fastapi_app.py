"""An existing FastAPI app that embeds the collaboration server: it signs users in, issues a
short-lived JWT per document, mounts the server under ``/collab``, and enforces a business rule
JSON Schema cannot express in a ``validate`` hook: only the person who reserved a gift may
unreserve it.

Run it (from the repository root)::

    GIFTS_JWT_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe(48))') \\
        .venv/bin/python -m uvicorn examples.fastapi_app:app --port 8000

then ``POST /login`` ``{"user": "ann", "password": "ann-password"}`` gives a session,
``GET /token?doc=gifts`` (``Authorization: Bearer SESSION``) a token for the WebSocket
``/collab/ws/gifts`` (subprotocol ``bearer.TOKEN``) and ``/collab/docs/gifts/state``.
The document: ``{"gifts": [{"id": "g1", "description": "Kite", "reservedBy": "ann"}]}``.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import jwt
from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel

from server import (
    Batch,
    Forbidden,
    HookContext,
    Hooks,
    JwtSettings,
    Settings,
    create_app,
    running,
)

SECRET = os.environ.get("GIFTS_JWT_SECRET") or secrets.token_urlsafe(48)
TOKEN_SECONDS = int(os.environ.get("GIFTS_TOKEN_SECONDS", "300"))
LEEWAY = float(os.environ.get("GIFTS_TOKEN_LEEWAY", "5"))  # clock skew allowed on exp
ISSUER, AUDIENCE = "gifts-app", "gifts-collab"
USERS = {"ann": "ann-password", "bob": "bob-password"}  # a stand-in for the app's user store
SESSIONS: dict[str, str] = {}  # session id -> user


# -- the business rule -------------------------------------------------------------------------


def _gifts(value: Any) -> list[dict[str, Any]]:
    items = value.get("gifts") if isinstance(value, dict) else value
    return [g for g in items if isinstance(g, dict)] if isinstance(items, list) else []


def _held_before(pointer: str, old: Any, after: Any) -> Iterator[tuple[Any, Any]]:
    """(gift id, who held it) for the gifts a value from ``batch.before`` held."""
    parts = pointer.split("/")[1:]
    if parts in ([], ["gifts"]):  # the whole document or the whole list
        for gift in _gifts(old):
            yield gift.get("id"), gift.get("reservedBy")
    elif len(parts) == 2 and parts[0] == "gifts" and isinstance(old, dict):  # one gift
        yield old.get("id"), old.get("reservedBy")
    elif len(parts) == 3 and parts[0] == "gifts" and parts[2] == "reservedBy":
        gifts = _gifts(after)
        index = int(parts[1]) if parts[1].isdigit() else -1
        yield (gifts[index].get("id") if 0 <= index < len(gifts) else None), old


async def only_the_reserver_unreserves(ctx: HookContext, batch: Batch, state: Any) -> None:
    """A reservation may be removed or changed only by the person who made it, and made only
    by the person it names."""
    user = ctx.principal.id
    after = {g.get("id"): g.get("reservedBy") for g in _gifts(state)}
    for pointer, old in batch.before.items():
        for gift_id, holder in _held_before(pointer, old, state):
            if holder is not None and holder != user and after.get(gift_id) != holder:
                raise Forbidden(f"only {holder} may unreserve this gift", path=pointer)
    for op in batch.ops:
        parts = op["path"].split("/")[1:]
        if parts[-1:] == ["reservedBy"] and op["op"] in ("add", "replace") and (
                op["value"] != user):
            raise Forbidden("reserve gifts for yourself only", path=op["path"])


# -- the app -----------------------------------------------------------------------------------

collab = create_app(
    Settings(
        store_url=os.environ.get("GIFTS_STORE", "memory://"),
        initial_state={"gifts": []},
        demo_dir=None,
        jwt=JwtSettings(key=SECRET, issuer=ISSUER, audience=AUDIENCE, leeway=LEEWAY),
    ),
    hooks=Hooks(validate=only_the_reserver_unreserves),
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with running(collab):  # FastAPI does not run a mounted app's lifespan: enter it here
        yield


app = FastAPI(lifespan=lifespan)


class Login(BaseModel):
    user: str
    password: str


def _user(authorization: str | None) -> str:
    session = (authorization or "").removeprefix("Bearer ").strip()
    user = SESSIONS.get(session)
    if user is None:
        raise HTTPException(401, "sign in first")
    return user


@app.post("/login")
async def login(body: Login) -> dict[str, str]:
    if not secrets.compare_digest(USERS.get(body.user, ""), body.password) or not body.password:
        raise HTTPException(401, "wrong user or password")
    session = secrets.token_urlsafe(24)
    SESSIONS[session] = body.user
    return {"session": session}


@app.get("/token")
async def token(doc: str,
                authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    """A short-lived token for one document; the browser client's ``getToken`` calls this on
    every (re)connect."""
    user = _user(authorization)
    now = int(time.time())
    claims = {"sub": user, "name": user.title(), "docs": [doc], "role": "write",
              "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + TOKEN_SECONDS}
    return {"token": jwt.encode(claims, SECRET, algorithm="HS256"), "expires_in": TOKEN_SECONDS}


app.mount("/collab", collab)
