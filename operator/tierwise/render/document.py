"""Render a CascadePolicy, its tiers and its cache profile into a router config document.

A pure function: no Kubernetes, no I/O. The operator writes the document into the policy's
ConfigMap; ``tierwise render`` prints it from local manifests. Problems that stop a policy
from resolving come back as values (``Problem``) that the operator turns into status
conditions and the CLI into an error message. See docs/router-config.md for the format.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from typing import Any

from tierwise.api import CASCADE_POLICY, Resource
from tierwise.api.models import (
    CacheProfileSpec,
    CascadePolicySpec,
    EscalationSignal,
    ModelTierSpec,
    duration_seconds,
)
from tierwise.api.models import Retry as RetrySpec
from tierwise.api.models import Route as RouteSpec
from tierwise.pricing import (
    BUILTIN,
    PriceCatalog,
    Prices,
    PricingProblem,
    resolve_prices,
    retirement_notice,
)
from tierwise.render.budgets import render_budgets
from tierwise.routerconfig import (
    DEFAULT_ENDPOINT,
    OPENAI,
    REDIS_PASSWORD_ENV,
    REDIS_TLS_DIR,
    REDIS_URL_ENV,
    AnswerProbabilitySignal,
    CacheConfig,
    Fallback,
    InputBudget,
    InvalidJSONSignal,
    JSONFieldBelowSignal,
    JSONFieldNotInSignal,
    PolicyRef,
    PromptCaching,
    RegexSignal,
    ResponseCacheConfig,
    RetryPolicy,
    Route,
    RouterConfig,
    Signal,
    Step,
    StopReasonSignal,
    Thinking,
    Tier,
    TierLimits,
    api_key_env,
)

# Reasons are CamelCase so they can be used verbatim as condition reasons.
TIER_NOT_FOUND = "TierNotFound"
CACHE_PROFILE_NOT_FOUND = "CacheProfileNotFound"
PRICING_UNKNOWN = "PricingUnknown"
PRICING_AMBIGUOUS = "PricingAmbiguous"
SIGNAL_UNSUPPORTED = "SignalUnsupported"
KEY_ENV_CONFLICT = "KeyEnvConflict"


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
    config: RouterConfig | None
    problems: tuple[Problem, ...] = ()
    key_envs: tuple[SecretKeyEnv, ...] = field(default=())
    # Things that do not stop rendering but deserve a warning (a tier's model retiring).
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.config is not None

    @property
    def document(self) -> dict[str, Any] | None:
        """The document to write (with its hash), or None when the policy does not resolve."""
        return self.config.to_document() if self.config else None


def secret_key_env(tier_name: str, spec: ModelTierSpec) -> SecretKeyEnv | None:
    """Where the router finds a tier's API key (env var) and where that comes from (the
    tier's Secret); None for a tier without ``apiKeySecretRef``."""
    ref = spec.api_key_secret_ref
    return None if ref is None else SecretKeyEnv(api_key_env(tier_name), ref.name, ref.key)


def key_env_conflicts(tier_names: Iterable[str]) -> list[Problem]:
    """Tiers whose key variables would share one name: each pair is refused, naming both
    tiers, since one variable can carry only one tier's key (the other tier's endpoint
    would get it)."""
    first: dict[str, str] = {}
    problems = []
    for name in dict.fromkeys(tier_names):
        env = api_key_env(name)
        other = first.setdefault(env, name)
        if other != name:
            problems.append(
                Problem(
                    KEY_ENV_CONFLICT,
                    name,
                    f"ModelTiers {other!r} and {name!r} would both read their API key from"
                    f" {env}; rename one of them",
                )
            )
    return problems


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
    rendered_tiers: dict[str, Tier] = {}
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
            tier_spec.price_overrides(),
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
        key_env = secret_key_env(name, tier_spec)
        if key_env is not None:
            key_envs.append(key_env)

    keyed = [n for n in spec.tier_names() if n in rendered_tiers and rendered_tiers[n].api_key_env]
    problems.extend(key_env_conflicts(keyed))
    problems.extend(_unsupported_signals(spec, rendered_tiers))
    cache, cache_problem = _render_cache(spec, cache_profiles, policy.namespace)
    profile = cache_profiles.get(cache.profile) if cache.profile else None
    key_envs.extend(redis_secrets(profile.spec if profile else None)[0])
    if cache_problem:
        problems.append(cache_problem)
    if problems:
        return RenderResult(None, tuple(problems), warnings=tuple(warnings))

    config = RouterConfig(
        policy=PolicyRef(namespace=policy.namespace, name=policy.name),
        default_route=spec.default_route,
        routes=tuple(_render_route(route, prices) for route in spec.routes),
        tiers=rendered_tiers,
        fallback=Fallback(tier=spec.fallback.tier, on=tuple(spec.fallback.when))
        if spec.fallback
        else None,
        retry=_render_retry(spec.retry or RetrySpec()),
        cache=cache,
        budgets=render_budgets(spec.budgets),
    )
    return RenderResult(config.with_hash(), (), tuple(key_envs), tuple(warnings))


