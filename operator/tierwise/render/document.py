"""Render a CascadePolicy, its tiers and its cache profile into a router config document.

A pure function: no Kubernetes, no I/O. The operator writes the document into the policy's
ConfigMap; ``tierwise render`` prints it from local manifests. Problems that stop a policy
from resolving come back as values (``Problem``) that the operator turns into status
conditions and the CLI into an error message. See docs/router-config.md for the format.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from tierwise.api import CASCADE_POLICY, Resource
from tierwise.api.models import (
    CacheProfileSpec,
    CascadePolicySpec,
    EscalationSignal,
    ModelTierSpec,
    Retry,
    Route,
)
from tierwise.pricing import (
    BUILTIN,
    PriceCatalog,
    Prices,
    PricingProblem,
    format_usd,
    resolve_prices,
    retirement_notice,
)

SCHEMA_VERSION = "tierwise.dev/router-config/v1"
DEFAULT_ENDPOINT = "https://api.anthropic.com"
CONFIG_KEY = "router-config.json"

# Reasons are CamelCase so they can be used verbatim as condition reasons.
TIER_NOT_FOUND = "TierNotFound"
CACHE_PROFILE_NOT_FOUND = "CacheProfileNotFound"
PRICING_UNKNOWN = "PricingUnknown"
PRICING_AMBIGUOUS = "PricingAmbiguous"


@dataclass(frozen=True)
class Problem:
    """Why a policy does not resolve: a missing reference or an unpriced model."""

    reason: str
    ref: str
    message: str


@dataclass(frozen=True)
class SecretKeyEnv:
    """The environment variable that carries one tier's API key, and where it comes from."""

    env: str
    secret_name: str
    secret_key: str


@dataclass(frozen=True)
class RenderResult:
    document: dict[str, Any] | None
    problems: tuple[Problem, ...] = ()
    key_envs: tuple[SecretKeyEnv, ...] = field(default=())
    # Things that do not stop rendering but deserve a warning (a tier's model retiring).
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.document is not None


def api_key_env(tier_name: str) -> str:
    """TIERWISE_TIER_<NAME>_API_KEY, with NAME upper-cased and non-alphanumerics as _."""
    return f"TIERWISE_TIER_{re.sub(r'[^A-Z0-9]', '_', tier_name.upper())}_API_KEY"


def render_policy(
    policy: Resource,
    tiers: Mapping[str, Resource],
    cache_profiles: Mapping[str, Resource],
    *,
    catalog: PriceCatalog = BUILTIN,
    today: date | None = None,
) -> RenderResult:
    """Render ``policy``; ``tiers`` and ``cache_profiles`` are keyed by name, same namespace.

    Prices resolve over ``catalog``; with ``today`` given, tiers whose model retires within
    30 days (or has retired) come back as warnings.
    """
    if policy.kind != CASCADE_POLICY:
        raise ValueError(f"expected a CascadePolicy, got {policy.kind}")
    spec: CascadePolicySpec = policy.spec
    problems: list[Problem] = []
    rendered_tiers: dict[str, dict[str, Any]] = {}
    prices: dict[str, Prices] = {}
    key_envs: list[SecretKeyEnv] = []
    warnings: list[str] = []
    for name in spec.tier_names():
        tier = tiers.get(name)
        if tier is None:
            problems.append(
                Problem(
                    TIER_NOT_FOUND,
                    name,
                    f"ModelTier {name!r} not found in namespace {policy.namespace!r}",
                )
            )
            continue
        tier_spec: ModelTierSpec = tier.spec
        resolved = resolve_prices(
            tier_spec.model,
            tier_spec.pricing.as_overrides() if tier_spec.pricing else None,
            catalog,
        )
        if isinstance(resolved, PricingProblem):
            problems.append(
                Problem(resolved.reason, name, f"ModelTier {name!r}: {resolved.message}")
            )
            continue
        notice = retirement_notice(tier_spec.model, today, catalog) if today else None
        if notice is not None:
            warnings.append(f"ModelTier {name!r}: {notice.message}")
        prices[name] = resolved
        rendered_tiers[name] = _render_tier(
            name, tier_spec, resolved, catalog.min_cacheable_tokens(tier_spec.model)
        )
        if tier_spec.api_key_secret_ref is not None:
            ref = tier_spec.api_key_secret_ref
            key_envs.append(SecretKeyEnv(api_key_env(name), ref.name, ref.key))

    cache, cache_problem = _render_cache(spec, cache_profiles, policy.namespace)
    if cache_problem:
        problems.append(cache_problem)
    if problems:
        return RenderResult(None, tuple(problems), warnings=tuple(warnings))

    document: dict[str, Any] = {
        "schemaVersion": SCHEMA_VERSION,
        "policy": {"namespace": policy.namespace, "name": policy.name},
        "defaultRoute": spec.default_route,
        "routes": [_render_route(route, prices) for route in spec.routes],
        "tiers": rendered_tiers,
        "fallback": {"tier": spec.fallback.tier, "on": list(spec.fallback.when)}
        if spec.fallback
        else None,
        "retry": _render_retry(spec.retry or Retry()),
        "cache": cache,
    }
    document["hash"] = content_hash(document)
    return RenderResult(document, (), tuple(key_envs), tuple(warnings))


