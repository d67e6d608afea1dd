"""The router config document (docs/router-config.md) parsed into typed, frozen values.

``parse_config`` validates everything the router relies on and reports every problem at
once, each with its JSON path, so a bad ConfigMap is diagnosed from one log line.
Nothing here does I/O except ``load_config`` reading a file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tierwise.pricing import Prices
from tierwise.render import content_hash
from tierwise.router.jsonutil import loads

SCHEMA_VERSION = "tierwise.dev/router-config/v1"

ROUTE_HEADER = "x-tierwise-route"
MODEL_ALIAS_PREFIX = "tierwise/"

STREAM_POLICIES = frozenset({"cascade", "strongestOnly"})
MODES = frozenset({"interactive", "batch"})
BREAKPOINT_KINDS = ("tools", "system", "history")  # prompt order, also insertion order
CACHE_TTLS = frozenset({"5m", "1h"})
FALLBACK_FAILURES = frozenset({"overloaded", "rateLimited", "serverError", "timeout"})
CACHE_BACKENDS = frozenset({"memory", "redis"})


class ConfigError(ValueError):
    """The document is not a valid router config; ``problems`` lists every reason."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"invalid router config ({source}): " + "; ".join(problems))


# --- escalation signals -------------------------------------------------------------------


@dataclass(frozen=True)
class StopReasonSignal:
    values: frozenset[str]
    reason: str = "stop_reason"


@dataclass(frozen=True)
class InvalidJSONSignal:
    reason: str = "invalid_json"


@dataclass(frozen=True)
class JSONFieldBelowSignal:
    field: tuple[str, ...]
    threshold: Decimal
    reason: str = "json_field_below"


@dataclass(frozen=True)
class JSONFieldNotInSignal:
    field: tuple[str, ...]
    values: frozenset[str]
    reason: str = "json_field_not_in"


@dataclass(frozen=True)
class RegexSignal:
    pattern: re.Pattern[str]
    reason: str = "regex"


Signal = (
    StopReasonSignal | InvalidJSONSignal | JSONFieldBelowSignal | JSONFieldNotInSignal | RegexSignal
)

ESCALATION_REASONS = (
    "stop_reason",
    "invalid_json",
    "json_field_below",
    "json_field_not_in",
    "regex",
)


# --- routes, tiers, policies --------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    tier: str
    max_tokens: int | None
    escalate_when: tuple[Signal, ...] = ()


@dataclass(frozen=True)
class Route:
    name: str
    models: tuple[str, ...]
    steps: tuple[Step, ...]
    mode: str = "interactive"
    stream_policy: str = "cascade"
    format_instruction: str | None = None
    counterfactual_tier: str | None = None

    @property
    def last_step(self) -> Step:
        return self.steps[-1]


@dataclass(frozen=True)
class TierLimits:
    max_output_tokens: int | None = None
    timeout_seconds: float = 60.0
    max_concurrency: int = 64


@dataclass(frozen=True)
class Tier:
    name: str
    model: str
    endpoint: str
    api_key_env: str | None
    prices: Prices
    limits: TierLimits = TierLimits()
    min_cacheable_tokens: int = 1024
    provider: str = "anthropic"


@dataclass(frozen=True)
class Fallback:
    tier: str
    on: frozenset[str]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    initial_backoff_seconds: float = 0.25
    max_backoff_seconds: float = 8.0


@dataclass(frozen=True)
class PromptCaching:
    enabled: bool = False
    breakpoints: frozenset[str] = frozenset()
    ttl: str = "5m"
    max_breakpoints: int = 4  # per request, the client's own included (the API allows 4)


@dataclass(frozen=True)
class ResponseCacheConfig:
    enabled: bool = False
    ttl_seconds: int = 300
    max_entries: int = 10_000
    backend: str = "memory"
    redis_url: str | None = None
    allow_non_deterministic: bool = False


@dataclass(frozen=True)
class CacheConfig:
    profile: str | None = None
    prompt_caching: PromptCaching = PromptCaching()
    response_cache: ResponseCacheConfig = ResponseCacheConfig()


