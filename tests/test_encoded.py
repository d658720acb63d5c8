"""Accept-Encoding negotiation and the cache of bytes derived from a text (no server)."""

from __future__ import annotations

import asyncio
import gzip
import json

import brotli  # type: ignore[import-untyped]
import pytest

from server.encoded import DerivedCache, brotli_text, gzip_text, negotiate


@pytest.mark.parametrize(
    ("header", "coding"),
    [
        (None, None),
        ("", None),
        ("gzip", "gzip"),
        ("br", "br"),
        ("gzip, deflate, br, zstd", "br"),  # equal weights: our preference
        ("gzip, deflate", "gzip"),
        ("gzip, br;q=0.9", "gzip"),  # the client's weights first
        ("BR;q=0.5", "br"),
        ("GZIP;q=0.5", "gzip"),
        ("gzip;q=0", None),
        ("identity", None),
        ("zstd", None),
        ("*", "br"),
        ("*;q=0", None),
        ("gzip;q=0, *", "br"),
        ("br;q=0, gzip;q=0, *", None),
        ("br;q=0, *", "gzip"),
        ("br;q=1.0, *;q=0.1", "br"),
        ("gzip;q=1.0, *;q=0.1", "gzip"),
        ("gzip;q=bogus", None),
    ],
)
def test_negotiate(header: str | None, coding: str | None) -> None:
    assert negotiate(header) == coding


def test_gzip_is_deterministic() -> None:
    text = '{"a":' + "1" * 5000 + "}"
    assert gzip_text(text) == gzip_text(text)
    assert gzip.decompress(gzip_text(text)).decode() == text


def test_brotli_round_trips_and_is_smaller_than_gzip_on_json() -> None:
    text = json.dumps([{"id": f"g{i}", "description": f"gift {i}", "reservedBy": None}
                       for i in range(2000)])
    assert brotli.decompress(brotli_text(text)).decode() == text
    assert len(brotli_text(text)) < len(gzip_text(text))


def test_cache_builds_once_per_text_object_and_variant() -> None:
    cache = DerivedCache(max_entries=3)
    a = "".join(["x"] * 10)
    b = "".join(["x"] * 10)  # equal, but another object: another version's text
    assert a == b and a is not b
    calls: list[str] = []

    def build(text: str) -> bytes:
        calls.append(text)
        return text.encode()

    for _ in range(3):
        cache.get(a, "v", build)
    cache.get(a, "w", build)
    cache.get(b, "v", build)
    assert len(calls) == 3 and cache.builds == 3
    cache.get("other", "v", build)
    cache.get("more", "v", build)  # over max_entries: the least recently used goes
    assert len(cache) == 3 and cache.peek(a, "v") is None


def test_large_values_are_not_kept_and_bytes_are_bounded() -> None:
    cache = DerivedCache(max_entries=100, max_bytes=8000)  # counts texts and values
    texts = ["".join(["y"] * 900) + str(i) for i in range(6)]
    for text in texts:
        cache.get(text, None, lambda t: t.encode())
    assert cache.bytes <= 8000 and cache.peek(texts[-1], None) is not None
    big = "z" * 2000
    cache.get(big, None, lambda t: t.encode())
    assert cache.peek(big, None) is None  # over a quarter of the budget


def test_concurrent_async_builds_of_one_text_share_one_build() -> None:
    text = "".join(["q"] * (200 << 10))
    cache = DerivedCache()
    calls: list[int] = []

    def build(t: str) -> bytes:
        calls.append(1)
        return gzip_text(t)

    async def main() -> list[bytes]:
        return await asyncio.gather(*(cache.get_async(text, "gzip", build) for _ in range(20)))

    results = asyncio.run(main())
    assert len(calls) == 1 and len(set(results)) == 1
    assert cache.peek(text, "gzip") == results[0]