def with_endpoint(document: Mapping[str, Any], endpoint: str) -> dict[str, Any]:
    """The document with every tier sent to ``endpoint`` (e.g. a local emulator), re-hashed."""
    if not endpoint.startswith(("http://", "https://")):
        raise ValueError(f"endpoint must be an http:// or https:// URL, got {endpoint!r}")
    tiers = {
        name: {**tier, "endpoint": endpoint.rstrip("/")} for name, tier in document["tiers"].items()
    }
    moved = {**document, "tiers": tiers}
    moved["hash"] = content_hash(moved)
    return moved


def content_hash(document: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the document without its ``hash`` field."""
    body = {k: v for k, v in document.items() if k != "hash"}
    return "sha256:" + hashlib.sha256(canonical_json(body).encode()).hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def dump_document(document: Mapping[str, Any]) -> str:
    """The document as written to the ConfigMap and printed by ``tierwise render``."""
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def _render_tier(
    name: str, spec: ModelTierSpec, prices: Prices, min_cacheable: int
) -> dict[str, Any]:
    return {
        "provider": spec.provider,
        "model": spec.model,
        "endpoint": (spec.endpoint or DEFAULT_ENDPOINT).rstrip("/"),
        "apiKeyEnv": api_key_env(name) if spec.api_key_secret_ref else None,
        "pricing": prices.to_document(),
        "limits": {
            "maxOutputTokens": spec.limits.max_output_tokens,
            "timeoutSeconds": spec.limits.timeout_seconds,
            "maxConcurrency": spec.limits.max_concurrency,
        },
        "minCacheableTokens": min_cacheable,
    }


def _render_route(route: Route, prices: Mapping[str, Prices]) -> dict[str, Any]:
    models = [
        f"tierwise/{route.name}",
        *(route.match.models if route.match and route.match.models else ()),
    ]
    return {
        "name": route.name,
        "models": list(dict.fromkeys(models)),
        "mode": route.mode,
        "streamPolicy": route.stream_policy,
        "formatInstruction": route.format_instruction,
        "counterfactualTier": strongest_tier([s.tier for s in route.steps], prices),
        "steps": [
            {
                "tier": step.tier,
                "maxTokens": step.max_tokens,
                "escalateWhen": [_render_signal(s) for s in step.escalate_when or ()],
            }
            for step in route.steps
        ],
    }


def strongest_tier(tier_names: list[str], prices: Mapping[str, Prices]) -> str:
    """The most expensive tier by (output, input) price; a tie goes to the later step."""
    best = tier_names[0]
    for name in tier_names[1:]:
        if _strength(prices[name]) >= _strength(prices[best]):
            best = name
    return best


def _strength(prices: Prices) -> tuple[Decimal, Decimal]:
    return (prices.rates.output, prices.rates.input)


def _render_signal(signal: EscalationSignal) -> dict[str, Any]:
    doc: dict[str, Any] = {"signal": signal.signal}
    if signal.signal in ("stopReason", "jsonFieldNotIn"):
        doc["values"] = list(signal.values or ())
    if signal.signal in ("jsonFieldBelow", "jsonFieldNotIn"):
        doc["field"] = signal.field
    if signal.signal == "jsonFieldBelow":
        doc["threshold"] = format_usd(signal.threshold or Decimal(0))
    if signal.signal == "regex":
        doc["pattern"] = signal.pattern
    return doc


def _render_retry(retry: Retry) -> dict[str, Any]:
    return {
        "maxAttempts": retry.max_attempts,
        "initialBackoffSeconds": format_usd(retry.initial_backoff_seconds),
        "maxBackoffSeconds": format_usd(retry.max_backoff_seconds),
    }


def _render_cache(
    spec: CascadePolicySpec, profiles: Mapping[str, Resource], namespace: str
) -> tuple[dict[str, Any], Problem | None]:
    disabled = {
        "profile": None,
        "promptCaching": {"enabled": False, "breakpoints": [], "ttl": "5m", "maxBreakpoints": 4},
        "responseCache": _render_response_cache(None),
    }
    if spec.cache_profile_ref is None:
        return disabled, None
    name = spec.cache_profile_ref.name
    profile = profiles.get(name)
    if profile is None:
        return disabled, Problem(
            CACHE_PROFILE_NOT_FOUND,
            name,
            f"CacheProfile {name!r} not found in namespace {namespace!r}",
        )
    profile_spec: CacheProfileSpec = profile.spec
    prompt = profile_spec.prompt_caching
    return {
        "profile": name,
        "promptCaching": {
            "enabled": bool(prompt and prompt.enabled and prompt.breakpoints),
            "breakpoints": list(prompt.breakpoints) if prompt else [],
            "ttl": prompt.ttl if prompt else "5m",
            "maxBreakpoints": prompt.max_breakpoints if prompt else 4,
        },
        "responseCache": _render_response_cache(profile_spec),
    }, None


def _render_response_cache(spec: CacheProfileSpec | None) -> dict[str, Any]:
    cache = spec.response_cache if spec else None
    if cache is None:
        return {
            "enabled": False,
            "ttlSeconds": 300,
            "maxEntries": 10000,
            "backend": "memory",
            "redisURL": None,
            "allowNonDeterministic": False,
        }
    return {
        "enabled": cache.enabled,
        "ttlSeconds": cache.ttl_seconds,
        "maxEntries": cache.max_entries,
        "backend": cache.backend,
        "redisURL": cache.redis.url if cache.redis else None,
        "allowNonDeterministic": cache.allow_non_deterministic,
    }
