"""Who is connecting, and with which role: a Handshake in, a Principal and a Role out.

The sources, in order: an ``authenticate`` hook (when given, the only one); else the token
file (``--auth``), then signed tokens (``--jwt-key``/``--jwks-file``); with none of them the
server is open (every client is :data:`~server.access.ANONYMOUS`, with write access).
Then the role on the document: an ``authorize`` hook, else the principal's own documents and
role. Raises Unauthorized (no or a bad credential) or Forbidden (not this document).
"""

from __future__ import annotations

from .access import ANONYMOUS, Handshake, Principal, Role, Tokens
from .config import Settings
from .errors import Forbidden, Unauthorized
from .hooks import HookRunner
from .jwt_auth import JwtVerifier


class Authenticator:
    def __init__(self, settings: Settings, hooks: HookRunner) -> None:
        self.tokens = Tokens.load(settings.auth_file) if settings.auth_file else None
        self.jwt = JwtVerifier(settings.jwt) if settings.jwt is not None else None
        self.hooks = hooks

    @property
    def open(self) -> bool:
        return self.tokens is None and self.jwt is None and not self.hooks.authenticates

    async def principal(self, handshake: Handshake) -> Principal:
        if self.hooks.authenticates:
            principal = await self.hooks.authenticate(handshake)
        elif self.open:
            return ANONYMOUS
        else:
            principal = self._from_token(handshake.token)
        if principal.expired():
            raise Unauthorized("the credential has expired")
        return principal

    def _from_token(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized("a token is required")
        if self.tokens is not None:
            principal = self.tokens.principal(token)
            if principal is not None:
                return principal
        if self.jwt is not None and token.count(".") == 2:
            return self.jwt.verify(token)
        raise Unauthorized("unknown token")

    async def role(self, principal: Principal, doc: str) -> Role:
        if self.hooks.authorizes:
            return await self.hooks.authorize(principal, doc)
        if not principal.covers(doc):
            raise Forbidden(f"this token does not grant access to document {doc!r}")
        return principal.role

    async def admit(self, handshake: Handshake) -> tuple[Principal, Role]:
        principal = await self.principal(handshake)
        return principal, await self.role(principal, handshake.doc)
