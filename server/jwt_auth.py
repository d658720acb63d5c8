"""Signed access tokens (JWT, with PyJWT): verify one, and turn its claims into a Principal.

The algorithms come from the configuration (or from the key's type), never from the token
(RFC 8725 section 3.1): a token whose header names another algorithm (``none``, or ``HS256``
signed with an RSA public key as the secret) is refused. ``exp`` is required; ``iss`` and
``aud`` are checked when configured (a token with an ``aud`` is refused when none is
configured). ``leeway`` absorbs clock skew, also for the expiry checked during a session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .access import Principal, Role
from .config import JwtSettings
from .errors import Unauthorized

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


@dataclass(frozen=True, slots=True)
class _Key:
    key: Any
    algorithms: tuple[str, ...]


def _pem_key(text: str, algorithms: tuple[str, ...]) -> _Key:
    public = load_pem_public_key(text.encode())
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise ValueError("--jwt-key: an RSA key must have at least 2048 bits")
        derived: tuple[str, ...] = ("RS256",)
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    elif isinstance(public, ec.EllipticCurvePublicKey):
        name = _EC_ALGORITHMS.get(public.curve.name)
        if name is None:
            raise ValueError(f"--jwt-key: unsupported curve {public.curve.name}")
        derived, allowed = (name,), {name}
    elif isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        derived, allowed = ("EdDSA",), {"EdDSA"}
    else:
        raise ValueError("--jwt-key: an RSA, EC or Ed25519 public key is required")
    chosen = algorithms or derived
    if not set(chosen) <= allowed:
        raise ValueError(f"--jwt-algorithms {','.join(chosen)} do not fit this key")
    return _Key(public, chosen)


def _secret_key(secret: str, algorithms: tuple[str, ...]) -> _Key:
    chosen = algorithms or ("HS256",)
    if not set(chosen) <= {"HS256", "HS384", "HS512"}:
        raise ValueError(f"--jwt-algorithms {','.join(chosen)} do not fit an HMAC secret")
    need = max(int(a[2:]) // 8 for a in chosen)  # RFC 7518 3.2: at least the hash's size
    if len(secret.encode()) < need:
        raise ValueError(f"--jwt-key: an HMAC secret for {','.join(chosen)} must be at least "
                         f"{need} bytes")
    return _Key(secret.encode(), chosen)


def _jwks_keys(text: str, algorithms: tuple[str, ...]) -> dict[str | None, _Key]:
    try:
        keyset = jwt.PyJWKSet.from_json(text)
    except (jwt.PyJWTError, ValueError, KeyError) as exc:
        raise ValueError(f"--jwks-file: {exc}") from None
    keys: dict[str | None, _Key] = {}
    for jwk in keyset.keys:
        name = jwk.algorithm_name
        if algorithms and name not in algorithms:
            continue  # a key for an algorithm this server does not accept
        if name.startswith("HS") and len(jwk.key) < int(name[2:]) // 8:
            raise ValueError(f"--jwks-file: key {jwk.key_id}: secret too short for {name}")
        keys[jwk.key_id] = _Key(jwk.key, (name,))
    if not keys:
        raise ValueError("--jwks-file: no usable key")
    return keys


class JwtVerifier:
    """Verifies tokens against one key (``--jwt-key``) or a key set (``--jwks-file``, the key
    picked by the token's ``kid``)."""

    def __init__(self, settings: JwtSettings) -> None:
        self.settings = settings
        algorithms = tuple(settings.algorithms)
        if "none" in (a.lower() for a in algorithms):
            raise ValueError("--jwt-algorithms: none is not an algorithm")
        self.keys: dict[str | None, _Key] = {}
        if settings.jwks is not None:
            self.keys.update(_jwks_keys(settings.jwks, algorithms))
        if settings.key is not None:
            key = settings.key.strip()
            self.keys[None] = (_pem_key(key, algorithms) if key.startswith("-----BEGIN")
                               else _secret_key(settings.key, algorithms))
        if not self.keys:
            raise ValueError("JWT: give a key or a key set")

    def _key(self, token: str) -> _Key:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise Unauthorized("malformed token") from None
        if kid is not None and kid in self.keys:
            return self.keys[kid]
        if None in self.keys:
            return self.keys[None]
        if len(self.keys) == 1:
            return next(iter(self.keys.values()))
        raise Unauthorized("unknown key id")

    def verify(self, token: str) -> Principal:
        """The principal the token names; raises Unauthorized (with the reason) otherwise."""
        s = self.settings
        key = self._key(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=list(key.algorithms), audience=s.audience,
                issuer=s.issuer, leeway=s.leeway,
                options={"require": ["exp", *(["iss"] if s.issuer else []),
                                     *(["aud"] if s.audience else [])],
                         "enforce_minimum_key_length": True},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("the token is from another issuer") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthorized("the token's algorithm is not accepted") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"the token has no {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        return self.principal(claims)

    def principal(self, claims: dict[str, Any]) -> Principal:
        s = self.settings
        sub = claims.get(s.claim_sub)
        if not isinstance(sub, str) or not sub:
            raise Unauthorized(f"the token has no {s.claim_sub!r} claim")
        name = claims.get(s.claim_name)
        docs = claims.get(s.claim_docs, ())
        docs = (docs,) if isinstance(docs, str) else docs
        if not isinstance(docs, Sequence) or not all(isinstance(d, str) for d in docs):
            raise Unauthorized(f"the token's {s.claim_docs!r} claim must be a glob or globs")
        role = claims.get(s.claim_role, Role.READ.value)
        if role not in (Role.READ.value, Role.WRITE.value):
            raise Unauthorized(f"the token's {s.claim_role!r} claim must be read or write")
        exp = claims["exp"]
        return Principal(sub, name if isinstance(name, str) else None, tuple(docs), Role(role),
                         float(exp) + s.leeway, claims)

