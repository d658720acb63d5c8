"""GET /state compressed as the client accepts it, against a real server and real clients
(httpx, which decodes brotli and gzip itself, and urllib, which does not)."""

from __future__ import annotations

import gzip
import urllib.request

import brotli  # type: ignore[import-untyped]
import httpx
import pytest

from .conftest import ServerProcess

GIFTS = [{"id": f"gift-{i}", "description": f"A present number {i} for someone",
          "image": f"https://picsum.photos/id/{i}/200/200", "reservedBy": None}
         for i in range(2000)]


def raw_get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, \
            response.read()


@pytest.fixture
def big(server: ServerProcess) -> str:
    url = f"{server.url}/docs/big/state"
    r = httpx.patch(url, json=[{"op": "add", "path": ["gifts"], "value": GIFTS}])
    assert r.status_code == 200 and r.json() == {"version": 1}
    return url


def test_gzip_when_accepted_with_a_weak_etag_and_vary(big: str) -> None:
    status, headers, body = raw_get(big, {"Accept-Encoding": "gzip"})
    plain = httpx.get(big, headers={"Accept-Encoding": "identity"})
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert headers["etag"] == 'W/"1"' and "accept-encoding" in headers["vary"].lower()
    assert headers["content-type"] == "application/json"
    assert gzip.decompress(body) == plain.content
    assert len(body) <= 0.15 * len(plain.content)
    assert "content-encoding" not in plain.headers and plain.headers["etag"] == '"1"'
    assert "accept-encoding" in plain.headers["vary"].lower()
    # httpx offers gzip and decodes it: the same document
    r = httpx.get(big, headers={"Accept-Encoding": "gzip, deflate"})
    assert r.headers["content-encoding"] == "gzip" and r.json() == {"gifts": GIFTS}


def test_brotli_first_when_accepted_as_much_as_gzip(big: str) -> None:
    status, headers, body = raw_get(big, {"Accept-Encoding": "gzip, deflate, br, zstd"})
    plain = httpx.get(big, headers={"Accept-Encoding": "identity"})
    assert status == 200 and headers["content-encoding"] == "br"
    assert headers["etag"] == 'W/"1"' and "accept-encoding" in headers["vary"].lower()
    assert brotli.decompress(body) == plain.content
    _, _, gz = raw_get(big, {"Accept-Encoding": "gzip"})
    assert len(body) < len(gz)
    # the client's weights come before our preference
    _, headers, body = raw_get(big, {"Accept-Encoding": "br;q=0.5, gzip"})
    assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == plain.content
    # httpx (with brotli installed, as here) offers br and decodes it
    r = httpx.get(big)
    assert r.headers["content-encoding"] == "br" and r.json() == {"gifts": GIFTS}


def test_refused_codings_and_wildcards(big: str) -> None:
    for accept, coding in [("gzip;q=0", None), ("*", "br"), ("zstd", None),
                           ("identity, gzip;q=0.5", "gzip"), ("br;q=0, *", "gzip")]:
        status, headers, body = raw_get(big, {"Accept-Encoding": accept})
        assert status == 200 and headers.get("content-encoding") == coding, accept
        assert headers["etag"] == ('"1"' if coding is None else 'W/"1"')
    _, _, body = raw_get(big, {})
    assert httpx.Response(200, content=body).json() == {"gifts": GIFTS}


def test_conditional_requests_with_encodings(big: str) -> None:
    gz = {"Accept-Encoding": "gzip"}
    r = httpx.get(big, headers={**gz, "If-None-Match": 'W/"1"'})
    assert r.status_code == 304 and r.headers["etag"] == 'W/"1"'
    assert "accept-encoding" in r.headers["vary"].lower()
    r = httpx.get(big, headers={"Accept-Encoding": "identity", "If-None-Match": 'W/"1"'})
    assert r.status_code == 304 and r.headers["etag"] == '"1"'  # weak comparison
    assert httpx.get(big, headers={**gz, "If-None-Match": '"0"'}).status_code == 200
    # If-Match compares strongly: a weak tag (from a compressed GET) never matches
    op = [{"op": "add", "path": ["n"], "value": 1}]
    r = httpx.patch(big, json=op, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 412
    r = httpx.patch(big, json=op, headers={"If-Match": '"1"'})
    assert r.status_code == 200 and r.headers["etag"] == '"2"'
    # the new version is compressed anew
    _, headers, body = raw_get(big, gz)
    assert headers["etag"] == 'W/"2"'
    assert httpx.Response(200, content=gzip.decompress(body)).json()["n"] == 1


def test_past_versions_and_head_are_compressed_too(big: str) -> None:
    httpx.patch(big, json=[{"op": "add", "path": ["n"], "value": 1}])
    status, headers, body = raw_get(big + "?version=1", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["etag"] == 'W/"1"'
    assert httpx.Response(200, content=gzip.decompress(body)).json() == {"gifts": GIFTS}
    r = httpx.head(big, headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert r.headers["etag"] == 'W/"2"'
    status, headers, body = raw_get(big + "?version=1", {"Accept-Encoding": "br"})
    assert status == 200 and headers["content-encoding"] == "br"
    assert httpx.Response(200, content=brotli.decompress(body)).json() == {"gifts": GIFTS}


def test_small_documents_are_not_compressed(server: ServerProcess) -> None:
    status, headers, body = raw_get(f"{server.url}/state", {"Accept-Encoding": "gzip"})
    assert status == 200 and "content-encoding" not in headers and body == b"{}"
    assert headers["etag"] == '"0"'