@dataclass(frozen=True)
class PolicyRef:
    namespace: str
    name: str

    @property
    def label(self) -> str:
        """The value of the ``policy`` metric label."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class RouterConfig:
    schema_version: str
    hash: str
    policy: PolicyRef
    default_route: str | None
    routes: tuple[Route, ...]
    tiers: Mapping[str, Tier]
    fallback: Fallback | None = None
    retry: RetryPolicy = RetryPolicy()
    cache: CacheConfig = CacheConfig()
    # Derived indexes, built by parse_config; read-only views.
    routes_by_name: Mapping[str, Route] = field(default_factory=lambda: MappingProxyType({}))
    routes_by_model: Mapping[str, Route] = field(default_factory=lambda: MappingProxyType({}))
    computed_hash: str = ""

    @property
    def hash_matches(self) -> bool:
        return self.hash == self.computed_hash


# The operator's definition of the hash, so the router checks exactly what render wrote.
document_hash = content_hash


def load_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> RouterConfig:
    """A validated config from a file path or an already-parsed document."""
    if isinstance(source, Mapping):
        return parse_config(source)
    path = Path(source)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"cannot read {path}: {exc.strerror or exc}"], str(path)) from exc
    return parse_config_bytes(data, str(path))


def parse_config_bytes(data: bytes, source: str = "config") -> RouterConfig:
    try:
        doc = loads(data)
    except ValueError as exc:
        raise ConfigError([f"not valid JSON: {exc}"], source) from exc
    return parse_config(doc, source)


def parse_config(doc: Any, source: str = "config") -> RouterConfig:
    """Validate a config document; raises ``ConfigError`` listing every problem."""
    p = _Parser()
    config = p.document(doc)
    if p.problems or config is None:
        raise ConfigError(p.problems or ["empty document"], source)
    return config


# --- the parser ---------------------------------------------------------------------------


class _Parser:
    """Collects problems instead of stopping at the first, so one run reports them all."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    # Typed accessors: each returns a usable default after recording a problem.

    def obj(self, value: Any, path: str) -> Mapping[str, Any]:
        if isinstance(value, Mapping):
            return value
        self.bad(path, f"must be an object, got {_kind(value)}")
        return {}

    def opt_obj(self, value: Any, path: str) -> Mapping[str, Any] | None:
        return None if value is None else self.obj(value, path)

    def string(self, value: Any, path: str, *, allow_empty: bool = False) -> str:
        if isinstance(value, str) and (allow_empty or value):
            return value
        self.bad(
            path,
            "must be a non-empty string"
            if isinstance(value, str)
            else f"must be a string, got {_kind(value)}",
        )
        return ""

    def opt_string(self, value: Any, path: str) -> str | None:
        return None if value is None else self.string(value, path)

    def integer(self, value: Any, path: str, *, minimum: int = 0) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        self.bad(path, f"must be an integer >= {minimum}, got {value!r}")
        return minimum

    def opt_integer(self, value: Any, path: str, *, minimum: int = 0) -> int | None:
        return None if value is None else self.integer(value, path, minimum=minimum)

    def number(self, value: Any, path: str, *, positive: bool = True) -> Decimal:
        """A decimal from a decimal string or a JSON number."""
        try:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise InvalidOperation
            number = Decimal(str(value))
            if not number.is_finite() or (positive and number <= 0) or number < 0:
                raise InvalidOperation
            return number
        except InvalidOperation:
            self.bad(
                path,
                f"must be a {'positive' if positive else 'non-negative'} number, got {value!r}",
            )
            return Decimal(1)

    def boolean(self, value: Any, path: str, default: bool) -> bool:
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        self.bad(path, f"must be true or false, got {value!r}")
        return default

    def strings(self, value: Any, path: str) -> list[str]:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        self.bad(path, "must be a list of strings")
        return []

    def choice(self, value: Any, path: str, allowed: frozenset[str], default: str) -> str:
        if value is None:
            return default
        if value in allowed:
            return str(value)
        self.bad(path, f"must be one of {sorted(allowed)}, got {value!r}")
        return default

    # Sections.

    def document(self, doc: Any) -> RouterConfig | None:
        if not isinstance(doc, Mapping):
            self.bad("$", f"the document must be a JSON object, got {_kind(doc)}")
            return None
        version = doc.get("schemaVersion")
        if version != SCHEMA_VERSION:
            # Refuse early: fields of an unknown schema cannot be trusted to mean the same.
            self.bad(
                "schemaVersion",
                f"unknown schema version {version!r} (this router understands {SCHEMA_VERSION!r})",
            )
            return None
        computed = document_hash(doc)
        declared = doc.get("hash")
        if declared is not None and not isinstance(declared, str):
            self.bad("hash", "must be a string")
        tiers = self.tiers(doc.get("tiers"))
        routes = self.routes(doc.get("routes"), tiers)
        policy_doc = self.obj(doc.get("policy"), "policy")
        policy = PolicyRef(
            namespace=self.string(policy_doc.get("namespace"), "policy.namespace"),
            name=self.string(policy_doc.get("name"), "policy.name"),
        )
        by_name, by_model = self.indexes(routes)
        default_route = self.opt_string(doc.get("defaultRoute"), "defaultRoute")
        if default_route is not None and default_route not in by_name:
            self.bad("defaultRoute", f"names no route: {default_route!r}")
        return RouterConfig(
            schema_version=version,
            hash=declared if isinstance(declared, str) else computed,
            policy=policy,
            default_route=default_route,
            routes=tuple(routes),
            tiers=MappingProxyType(tiers),
            fallback=self.fallback(doc.get("fallback"), tiers),
            retry=self.retry(doc.get("retry")),
            cache=self.cache(doc.get("cache")),
            routes_by_name=MappingProxyType(by_name),
            routes_by_model=MappingProxyType(by_model),
            computed_hash=computed,
        )

    def tiers(self, value: Any) -> dict[str, Tier]:
        tiers_doc = self.obj(value, "tiers")
        if not tiers_doc and isinstance(value, Mapping):
            self.bad("tiers", "must name at least one tier")
        return {name: self.tier(name, doc, f"tiers.{name}") for name, doc in tiers_doc.items()}

    def tier(self, name: str, value: Any, path: str) -> Tier:
        doc = self.obj(value, path)
        provider = doc.get("provider", "anthropic")
        if provider != "anthropic":
            self.bad(f"{path}.provider", f"unsupported provider {provider!r} (only 'anthropic')")
        endpoint = self.string(
            doc.get("endpoint") or "https://api.anthropic.com", f"{path}.endpoint"
        )
        if endpoint and not re.match(r"^https?://", endpoint):
            self.bad(f"{path}.endpoint", f"must be an http(s) URL, got {endpoint!r}")
        limits_doc = self.opt_obj(doc.get("limits"), f"{path}.limits") or {}
        limits = TierLimits(
            max_output_tokens=self.opt_integer(
                limits_doc.get("maxOutputTokens"), f"{path}.limits.maxOutputTokens", minimum=1
            ),
            timeout_seconds=float(
                self.number(limits_doc.get("timeoutSeconds", 60), f"{path}.limits.timeoutSeconds")
            ),
            max_concurrency=self.integer(
                limits_doc.get("maxConcurrency", 64), f"{path}.limits.maxConcurrency", minimum=1
            ),
        )
        return Tier(
            name=name,
            provider="anthropic",
            model=self.string(doc.get("model"), f"{path}.model"),
            endpoint=endpoint.rstrip("/"),
            api_key_env=self.opt_string(doc.get("apiKeyEnv"), f"{path}.apiKeyEnv"),
            prices=self.prices(doc.get("pricing"), f"{path}.pricing"),
            limits=limits,
            min_cacheable_tokens=self.integer(
                doc.get("minCacheableTokens", 1024), f"{path}.minCacheableTokens"
            ),
        )

    def prices(self, value: Any, path: str) -> Prices:
        doc = self.obj(value, path)
        try:
            prices = Prices.from_document(doc)
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            # A tier is never priced at zero by accident: no valid prices, no config.
            self.bad(path, f"incomplete or invalid prices ({type(exc).__name__}: {exc})")
            return Prices.from_document(
                {k: "0" for k in ("input", "output", "cacheWrite5m", "cacheWrite1h", "cacheRead")}
            )
        rates = [prices.rates] + ([prices.long_prompt.rates] if prices.long_prompt else [])
        for r in rates:
            for rate in (r.input, r.output, r.cache_write_5m, r.cache_write_1h, r.cache_read):
                if not rate.is_finite() or rate < 0:
                    self.bad(path, f"prices must be finite and non-negative, got {rate}")
        return prices

    def routes(self, value: Any, tiers: Mapping[str, Tier]) -> list[Route]:
        if not isinstance(value, list) or not value:
            self.bad("routes", "must be a non-empty list")
            return []
        return [self.route(doc, f"routes[{i}]", tiers) for i, doc in enumerate(value)]

    def route(self, value: Any, path: str, tiers: Mapping[str, Tier]) -> Route:
        doc = self.obj(value, path)
        name = self.string(doc.get("name"), f"{path}.name")
        models = self.strings(doc.get("models", []), f"{path}.models")
        alias = MODEL_ALIAS_PREFIX + name
        if alias not in models:
            models.insert(0, alias)  # the alias always selects its route
        steps_doc = doc.get("steps")
        if not isinstance(steps_doc, list) or not steps_doc:
            self.bad(f"{path}.steps", "must be a non-empty list")
            steps_doc = []
        steps = tuple(self.step(s, f"{path}.steps[{i}]", tiers) for i, s in enumerate(steps_doc))
        counterfactual = self.opt_string(
            doc.get("counterfactualTier"), f"{path}.counterfactualTier"
        )
        if counterfactual is not None and counterfactual not in tiers:
            self.bad(f"{path}.counterfactualTier", f"names no tier: {counterfactual!r}")
        instruction = doc.get("formatInstruction")
        if instruction is not None and not isinstance(instruction, str):
            self.bad(f"{path}.formatInstruction", "must be a string or null")
            instruction = None
        return Route(
            name=name,
            models=tuple(models),
            steps=steps,
            mode=self.choice(doc.get("mode"), f"{path}.mode", MODES, "interactive"),
            stream_policy=self.choice(
                doc.get("streamPolicy"), f"{path}.streamPolicy", STREAM_POLICIES, "cascade"
            ),
            format_instruction=instruction or None,
            counterfactual_tier=counterfactual,
        )

    def step(self, value: Any, path: str, tiers: Mapping[str, Tier]) -> Step:
        doc = self.obj(value, path)
        tier = self.string(doc.get("tier"), f"{path}.tier")
        if tier and tier not in tiers:
            self.bad(f"{path}.tier", f"names no tier: {tier!r}")
        signals_doc = doc.get("escalateWhen") or []
        if not isinstance(signals_doc, list):
            self.bad(f"{path}.escalateWhen", "must be a list")
            signals_doc = []
        signals = [self.signal(s, f"{path}.escalateWhen[{i}]") for i, s in enumerate(signals_doc)]
        return Step(
            tier=tier,
            max_tokens=self.opt_integer(doc.get("maxTokens"), f"{path}.maxTokens", minimum=1),
            escalate_when=tuple(s for s in signals if s is not None),
        )

    def signal(self, value: Any, path: str) -> Signal | None:
        doc = self.obj(value, path)
        kind = doc.get("signal")
        if kind == "stopReason":
            return StopReasonSignal(frozenset(self.strings(doc.get("values"), f"{path}.values")))
        if kind == "invalidJSON":
            return InvalidJSONSignal()
        if kind == "jsonFieldBelow":
            threshold = self.number(doc.get("threshold"), f"{path}.threshold", positive=False)
            if threshold > 1:
                self.bad(f"{path}.threshold", f"must be in [0, 1], got {threshold}")
            return JSONFieldBelowSignal(self.field_path(doc.get("field"), path), threshold)
        if kind == "jsonFieldNotIn":
            return JSONFieldNotInSignal(
                self.field_path(doc.get("field"), path),
                frozenset(self.strings(doc.get("values"), f"{path}.values")),
            )
        if kind == "regex":
            pattern = self.string(doc.get("pattern"), f"{path}.pattern")
            try:
                return RegexSignal(re.compile(pattern))
            except re.error as exc:
                self.bad(f"{path}.pattern", f"not a valid regular expression: {exc}")
                return None
        self.bad(f"{path}.signal", f"unknown signal {kind!r}")
        return None

    def field_path(self, value: Any, path: str) -> tuple[str, ...]:
        name = self.string(value, f"{path}.field")
        parts = tuple(name.split("."))
        if name and not all(parts):
            self.bad(f"{path}.field", f"not a dot path: {name!r}")
        return parts

    def indexes(self, routes: list[Route]) -> tuple[dict[str, Route], dict[str, Route]]:
        by_name: dict[str, Route] = {}
        by_model: dict[str, Route] = {}
        for route in routes:
            if route.name in by_name:
                self.bad("routes", f"duplicate route name {route.name!r}")
            by_name.setdefault(route.name, route)
            for model in route.models:
                other = by_model.setdefault(model, route)
                if other is not route:
                    self.bad(
                        "routes", f"model {model!r} selects both {other.name!r} and {route.name!r}"
                    )
        return by_name, by_model

    def fallback(self, value: Any, tiers: Mapping[str, Tier]) -> Fallback | None:
        doc = self.opt_obj(value, "fallback")
        if doc is None:
            return None
        tier = self.string(doc.get("tier"), "fallback.tier")
        if tier and tier not in tiers:
            self.bad("fallback.tier", f"names no tier: {tier!r}")
        on = self.strings(doc.get("on", ["overloaded"]), "fallback.on")
        for failure in on:
            if failure not in FALLBACK_FAILURES:
                self.bad(
                    "fallback.on",
                    f"unknown failure {failure!r} (one of {sorted(FALLBACK_FAILURES)})",
                )
        return Fallback(tier=tier, on=frozenset(on))

    def retry(self, value: Any) -> RetryPolicy:
        doc = self.opt_obj(value, "retry")
        if doc is None:
            return RetryPolicy()
        initial = float(
            self.number(
                doc.get("initialBackoffSeconds", "0.25"),
                "retry.initialBackoffSeconds",
                positive=False,
            )
        )
        maximum = float(
            self.number(
                doc.get("maxBackoffSeconds", "8"), "retry.maxBackoffSeconds", positive=False
            )
        )
        if maximum < initial:
            self.bad("retry.maxBackoffSeconds", "must be >= initialBackoffSeconds")
        return RetryPolicy(
            max_attempts=self.integer(doc.get("maxAttempts", 3), "retry.maxAttempts", minimum=1),
            initial_backoff_seconds=initial,
            max_backoff_seconds=maximum,
        )

    def max_breakpoints(self, value: Any) -> int:
        count = self.integer(value, "cache.promptCaching.maxBreakpoints", minimum=1)
        if count > 4:
            self.bad("cache.promptCaching.maxBreakpoints", f"must be at most 4, got {count}")
            return 4
        return count

    def cache(self, value: Any) -> CacheConfig:
        doc = self.opt_obj(value, "cache")
        if doc is None:
            return CacheConfig()
        pc_doc = self.opt_obj(doc.get("promptCaching"), "cache.promptCaching") or {}
        breakpoints = self.strings(pc_doc.get("breakpoints", []), "cache.promptCaching.breakpoints")
        for kind in breakpoints:
            if kind not in BREAKPOINT_KINDS:
                self.bad(
                    "cache.promptCaching.breakpoints",
                    f"unknown breakpoint {kind!r} (one of {list(BREAKPOINT_KINDS)})",
                )
        prompt_caching = PromptCaching(
            enabled=self.boolean(pc_doc.get("enabled"), "cache.promptCaching.enabled", False),
            breakpoints=frozenset(breakpoints),
            ttl=self.choice(pc_doc.get("ttl"), "cache.promptCaching.ttl", CACHE_TTLS, "5m"),
            max_breakpoints=self.max_breakpoints(pc_doc.get("maxBreakpoints", 4)),
        )
        rc_doc = self.opt_obj(doc.get("responseCache"), "cache.responseCache") or {}
        response_cache = ResponseCacheConfig(
            enabled=self.boolean(rc_doc.get("enabled"), "cache.responseCache.enabled", False),
            ttl_seconds=self.integer(
                rc_doc.get("ttlSeconds", 300), "cache.responseCache.ttlSeconds", minimum=1
            ),
            max_entries=self.integer(
                rc_doc.get("maxEntries", 10_000), "cache.responseCache.maxEntries", minimum=1
            ),
            backend=self.choice(
                rc_doc.get("backend"), "cache.responseCache.backend", CACHE_BACKENDS, "memory"
            ),
            redis_url=self.opt_string(rc_doc.get("redisURL"), "cache.responseCache.redisURL"),
            allow_non_deterministic=self.boolean(
                rc_doc.get("allowNonDeterministic"),
                "cache.responseCache.allowNonDeterministic",
                False,
            ),
        )
        if (
            response_cache.enabled
            and response_cache.backend == "redis"
            and not response_cache.redis_url
        ):
            self.bad("cache.responseCache.redisURL", "is required when backend is 'redis'")
        return CacheConfig(
            profile=self.opt_string(doc.get("profile"), "cache.profile"),
            prompt_caching=prompt_caching,
            response_cache=response_cache,
        )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "list", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )
