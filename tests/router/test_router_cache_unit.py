"""Response-cache keys, eligibility and the memory backend (no network)."""

from __future__ import annotations

from typing import Any

import pytest

from tierwise.router.response_cache import (
    MemoryResponseCache,
    cache_decision,
    cache_key,
    caller_identity,
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


def key(
    route: str = "r",
    config_hash: str = "h",
    request_body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    *,
    policy: str = "ns/p",
    shared: bool = False,
) -> str:
    return cache_key(
        policy=policy,
        route=route,
        config_hash=config_hash,
        body=body(temperature=0) if request_body is None else request_body,
        headers={"anthropic-version": "2023-06-01", "x-api-key": "k1"}
        if headers is None
        else headers,
        shared=shared,
    )


def test_key_covers_route_hash_and_whole_body_but_not_stream() -> None:
    base = key()
    assert key(request_body={**body(temperature=0), "stream": True}) == base
    assert key(request_body=dict(reversed(list(body(temperature=0).items())))) == base
    assert key("other") != base
    assert key(config_hash="h2") != base
    multi = body(temperature=0)
    multi["messages"] = [
        *multi["messages"],
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": "hi"},
    ]
    assert key(request_body=multi) != base  # same last turn, different conversation


def test_key_covers_what_changes_the_answer_and_who_may_see_it() -> None:
    """Repro: two tenants (or two API versions/betas) must never share an entry."""
    version = {"anthropic-version": "2023-06-01", "x-api-key": "k1"}
    base = key(headers=version)
    assert key(headers={**version, "anthropic-version": "2023-01-01"}) != base
    assert key(headers={**version, "anthropic-beta": "context-1m-2025-08-07"}) != base
    assert key(headers={**version, "x-api-key": "k2"}) != base  # another caller
    bearer = {"anthropic-version": "2023-06-01", "authorization": "Bearer t"}
    assert key(headers=bearer) != key(headers={**bearer, "authorization": "Bearer u"})
    assert key(policy="other/p") != base
    # A shared route: one entry for every caller, still per version and policy.
    shared = key(headers=version, shared=True)
    assert key(headers={**version, "x-api-key": "k2"}, shared=True) == shared
    assert key(headers={**version, "anthropic-version": "2023-01-01"}, shared=True) != shared
    assert "k1" not in caller_identity(version) and caller_identity({}) == "anonymous"


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


def test_the_same_key_is_the_same_caller_whichever_header_carries_it() -> None:
    assert caller_identity({"x-api-key": "k"}) == caller_identity({"authorization": "Bearer k"})
    assert caller_identity({"x-api-key": "k"}) != caller_identity({"x-api-key": "k2"})