def with_endpoint(config: RouterConfig, endpoint: str) -> RouterConfig:
    """The config with every tier sent to ``endpoint`` (e.g. a local emulator), re-hashed."""
    if not endpoint.startswith(("http://", "https://")):
        raise ValueError(f"endpoint must be an http:// or https:// URL, got {endpoint!r}")
    tiers = {name: replace(tier, endpoint=endpoint) for name, tier in config.tiers.items()}
    return replace(config, tiers=tiers).with_hash()


def render_tier(
    name: str,
    tiers: Mapping[str, Resource],
    namespace: str,
    catalog: PriceCatalog = BUILTIN,
) -> dict[str, Any] | Problem:
    """One tier as the router config carries it (e.g. an eval judge's), or why it cannot be."""
    tier = tiers.get(name)
    if tier is None:
        return Problem(
            TIER_NOT_FOUND, name, f"ModelTier {name!r} not found in namespace {namespace!r}"
        )
    spec: ModelTierSpec = tier.spec
    overrides = spec.price_overrides()
    resolved = resolve_prices(spec.model, overrides, catalog)
    if isinstance(resolved, PricingProblem):
        return Problem(resolved.reason, name, f"ModelTier {name!r}: {resolved.message}")
    min_cacheable = catalog.min_cacheable_tokens(spec.model)
    return _render_tier(name, spec, resolved, min_cacheable).to_document()


def _render_tier(name: str, spec: ModelTierSpec, prices: Prices, min_cacheable: int) -> Tier:
    return Tier(
        name=name,
        provider=spec.provider,
        model=spec.model,
        endpoint=spec.endpoint or DEFAULT_ENDPOINT,
        api_key_env=api_key_env(name) if spec.api_key_secret_ref else None,
        prices=prices,
        limits=TierLimits(
            max_output_tokens=spec.limits.max_output_tokens,
            timeout_seconds=spec.limits.timeout_seconds,
            max_concurrency=spec.limits.max_concurrency,
        ),
        min_cacheable_tokens=min_cacheable,
        structured_output=spec.structured_output,
    )


def _render_route(route: RouteSpec, prices: Mapping[str, Prices]) -> Route:
    return Route(
        name=route.name,
        models=tuple(route.match.models) if route.match and route.match.models else (),
        mode=route.mode,
        stream_policy=route.stream_policy,
        format_instruction=route.format_instruction,
        counterfactual_tier=strongest_tier([s.tier for s in route.steps], prices),
        response_cache=route.response_cache,
        input_budget=InputBudget(route.input_budget.max_input_tokens, route.input_budget.on_exceed)
        if route.input_budget
        else None,
        steps=tuple(
            Step(
                tier=step.tier,
                max_tokens=step.max_tokens,
                escalate_when=tuple(_render_signal(s) for s in step.escalate_when or ()),
                effort=step.effort,
                hedge_after_seconds=duration_seconds(step.hedge_after)
                if step.hedge_after
                else None,
                thinking=Thinking(step.thinking.type, step.thinking.budget_tokens)
                if step.thinking
                else None,
            )
            for step in route.steps
        ),
    )


def strongest_tier(tier_names: list[str], prices: Mapping[str, Prices]) -> str:
    """The most expensive tier by (output, input) price; a tie goes to the later step."""
    best = tier_names[0]
    for name in tier_names[1:]:
        if _strength(prices[name]) >= _strength(prices[best]):
            best = name
    return best


def _strength(prices: Prices) -> tuple[Decimal, Decimal]:
    return (prices.rates.output, prices.rates.input)


