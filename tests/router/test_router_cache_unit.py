"""Response-cache keys, eligibility and the memory backend (no network)."""

from __future__ import annotations

from typing import Any

import pytest

from tierwise.router.response_cache import (
    MemoryResponseCache,
    cache_decision,
    cache_key,
    decode_entry,
    encode_entry,
)
from tierwise.routerconfig import ResponseCacheConfig

ON = ResponseCacheConfig(enabled=True, ttl_seconds=10, max_entries=3)


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize(
    ("settings", "request_body", "header", "expected"),
    [
        (ON, body(temperature=0), None, True),
        (ON, body(temperature=0.0), None, True),
        (ON, body(), None, False),  # default temperature is 1
        (ON, body(temperature=0.7), None, False),
        (ON, body(temperature=False), None, False),
        (ON, body(temperature=0.7), "allow", True),
        (ON, body(temperature=0), "bypass", False),
        (ON, body(temperature=0), " Bypass ", False),
        (ResponseCacheConfig(enabled=True, allow_non_deterministic=True), body(), None, True),
        (ResponseCacheConfig(enabled=False), body(temperature=0), "allow", False),
    ],
)
def test_cache_decision(
    settings: ResponseCacheConfig, request_body: dict[str, Any], header: str | None, expected: bool
) -> None:
    assert cache_decision(settings, request_body, header) is expected


def test_key_covers_route_hash_and_whole_body_but_not_stream() -> None:
    base = cache_key("r", "h", body(temperature=0))
    assert cache_key("r", "h", {**body(temperature=0), "stream": True}) == base
    assert cache_key("r", "h", dict(reversed(list(body(temperature=0).items())))) == base
    assert cache_key("other", "h", body(temperature=0)) != base
    assert cache_key("r", "h2", body(temperature=0)) != base
    multi = body(temperature=0)
    multi["messages"] = [
        *multi["messages"],
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": "hi"},
    ]
    assert cache_key("r", "h", multi) != base  # same last turn, different conversation


def test_entry_encoding_round_trips() -> None:
    assert decode_entry(encode_entry("haiku", b'{"a":\n1}')) == ("haiku", b'{"a":\n1}')


async def test_memory_cache_ttl_and_lru_bound() -> None:
    now = [0.0]
    cache = MemoryResponseCache(ON, clock=lambda: now[0])
    for key in "abc":
        await cache.set(key, key.encode())
    assert await cache.get("a") == b"a"  # refreshes a: b is now least recently used
    await cache.set("d", b"d")
    assert len(cache) == 3
    assert await cache.get("b") is None
    assert await cache.get("a") == b"a"
    now[0] = 10.0
    assert await cache.get("a") is None  # expired ttl_seconds after it was stored
    assert len(cache) == 2
