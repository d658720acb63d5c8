"""Signed access tokens (``--jwt-key``, ``--jwks-file``) against a real server: what is accepted,
everything that must be refused (RFC 8725: algorithms fixed by configuration), roles and
documents from the claims, the token file as a second source, and a token that expires during
a session, resumed with a fresh one without losing or repeating anything."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.exceptions import ConnectionClosed

from .clients import WsClient, closed_with, joined
from .conftest import ServerFactory, ServerProcess

SECRET = "a-test-secret-of-at-least-32-bytes-0123456789-long-enough-for-hs512!"
ISSUER, AUDIENCE = "https://app.example", "collab"
ADD_A = [{"op": "add", "path": ["a"], "value": 1}]
ADD_B = [{"op": "add", "path": ["b"], "value": 2}]


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "ann", "name": "Ann", "docs": "gift*", "role": "write", "iss": ISSUER,
            "aud": AUDIENCE, "iat": now, "exp": now + 300}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def hs(key: str = SECRET, algorithm: str = "HS256", **extra: Any) -> str:
    return jwt.encode(claims(**extra), key, algorithm=algorithm)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], sign: bytes | None) -> str:
    """A token built by hand, as an attacker would (PyJWT refuses to make these)."""
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    signature = hmac.new(sign, head.encode(), hashlib.sha256).digest() if sign else b""
    return head + "." + b64(signature)


def refused(server: ServerProcess, doc: str, token: str) -> str:
    """The error code a WebSocket connection with ``token`` is refused with (then 1008)."""
    with WsClient(server.ws_url(f"/ws/{doc}"), subprotocols=[f"bearer.{token}"]) as c:
        message = c.recv()
        assert message["type"] == "error", message
        assert closed_with(c) == 1008
        code: str = message["error"]["code"]
        return code


def http_state(server: ServerProcess, doc: str, token: str) -> httpx.Response:
    return httpx.get(f"{server.url}/docs/{doc}/state",
                     headers={"authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def hs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("jwt")
    server = ServerProcess(["--store", "memory://", "--jwt-key", SECRET, "--jwt-issuer", ISSUER,
                            "--jwt-audience", AUDIENCE, "--jwt-leeway", "0"], tmp / "server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def rs_server(tmp_path_factory: pytest.TempPathFactory,
              rsa_key: rsa.RSAPrivateKey) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("jwt-rs")
    pem = tmp / "public.pem"
    pem.write_bytes(public_pem(rsa_key))
    server = ServerProcess(["--store", "memory://", "--jwt-key", str(pem)], tmp / "server.log")
    server.start()
    yield server
    server.stop()


# -- accepted ----------------------------------------------------------------------------------


def test_a_valid_token_reads_and_writes(hs_server: ServerProcess) -> None:
    token = hs()
    with joined(hs_server, "/ws/gift-ok", subprotocols=[f"bearer.{token}"]) as c:
        assert c.ws.subprotocol == f"bearer.{token}"
        c.patch(1, ADD_A)
        assert c.expect("ack")["version"] == 1
    with joined(hs_server, f"/ws/gift-ok?token={token}") as q:  # the query string works too
        assert q.state == {"a": 1}
    assert http_state(hs_server, "gift-ok", token).json() == {"a": 1}
    r = httpx.patch(f"{hs_server.url}/docs/gift-ok/state", json=ADD_B,
                    headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json() == {"version": 2}
    assert token not in hs_server.log()


def test_rs256_and_es256_public_keys(rs_server: ServerProcess, rsa_key: rsa.RSAPrivateKey,
                                     server_factory: ServerFactory, tmp_path: Path) -> None:
    token = jwt.encode(claims(aud=None, iss=None), rsa_key, algorithm="RS256")
    with joined(rs_server, "/ws/gift-rs", subprotocols=[f"bearer.{token}"]) as c:
        c.patch(1, ADD_A)
        assert c.expect("ack")["version"] == 1
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "ec.pem"
    pem.write_bytes(public_pem(ec_key))
    server = server_factory("--jwt-key", str(pem))
    token = jwt.encode(claims(aud=None, iss=None), ec_key, algorithm="ES256")
    assert http_state(server, "gift-ec", token).status_code == 200
    rs_token = jwt.encode(claims(aud=None, iss=None), rsa_key, algorithm="RS256")
    assert http_state(server, "gift-ec", rs_token).status_code == 401


def test_jwks_file_picks_the_key_by_kid(server_factory: ServerFactory, tmp_path: Path,
                                       rsa_key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = []
    for kid, key in (("k1", rsa_key), ("k2", other)):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        keys.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    server = server_factory("--jwks-file", str(path))
    payload = claims(aud=None, iss=None)
    for kid, key in (("k1", rsa_key), ("k2", other)):
        token = jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})
        assert http_state(server, "gift-k", token).status_code == 200, kid
    swapped = jwt.encode(payload, other, algorithm="RS256", headers={"kid": "k1"})
    assert refused(server, "gift-k", swapped) == "unauthorized"
    unknown = jwt.encode(payload, other, algorithm="RS256", headers={"kid": "k9"})
    assert refused(server, "gift-k", unknown) == "unauthorized"


def test_claim_names_are_configurable(server_factory: ServerFactory) -> None:
    server = server_factory("--jwt-key", SECRET, "--jwt-claims", "sub=uid,docs=rooms,role=perm")
    now = int(time.time())
    token = jwt.encode({"uid": "bob", "rooms": ["room-*"], "perm": "write", "exp": now + 60},
                       SECRET, algorithm="HS256")
    with joined(server, "/ws/room-1", subprotocols=[f"bearer.{token}"]) as c:
        c.patch(1, ADD_A)
        assert c.expect("ack")["version"] == 1
    assert refused(server, "gift-1", token) == "forbidden"
    standard = jwt.encode({"sub": "bob", "docs": "*", "role": "write", "exp": now + 60},
                          SECRET, algorithm="HS256")
    assert refused(server, "room-1", standard) == "unauthorized"  # no uid claim


def test_the_token_file_stays_a_second_source(server_factory: ServerFactory,
                                              tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"static-writer": {"docs": "*", "role": "write"}}))
    server = server_factory("--auth", str(path), "--jwt-key", SECRET)
    assert http_state(server, "gift-t", "static-writer").status_code == 200
    assert http_state(server, "gift-t", hs(aud=None, iss=None)).status_code == 200
    assert http_state(server, "gift-t", "other").status_code == 401


# -- refused -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("expired", lambda: hs(exp=int(time.time()) - 5)),
        ("no exp", lambda: hs(exp=None)),
        ("wrong key", lambda: hs(key="another-secret-" + "x" * 60)),
        ("wrong audience", lambda: hs(aud="another-service")),
        ("no audience", lambda: hs(aud=None)),
        ("wrong issuer", lambda: hs(iss="https://evil.example")),
        ("HS384 with the right secret", lambda: hs(algorithm="HS384")),
        ("alg none", lambda: forged({"alg": "none", "typ": "JWT"}, claims(), None)),
        ("alg none, upper case", lambda: forged({"alg": "NONE"}, claims(), None)),
        ("tampered claims", lambda: ".".join(
            [hs().split(".")[0], b64(json.dumps(claims(role="write", docs="*")).encode()),
             hs().split(".")[2]])),
        ("garbage", lambda: "not.a.jwt"),
    ],
)
def test_bad_tokens_are_unauthorized(hs_server: ServerProcess, name: str, make: Any) -> None:
    token = make()
    assert refused(hs_server, "gift-bad", token) == "unauthorized", name
    r = http_state(hs_server, "gift-bad", token)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", name
    r = httpx.patch(f"{hs_server.url}/docs/gift-bad/state", json=ADD_A,
                    headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 401, name
    assert http_state(hs_server, "gift-bad", hs()).json() == {}  # nothing was applied


def test_hs256_signed_with_the_rsa_public_key_is_refused(
        rs_server: ServerProcess, rsa_key: rsa.RSAPrivateKey) -> None:
    """The classic confusion attack: the server's public key used as an HMAC secret."""
    token = forged({"alg": "HS256", "typ": "JWT"}, claims(aud=None, iss=None),
                   public_pem(rsa_key))
    assert refused(rs_server, "gift-x", token) == "unauthorized"
    assert http_state(rs_server, "gift-x", token).status_code == 401
    none = forged({"alg": "none"}, claims(aud=None, iss=None), None)
    assert refused(rs_server, "gift-x", none) == "unauthorized"


