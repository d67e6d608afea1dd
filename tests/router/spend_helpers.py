"""Builders for spend-budget tests (router config documents with ``budgets``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from router_builder import config, route, step, with_hash

ESCALATE_ALWAYS = {"signal": "regex", "pattern": "."}  # every answer has a character


def budget(
    limit: str,
    *actions: dict[str, Any],
    name: str = "shared",
    period: str = "day",
    seconds: int | None = None,
    on_redis_unavailable: str = "countLocally",
    **scope: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "limitUSD": limit,
        "window": {"period": period, "seconds": seconds},
        "actions": list(actions),
        "scope": scope.pop("scope", "policy"),
        "onRedisUnavailable": on_redis_unavailable,
        **scope,
    }


def budget_config(
    endpoint: str,
    budgets: list[dict[str, Any]],
    *,
    redis_url: str | None = None,
    cache: bool = False,
    timeout: float = 10,
) -> dict[str, Any]:
    """One route ``chat``: haiku escalating always to sonnet (so degrade ``steps: 1`` shows)."""
    routes = [route("chat", [step("haiku", 64, ESCALATE_ALWAYS), step("sonnet", 64)])]
    doc = config(
        endpoint,
        routes,
        default_route="chat",
        response_cache={
            "enabled": cache,
            "ttlSeconds": 300,
            "maxEntries": 1000,
            "backend": "redis" if redis_url else "memory",
            "redisURL": redis_url,
            "allowNonDeterministic": True,
        },
    )
    for tier in doc["tiers"].values():
        tier["limits"]["timeoutSeconds"] = timeout
    doc["retry"] = {"maxAttempts": 1, "initialBackoffSeconds": "0.01", "maxBackoffSeconds": "0.01"}
    doc["budgets"] = budgets
    return with_hash(doc)


def cost_of(response: Any) -> Decimal:
    """``x-tierwise-cost-usd`` of a raw SDK response."""
    return Decimal(response.headers["x-tierwise-cost-usd"])