def _render_signal(signal: EscalationSignal) -> Signal:
    field_path = tuple((signal.field or "").split("."))
    if signal.signal == "stopReason":
        return StopReasonSignal(tuple(signal.values or ()))
    if signal.signal == "invalidJSON":
        return InvalidJSONSignal()
    if signal.signal == "jsonFieldBelow":
        return JSONFieldBelowSignal(field_path, signal.threshold or Decimal(0))
    if signal.signal == "jsonFieldNotIn":
        return JSONFieldNotInSignal(field_path, tuple(signal.values or ()))
    if signal.signal == "answerProbabilityBelow":
        return AnswerProbabilitySignal(
            signal.threshold or Decimal(0), field_path if signal.field else None
        )
    return RegexSignal(re.compile(signal.pattern or ""))


def _unsupported_signals(spec: CascadePolicySpec, tiers: Mapping[str, Tier]) -> list[Problem]:
    """Steps that escalate on token probabilities where their tier cannot return them.

    The CRD's CEL cannot see a step's ModelTier, so the renderer refuses such a policy: only
    OpenAI-compatible servers return log-probabilities; the Messages API does not.
    """
    problems = []
    for route in spec.routes:
        for index, step in enumerate(route.steps):
            tier = tiers.get(step.tier)
            uses = any(s.signal == "answerProbabilityBelow" for s in step.escalate_when or ())
            if uses and tier is not None and tier.provider != OPENAI:
                message = (
                    f"route {route.name!r} step {index} escalates on answerProbabilityBelow, "
                    f"but ModelTier {step.tier!r} has provider {tier.provider}, which returns "
                    "no token log-probabilities; use it on a provider openai tier"
                )
                problems.append(Problem(SIGNAL_UNSUPPORTED, step.tier, message))
    return problems


def _render_retry(retry: RetrySpec) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=retry.max_attempts,
        initial_backoff_seconds=float(retry.initial_backoff_seconds),
        max_backoff_seconds=float(retry.max_backoff_seconds),
    )


def _render_cache(
    spec: CascadePolicySpec, profiles: Mapping[str, Resource], namespace: str
) -> tuple[CacheConfig, Problem | None]:
    if spec.cache_profile_ref is None:
        return CacheConfig(), None
    name = spec.cache_profile_ref.name
    profile = profiles.get(name)
    if profile is None:
        return CacheConfig(), Problem(
            CACHE_PROFILE_NOT_FOUND,
            name,
            f"CacheProfile {name!r} not found in namespace {namespace!r}",
        )
    profile_spec: CacheProfileSpec = profile.spec
    return CacheConfig(
        profile=name,
        prompt_caching=_render_prompt_caching(profile_spec),
        response_cache=_render_response_cache(profile_spec),
    ), None


def _render_prompt_caching(spec: CacheProfileSpec) -> PromptCaching:
    prompt = spec.prompt_caching
    if prompt is None:
        return PromptCaching()
    return PromptCaching(
        enabled=bool(prompt.enabled and prompt.breakpoints),
        breakpoints=tuple(prompt.breakpoints),
        ttl=prompt.ttl,
        max_breakpoints=prompt.max_breakpoints,
    )


def _render_response_cache(spec: CacheProfileSpec) -> ResponseCacheConfig:
    cache = spec.response_cache
    if cache is None:
        return ResponseCacheConfig()
    redis = cache.redis if cache.backend == "redis" else None
    return ResponseCacheConfig(
        enabled=cache.enabled,
        ttl_seconds=cache.ttl_seconds,
        max_entries=cache.max_entries,
        backend=cache.backend,
        redis_url=redis.url if redis else None,
        allow_non_deterministic=cache.allow_non_deterministic,
        shared_routes=tuple(cache.shared_routes),
        redis_url_env=REDIS_URL_ENV if redis and redis.url_secret_ref else None,
        redis_password_env=REDIS_PASSWORD_ENV if redis and redis.password_secret_ref else None,
        redis_tls_dir=REDIS_TLS_DIR if redis and redis.client_cert_secret_ref else None,
    )


def redis_secrets(spec: CacheProfileSpec | None) -> tuple[list[SecretKeyEnv], str | None]:
    """The sidecar's Redis credentials from a profile: variables from Secret keys (whole
    URL, password) and the client certificate Secret to mount at REDIS_TLS_DIR, if any."""
    cache = spec.response_cache if spec else None
    redis = cache.redis if cache and cache.enabled and cache.backend == "redis" else None
    if redis is None:
        return [], None
    envs = [
        SecretKeyEnv(env, ref.name, ref.key)
        for env, ref in (
            (REDIS_URL_ENV, redis.url_secret_ref),
            (REDIS_PASSWORD_ENV, redis.password_secret_ref),
        )
        if ref is not None
    ]
    cert = redis.client_cert_secret_ref
    return envs, cert.name if cert else None