def test_read_role_and_documents_outside_the_claim(hs_server: ServerProcess) -> None:
    reader = hs(sub="rita", role="read")
    writer = hs()
    with joined(hs_server, "/ws/gift-ro", subprotocols=[f"bearer.{writer}"]) as w, \
            joined(hs_server, "/ws/gift-ro", subprotocols=[f"bearer.{reader}"]) as r:
        w.patch(1, ADD_A)
        assert w.expect("ack")["version"] == 1
        assert r.expect("patch")["version"] == 1  # a reader receives everything
        r.patch("r1", ADD_B)
        rej = r.expect("reject")
        assert rej["id"] == "r1" and rej["error"]["code"] == "forbidden"
    r2 = httpx.patch(f"{hs_server.url}/docs/gift-ro/state", json=ADD_B,
                     headers={"authorization": f"Bearer {reader}"})
    assert r2.status_code == 403
    no_role = hs(sub="nora", role=None)  # a token without a role only reads
    assert httpx.patch(f"{hs_server.url}/docs/gift-ro/state", json=ADD_B,
                       headers={"authorization": f"Bearer {no_role}"}).status_code == 403
    assert http_state(hs_server, "gift-ro", writer).json() == {"a": 1}
    # documents: a glob or a list of globs; anything else is forbidden
    assert refused(hs_server, "private-1", writer) == "forbidden"
    assert http_state(hs_server, "private-1", writer).status_code == 403
    listed = hs(docs=["notes", "gift-1*"])
    assert http_state(hs_server, "notes", listed).status_code == 200
    assert http_state(hs_server, "gift-10", listed).status_code == 200
    assert refused(hs_server, "gift-2", listed) == "forbidden"


