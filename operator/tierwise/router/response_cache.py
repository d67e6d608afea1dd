"""Exact-match response cache: keying, eligibility and two backends with one contract.

A key covers the policy and route, the config's content hash (a config change that can
move cost or quality must not serve answers produced under the old one), the headers that
change the answer (``anthropic-version``, ``anthropic-beta``), the caller (a digest of its
API key, unless the profile lists the route in ``sharedRoutes``) and the complete request
body except ``stream`` (a streaming and a non-streaming request for the same thing share an
answer). Whole bodies, so multi-turn conversations never collide.

Values are opaque bytes (``encode_entry``): the tier that answered and the message JSON
exactly as the upstream returned it, so a hit is served without re-serialization.

Both backends: ``get`` refreshes recency (LRU), entries expire ``ttl`` seconds after
they were stored, at most ``max_entries`` are kept (least recently used go first).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from tierwise.router.jsonutil import sha256_hex
from tierwise.routerconfig import ResponseCacheConfig, canonical_json

try:  # orjson sorts keys natively and fast; the fallback keeps the same key format
    import orjson as _orjson

    def _sorted_json(value: Any) -> bytes:
        return _orjson.dumps(value, option=_orjson.OPT_SORT_KEYS)

except ImportError:  # pragma: no cover

    def _sorted_json(value: Any) -> bytes:
        return canonical_json(value).encode()


CACHE_HEADER = "x-tierwise-cache"
HIT, MISS, BYPASS = "hit", "miss", "bypass"


def cache_decision(
    settings: ResponseCacheConfig,
    body: Mapping[str, Any],
    client_header: str | None,
    route_mode: str = "auto",
) -> bool:
    """Whether this request may be served from, and stored in, the response cache.

    The route's mode decides first: ``never`` (chat) keeps the route out of the cache,
    ``always`` (classification, extraction) caches every exact repeat; ``auto`` caches only
    deterministic requests (``temperature: 0``) unless the profile allows others or the
    client opts in with ``x-tierwise-cache: allow``. Current models refuse ``temperature``,
    so on them ``auto`` means "only when the client opts in". ``x-tierwise-cache: bypass``
    always opts out.
    """
    if not settings.enabled or route_mode == "never":
        return False
    header = (client_header or "").strip().lower()
    if header == "bypass":
        return False
    if route_mode == "always" or header == "allow" or settings.allow_non_deterministic:
        return True
    temperature = body.get("temperature")
    return (
        isinstance(temperature, (int, float))
        and not isinstance(temperature, bool)
        and temperature == 0
    )


# Request headers that change the answer: the API version and beta features.
ANSWER_HEADERS = ("anthropic-version", "anthropic-beta")
# Headers that identify the caller (hashed, never stored).
CALLER_HEADERS = ("x-api-key", "authorization")
SHARED = "shared"


def caller_identity(headers: Mapping[str, str]) -> str:
    """A digest of the caller's credential (``x-api-key``, else ``authorization``; the SDKs
    may send both with the same key); callers without any share ``anonymous``."""
    for name in CALLER_HEADERS:
        value = headers.get(name, "").strip()
        if name == "authorization" and value[:7].lower() == "bearer ":
            value = value[7:].strip()  # the same key, sent as a bearer token
        if value:
            return sha256_hex(b"caller:" + value.encode("utf-8", "replace"))
    return "anonymous"


def cache_key(
    *,
    policy: str,
    route: str,
    config_hash: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    shared: bool,
) -> str:
    """A hex digest of everything that can change the answer or who may see it.

    The policy and route; the config's content hash (computed by the router, not the one the
    document declares); the request body except ``stream``; the ``anthropic-version`` and
    ``anthropic-beta`` headers; and the caller's identity unless the route is shared.
    """
    material = {
        "policy": policy,
        "route": route,
        "config": config_hash,
        "headers": {name: headers.get(name, "") for name in ANSWER_HEADERS},
        "caller": SHARED if shared else caller_identity(headers),
        "body": {k: v for k, v in body.items() if k != "stream"},
    }
    return sha256_hex(_sorted_json(material))


def encode_entry(tier: str, message_json: bytes) -> bytes:
    return tier.encode() + b"\n" + message_json


def decode_entry(value: bytes) -> tuple[str, bytes]:
    tier, _, message = value.partition(b"\n")
    return tier.decode(), message


class ResponseCache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes) -> None: ...

    async def close(self) -> None: ...

    def same_settings(self, settings: ResponseCacheConfig) -> bool: ...

    def update_settings(self, settings: ResponseCacheConfig) -> None: ...


class MemoryResponseCache:
    """Per-process LRU with per-entry expiry."""

    def __init__(self, settings: ResponseCacheConfig, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        item = self._entries.get(key)
        if item is None:
            return None
        expires_at, value = item
        if expires_at <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes) -> None:
        self._entries[key] = (self._clock() + self.settings.ttl_seconds, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.settings.max_entries:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        self._entries.clear()

    def same_settings(self, settings: ResponseCacheConfig) -> bool:
        return settings.backend == "memory" and settings.max_entries == self.settings.max_entries

    def update_settings(self, settings: ResponseCacheConfig) -> None:
        self.settings = settings


# Redis: values under `<prefix>v:<key>` with a TTL, recency in a sorted set `<prefix>lru`
# scored by last use. Each operation is one Lua script, so concurrent routers sharing the
# Redis keep the bound exact.
_GET_SCRIPT = """
local v = redis.call('GET', KEYS[1])
if v then redis.call('ZADD', KEYS[2], ARGV[1], KEYS[1]) end
return v
"""
_SET_SCRIPT = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3] - ARGV[2])
local n = redis.call('ZCARD', KEYS[2])
local max = tonumber(ARGV[4])
if n > max then
  local old = redis.call('ZPOPMIN', KEYS[2], n - max)
  for i = 1, #old, 2 do redis.call('DEL', old[i]) end
end
return n
"""


