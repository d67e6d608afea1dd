"""The response cache around a request: decide, key, look up, serve a hit, store an answer.

Cache failures never fail a request: a broken backend is counted (``result="error"``) and
the request runs as a miss.
"""

from __future__ import annotations

import logging

from aiohttp import web

from tierwise.pricing import Usage
from tierwise.router.cascade import Cascade, Exchange
from tierwise.router.jsonutil import loads
from tierwise.router.metrics import RouterMetrics
from tierwise.router.response_cache import (
    BYPASS,
    CACHE_HEADER,
    HIT,
    MISS,
    cache_decision,
    cache_key,
    decode_entry,
    encode_entry,
)

log = logging.getLogger("tierwise.router")


class ResponseCacheCheck:
    def __init__(self, metrics: RouterMetrics) -> None:
        self.metrics = metrics

    async def lookup(self, ex: Exchange, request: web.Request) -> tuple[str, bytes] | None:
        """A cached (tier, message JSON) for this request, or None (and the key to store)."""
        cache = ex.runtime.response_cache
        if cache is None:
            return None
        settings = ex.runtime.config.cache.response_cache
        header = request.headers.get(CACHE_HEADER)
        if not cache_decision(settings, ex.body, header, ex.route.response_cache):
            self._count(ex, BYPASS)
            return None
        ex.cache_key = cache_key(
            policy=ex.runtime.policy,
            route=ex.route.name,
            config_hash=ex.runtime.config.computed_hash,
            body=ex.body,
            headers=request.headers,
            shared=ex.route.name in settings.shared_routes,
        )
        try:
            value = await cache.get(ex.cache_key)
        except Exception:
            log.debug("response cache lookup failed", exc_info=True)
            self._count(ex, "error")
            return None
        if value is None:
            ex.cache_status = MISS
            self._count(ex, MISS)
            return None
        self._count(ex, HIT)
        return decode_entry(value)

    def serve_hit(self, ex: Exchange, cascade: Cascade, tier: str, raw: bytes) -> dict:
        """Mark ``ex`` as a hit and measure it; returns the cached message."""
        ex.cache_status = HIT
        ex.outcome = "cache_hit"
        ex.tier = tier
        message = loads(raw)
        # A hit spends nothing, but what it would have cost is still measured.
        self.metrics.cost.labels(ex.runtime.policy, ex.route.name, tier).inc(0)
        cascade.account_counterfactual(ex, Usage.from_anthropic(message.get("usage") or {}))
        return message

    async def store(self, ex: Exchange, tier: str, message_json: bytes) -> None:
        cache = ex.runtime.response_cache
        if cache is None or ex.cache_key is None:
            return
        try:
            await cache.set(ex.cache_key, encode_entry(tier, message_json))
        except Exception:
            log.debug("response cache store failed", exc_info=True)
            self._count(ex, "error")

    def _count(self, ex: Exchange, result: str) -> None:
        self.metrics.child(
            self.metrics.response_cache, ex.runtime.policy, ex.route.name, result
        ).inc()
