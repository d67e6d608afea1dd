"""Builds router config documents for tests, matching docs/router-config.md.

Named uniquely (not ``helpers``): test directories are not packages.
"""

from __future__ import annotations

import copy
from typing import Any

from tierwise.pricing import catalog_prices
from tierwise.router import document_hash
from tierwise.routerconfig import SCHEMA_VERSION

SCHEMA = SCHEMA_VERSION
HAIKU_MODEL = "claude-haiku-4-5"
SONNET_MODEL = "claude-sonnet-4-6"  # legacy, current enough; accepts temperature
OPUS_MODEL = "claude-opus-4-6"
TIER_KEYS = {
    "haiku": "tier-key-haiku",
    "sonnet": "tier-key-sonnet",
    "opus": "tier-key-opus",
}


def env_name(tier: str) -> str:
    return "TIERWISE_TIER_" + "".join(c if c.isalnum() else "_" for c in tier.upper()) + "_API_KEY"


def tier_env() -> dict[str, str]:
    """The environment a router gets: one key per tier."""
    return {env_name(name): key for name, key in TIER_KEYS.items()}


def tier(
    model: str,
    endpoint: str,
    *,
    name: str,
    timeout: float = 10,
    max_concurrency: int = 64,
    max_output_tokens: int | None = None,
    min_cacheable_tokens: int | None = None,
    pricing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    prices = catalog_prices(model)
    return {
        "provider": "anthropic",
        "model": model,
        "endpoint": endpoint,
        "apiKeyEnv": env_name(name),
        "pricing": pricing or prices.to_document(),  # type: ignore[union-attr]
        "limits": {
            "maxOutputTokens": max_output_tokens,
            "timeoutSeconds": timeout,
            "maxConcurrency": max_concurrency,
        },
        "minCacheableTokens": 4096 if min_cacheable_tokens is None else min_cacheable_tokens,
    }


def step(tier_name: str, max_tokens: int | None = None, *signals: dict[str, Any]) -> dict[str, Any]:
    return {"tier": tier_name, "maxTokens": max_tokens, "escalateWhen": list(signals)}


def route(
    name: str,
    steps: list[dict[str, Any]],
    *,
    models: list[str] | None = None,
    stream_policy: str = "cascade",
    format_instruction: str | None = None,
    counterfactual: str | None = "sonnet",
    mode: str = "interactive",
) -> dict[str, Any]:
    return {
        "name": name,
        "models": [f"tierwise/{name}", *(models or [])],
        "mode": mode,
        "streamPolicy": stream_policy,
        "formatInstruction": format_instruction,
        "counterfactualTier": counterfactual,
        "steps": steps,
    }


def config(
    endpoint: str,
    routes: list[dict[str, Any]] | None = None,
    *,
    default_route: str | None = "triage",
    fallback: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
    prompt_caching: dict[str, Any] | None = None,
    response_cache: dict[str, Any] | None = None,
    tiers: dict[str, dict[str, Any]] | None = None,
    policy: tuple[str, str] = ("support", "email-triage"),
) -> dict[str, Any]:
    """A complete document with its hash; defaults to one triage cascade haiku -> sonnet."""
    doc: dict[str, Any] = {
        "schemaVersion": SCHEMA,
        "policy": {"namespace": policy[0], "name": policy[1]},
        "defaultRoute": default_route,
        "routes": routes if routes is not None else [triage_route()],
        "tiers": tiers
        or {
            "haiku": tier(HAIKU_MODEL, endpoint, name="haiku"),
            "sonnet": tier(SONNET_MODEL, endpoint, name="sonnet"),
            "opus": tier(OPUS_MODEL, endpoint, name="opus"),
        },
        "fallback": fallback,
        "retry": retry
        or {"maxAttempts": 3, "initialBackoffSeconds": "0.01", "maxBackoffSeconds": "0.05"},
        "cache": {
            "profile": "test-cache",
            "promptCaching": prompt_caching or {"enabled": False, "breakpoints": [], "ttl": "5m"},
            "responseCache": response_cache
            or {
                "enabled": False,
                "ttlSeconds": 300,
                "maxEntries": 100,
                "backend": "memory",
                "redisURL": None,
                "allowNonDeterministic": False,
            },
        },
    }
    return with_hash(doc)


def with_hash(doc: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out.pop("hash", None)
    out["hash"] = document_hash(out)
    return out


LABELS = ["billing", "bug", "other"]


def triage_signals() -> list[dict[str, Any]]:
    return [
        {"signal": "stopReason", "values": ["max_tokens", "refusal"]},
        {"signal": "invalidJSON"},
        {"signal": "jsonFieldBelow", "field": "confidence", "threshold": "0.8"},
        {"signal": "jsonFieldNotIn", "field": "label", "values": LABELS},
    ]


def triage_route(**kwargs: Any) -> dict[str, Any]:
    return route(
        "triage",
        [step("haiku", 256, *triage_signals()), step("sonnet", 512)],
        format_instruction='Answer with JSON only: {"label": ..., "confidence": ...}',
        **kwargs,
    )