def test_a_bad_key_configuration_stops_the_server(server_factory: ServerFactory) -> None:
    proc = server_factory("--jwt-key", "short", start=False)
    with pytest.raises(RuntimeError, match="exited"):
        proc.start(timeout=20)
    assert "at least 32 bytes" in proc.log()


# -- expiry during a session -------------------------------------------------------------------


def closed_reason(client: WsClient) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(100):
            client.recv()
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


def test_a_token_expiring_mid_session_then_a_fresh_one_resumes(
        hs_server: ServerProcess) -> None:
    doc = "gift-exp"
    exp = int(time.time()) + 2
    short = hs(exp=exp)
    client = joined(hs_server, f"/ws/{doc}?client=c1", subprotocols=[f"bearer.{short}"])
    epoch = client.seen[0]["epoch"]
    client.patch("m1", ADD_A)
    assert client.expect("ack")["version"] == 1
    time.sleep(max(0.0, exp - time.time()) + 0.05)  # waiting for the clock, not for a message
    with contextlib.suppress(ConnectionClosed):  # the server may have closed it already
        client.patch("m2", ADD_B)  # after expiry: not applied, the connection is closed
    code, reason = closed_reason(client)
    assert code == 1008 and reason.startswith("unauthorized"), (code, reason)
    client.close()
    fresh = hs()
    assert http_state(hs_server, doc, fresh).json() == {"a": 1}  # m2 was not applied
    # the client asks the app for a fresh token and resumes where it was
    again = WsClient(hs_server.ws_url(f"/ws/{doc}?client=c1&since=1&epoch={epoch}"),
                     subprotocols=[f"bearer.{fresh}"])
    with again:
        assert again.expect("synced")["version"] == 1  # no snapshot: a resume
        again.patch("m1", ADD_A)  # a resend of an acknowledged batch: its original version
        assert again.expect("ack")["version"] == 1
        again.patch("m2", ADD_B)  # the refused batch, resent under its id: applied once
        assert again.expect("ack")["version"] == 2
        again.patch("m2", ADD_B)
        assert again.expect("ack")["version"] == 2
    assert http_state(hs_server, doc, fresh).json() == {"a": 1, "b": 2}
    r = httpx.get(f"{hs_server.url}/docs/{doc}/patches?since=0",
                  headers={"authorization": f"Bearer {fresh}"})
    assert r.json()["version"] == 2
    # an expired token cannot reconnect
    assert refused(hs_server, doc, short) == "unauthorized"


def test_a_reader_is_disconnected_when_its_token_expires(hs_server: ServerProcess) -> None:
    """Readers never send a batch: the connection itself ends with the token."""
    token = hs(sub="rita", role="read", exp=int(time.time()) + 2)
    with joined(hs_server, "/ws/gift-reader", subprotocols=[f"bearer.{token}"]) as reader:
        code, reason = closed_reason(reader)  # waits for the close, at most 10 s per message
    assert (code, reason) == (1008, "unauthorized: the token has expired")
    assert refused(hs_server, "gift-reader", token) == "unauthorized"