class RedisResponseCache:
    """Shared across replicas; the same semantics as ``MemoryResponseCache``.

    Network trouble never fails a request: operations time out quickly and the caller
    treats an exception as a miss (and counts it).
    """

    OPERATION_TIMEOUT_SECONDS = 0.5

    def __init__(
        self, settings: ResponseCacheConfig, namespace: str, env: Mapping[str, str] | None = None
    ) -> None:
        self.settings = settings
        self._prefix = f"tierwise:response-cache:{namespace}:"
        self._client = redis_client(settings, env or {}, self.OPERATION_TIMEOUT_SECONDS)
        self._get = self._client.register_script(_GET_SCRIPT)
        self._set = self._client.register_script(_SET_SCRIPT)

    def _keys(self, key: str) -> list[str]:
        return [f"{self._prefix}v:{key}", f"{self._prefix}lru"]

    async def get(self, key: str) -> bytes | None:
        async with asyncio.timeout(self.OPERATION_TIMEOUT_SECONDS * 2):
            value = await self._get(keys=self._keys(key), args=[time.time()])
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes) -> None:
        args = [value, self.settings.ttl_seconds, time.time(), self.settings.max_entries]
        async with asyncio.timeout(self.OPERATION_TIMEOUT_SECONDS * 2):
            await self._set(keys=self._keys(key), args=args)

    async def close(self) -> None:
        await self._client.aclose()

    def same_settings(self, settings: ResponseCacheConfig) -> bool:
        return (
            settings.backend == "redis"
            and settings.redis_url == self.settings.redis_url
            and settings.redis_url_env == self.settings.redis_url_env
            and settings.redis_password_env == self.settings.redis_password_env
            and settings.redis_tls_dir == self.settings.redis_tls_dir
            and settings.max_entries == self.settings.max_entries
        )

    def update_settings(self, settings: ResponseCacheConfig) -> None:
        self.settings = settings


def redis_client(
    settings: ResponseCacheConfig, env: Mapping[str, str], timeout: float, *, retry: bool = True
) -> Any:
    """A client of the CacheProfile's Redis: the URL and password from the sidecar's
    variables (Secrets) when the config names them (they are never in the config document
    itself), a client certificate from ``redisTLSDir``. Shared by the response cache and the
    spend budgets (``router.spend_store``); ``retry=False`` fails at once (a budget falls
    back within its bound rather than retry)."""
    import redis.asyncio as redis_asyncio

    url = settings.redis_url or (env.get(settings.redis_url_env or "") or None)
    if not url:
        raise ValueError("the redis backend needs redisURL (or the variable redisURLEnv)")
    options: dict[str, Any] = {}
    if settings.redis_password_env and env.get(settings.redis_password_env):
        options["password"] = env[settings.redis_password_env]
    if settings.redis_tls_dir:
        tls = Path(settings.redis_tls_dir)
        options["ssl_certfile"] = str(tls / "tls.crt")
        options["ssl_keyfile"] = str(tls / "tls.key")
        if (tls / "ca.crt").exists():
            options["ssl_ca_certs"] = str(tls / "ca.crt")
    if not retry:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        options["retry"] = Retry(NoBackoff(), 0)
    return redis_asyncio.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, **options
    )


def make_response_cache(
    settings: ResponseCacheConfig, namespace: str, env: Mapping[str, str] | None = None
) -> ResponseCache | None:
    if not settings.enabled:
        return None
    if settings.backend == "redis":
        return RedisResponseCache(settings, namespace, env)
    return MemoryResponseCache(settings)
