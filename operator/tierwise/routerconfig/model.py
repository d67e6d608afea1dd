"""The router config document as typed, frozen values (docs/router-config.md).

Each class owns one object of the document: its attributes (with the format's defaults),
``to_document()`` that writes it and ``read()`` that validates and parses it. Adding a field
is a change to one class: the attribute, one line in each of the two methods, the docs and
the golden files (``UPDATE_GOLDEN=1 pytest tests/unit/test_routerconfig.py``).
``render`` builds these values from the CRDs; the router reads them with ``parse``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, ClassVar

from tierwise.pricing import Prices, format_usd
from tierwise.routerconfig.budget import Budget, read_budgets
from tierwise.routerconfig.defaults import (
    BREAKPOINT_KINDS,
    CACHE_BACKENDS,
    CACHE_TTLS,
    DEFAULT_CACHE_BACKEND,
    DEFAULT_CACHE_TTL,
    DEFAULT_ENDPOINT,
    DEFAULT_INITIAL_BACKOFF_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BACKOFF_SECONDS,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MIN_CACHEABLE_TOKENS,
    DEFAULT_RESPONSE_CACHE_MAX_ENTRIES,
    DEFAULT_RESPONSE_CACHE_TTL_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    EFFORT_LEVELS,
    FALLBACK_FAILURES,
    MAX_BREAKPOINTS,
    MIN_THINKING_BUDGET,
    MODES,
    ON_EXCEED,
    OPENAI,
    PROVIDERS,
    RESPONSE_CACHE_MODES,
    SCHEMA_VERSION,
    STREAM_POLICIES,
    STRUCTURED_OUTPUTS,
    THINKING_TYPES,
    route_alias,
)
from tierwise.routerconfig.digest import content_hash
from tierwise.routerconfig.reader import Reader


def _decimal_text(value: Decimal | float) -> str:
    """Decimals travel as plain strings ("0.25"), never floats, so documents round-trip."""
    return format_usd(value if isinstance(value, Decimal) else Decimal(repr(value)))


def _json_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


# --- escalation signals -------------------------------------------------------------------


@dataclass(frozen=True)
class StopReasonSignal:
    values: tuple[str, ...]
    reason: ClassVar[str] = "stop_reason"
    kind: ClassVar[str] = "stopReason"

    def to_document(self) -> dict[str, Any]:
        return {"signal": self.kind, "values": list(self.values)}


@dataclass(frozen=True)
class InvalidJSONSignal:
    reason: ClassVar[str] = "invalid_json"
    kind: ClassVar[str] = "invalidJSON"

    def to_document(self) -> dict[str, Any]:
        return {"signal": self.kind}


@dataclass(frozen=True)
class JSONFieldBelowSignal:
    field: tuple[str, ...]
    threshold: Decimal
    reason: ClassVar[str] = "json_field_below"
    kind: ClassVar[str] = "jsonFieldBelow"

    def to_document(self) -> dict[str, Any]:
        return {
            "signal": self.kind,
            "field": ".".join(self.field),
            "threshold": _decimal_text(self.threshold),
        }


@dataclass(frozen=True)
class JSONFieldNotInSignal:
    field: tuple[str, ...]
    values: tuple[str, ...]
    reason: ClassVar[str] = "json_field_not_in"
    kind: ClassVar[str] = "jsonFieldNotIn"

    def to_document(self) -> dict[str, Any]:
        return {"signal": self.kind, "field": ".".join(self.field), "values": list(self.values)}


@dataclass(frozen=True)
class RegexSignal:
    pattern: re.Pattern[str]
    reason: ClassVar[str] = "regex"
    kind: ClassVar[str] = "regex"

    def to_document(self) -> dict[str, Any]:
        return {"signal": self.kind, "pattern": self.pattern.pattern}


@dataclass(frozen=True)
class AnswerProbabilitySignal:
    """The model's own probability of its answer, from token log-probabilities: of the value
    tokens of ``field`` in a JSON answer, else the geometric mean per-token probability."""

    threshold: Decimal
    field: tuple[str, ...] | None = None
    reason: ClassVar[str] = "answer_probability_below"
    kind: ClassVar[str] = "answerProbabilityBelow"

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"signal": self.kind, "threshold": _decimal_text(self.threshold)}
        if self.field is not None:
            doc["field"] = ".".join(self.field)
        return doc


Signal = (
    StopReasonSignal
    | InvalidJSONSignal
    | JSONFieldBelowSignal
    | JSONFieldNotInSignal
    | RegexSignal
    | AnswerProbabilitySignal
)
SIGNAL_CLASSES = (
    StopReasonSignal,
    InvalidJSONSignal,
    JSONFieldBelowSignal,
    JSONFieldNotInSignal,
    RegexSignal,
    AnswerProbabilitySignal,
)
ESCALATION_REASONS = tuple(cls.reason for cls in SIGNAL_CLASSES)


def read_signal(r: Reader, value: Any, path: str) -> Signal | None:
    doc = r.obj(value, path)
    kind = doc.get("signal")
    if kind == StopReasonSignal.kind:
        return StopReasonSignal(r.strings(doc.get("values"), f"{path}.values"))
    if kind == InvalidJSONSignal.kind:
        return InvalidJSONSignal()
    if kind == JSONFieldBelowSignal.kind:
        threshold = r.number(doc.get("threshold"), f"{path}.threshold", positive=False)
        if threshold > 1:
            r.bad(f"{path}.threshold", f"must be in [0, 1], got {threshold}")
        return JSONFieldBelowSignal(_field_path(r, doc.get("field"), path), threshold)
    if kind == AnswerProbabilitySignal.kind:
        threshold = r.number(doc.get("threshold"), f"{path}.threshold", positive=False)
        if threshold > 1:
            r.bad(f"{path}.threshold", f"must be in [0, 1], got {threshold}")
        field = _field_path(r, doc["field"], path) if "field" in doc else None
        return AnswerProbabilitySignal(threshold, field)
    if kind == JSONFieldNotInSignal.kind:
        return JSONFieldNotInSignal(
            _field_path(r, doc.get("field"), path), r.strings(doc.get("values"), f"{path}.values")
        )
    if kind == RegexSignal.kind:
        pattern = r.string(doc.get("pattern"), f"{path}.pattern")
        try:
            return RegexSignal(re.compile(pattern))
        except re.error as exc:
            r.bad(f"{path}.pattern", f"not a valid regular expression: {exc}")
            return None
    r.bad(f"{path}.signal", f"unknown signal {kind!r}")
    return None


def _field_path(r: Reader, value: Any, path: str) -> tuple[str, ...]:
    name = r.string(value, f"{path}.field")
    parts = tuple(name.split("."))
    if name and not all(parts):
        r.bad(f"{path}.field", f"not a dot path: {name!r}")
    return parts


def answer_schema(signals: tuple[Signal, ...]) -> dict[str, Any] | None:
    """See ``Step.answer_schema``; fields keep the order the signals name them in (a
    constrained model writes them in that order: the label before its confidence)."""
    fields: dict[tuple[str, ...], dict[str, Any]] = {}
    wants_json = False
    for signal in signals:
        if isinstance(signal, InvalidJSONSignal):
            wants_json = True
        elif isinstance(signal, JSONFieldNotInSignal):
            fields[signal.field] = {"type": "string", "enum": list(signal.values)}
        elif isinstance(signal, JSONFieldBelowSignal):
            fields.setdefault(signal.field, {"type": "number"})
        elif isinstance(signal, AnswerProbabilitySignal) and signal.field is not None:
            fields.setdefault(signal.field, {"type": "string"})
    if not fields:
        return {"type": "object"} if wants_json else None
    root: dict[str, Any] = _object_schema()
    for path, value in fields.items():
        node = root
        for part in path[:-1]:
            child = node["properties"].get(part)
            if child is None or child.get("type") != "object":
                child = node["properties"][part] = _object_schema()
                node["required"].append(part)
            node = child
        if path[-1] not in node["properties"]:
            node["required"].append(path[-1])
        node["properties"][path[-1]] = value
    return root


def _object_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {}, "required": [], "additionalProperties": False}


# --- routes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thinking:
    """The ``thinking`` a step sends, replacing the client's."""

    type: str  # adaptive | enabled | disabled
    budget_tokens: int | None = None  # only with enabled

    def to_request(self) -> dict[str, Any]:
        """The Messages API ``thinking`` object."""
        if self.type == "enabled":
            return {"type": "enabled", "budget_tokens": self.budget_tokens}
        return {"type": self.type}

    def to_document(self) -> dict[str, Any]:
        return {"type": self.type, "budgetTokens": self.budget_tokens}

    @classmethod
    def read(cls, r: Reader, value: Any, path: str) -> Thinking | None:
        if value is None:
            return None
        doc = r.obj(value, path)
        kind = r.choice(doc.get("type"), f"{path}.type", THINKING_TYPES, "adaptive")
        budget = r.opt_integer(
            doc.get("budgetTokens"), f"{path}.budgetTokens", minimum=MIN_THINKING_BUDGET
        )
        if (budget is not None) != (kind == "enabled"):
            r.bad(f"{path}.budgetTokens", "required with type enabled, and only then")
        return cls(kind, budget)


@dataclass(frozen=True)
class Step:
    tier: str
    max_tokens: int | None = None  # a ceiling on the client's max_tokens, never a default
    escalate_when: tuple[Signal, ...] = ()
    effort: str | None = None  # output_config.effort sent to the tier, replacing the client's
    thinking: Thinking | None = None
    # Start the next step in parallel when this one has not answered after this long.
    hedge_after_seconds: Decimal | None = None

    @property
    def wants_logprobs(self) -> bool:
        """Whether this step's signals read the answer's token log-probabilities."""
        return any(isinstance(s, AnswerProbabilitySignal) for s in self.escalate_when)

    @property
    def answer_schema(self) -> dict[str, Any] | None:
        """The JSON schema this step's signals expect of an answer, or ``None`` when they
        read no JSON: an object with exactly the fields they read, each required, a field
        with allowed values (``jsonFieldNotIn``) an enum of them, a ``jsonFieldBelow`` field
        a number, an ``answerProbabilityBelow`` field otherwise a string. Sent to a tier with
        ``structuredOutput`` (docs/router.md, "Structured output")."""
        return answer_schema(self.escalate_when)

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "tier": self.tier,
            "maxTokens": self.max_tokens,
            "escalateWhen": [s.to_document() for s in self.escalate_when],
        }
        # Written only when set, so documents (and hashes) of policies without them stay put.
        if self.effort is not None:
            doc["effort"] = self.effort
        if self.thinking is not None:
            doc["thinking"] = self.thinking.to_document()
        if self.hedge_after_seconds is not None:
            doc["hedgeAfterSeconds"] = _decimal_text(self.hedge_after_seconds)
        return doc

    @classmethod
    def read(cls, r: Reader, value: Any, path: str) -> Step:
        doc = r.obj(value, path)
        signals_doc = doc.get("escalateWhen") or []
        if not isinstance(signals_doc, list):
            r.bad(f"{path}.escalateWhen", "must be a list")
            signals_doc = []
        signals = [
            read_signal(r, s, f"{path}.escalateWhen[{i}]") for i, s in enumerate(signals_doc)
        ]
        effort = doc.get("effort")
        if effort is not None and effort not in EFFORT_LEVELS:
            r.bad(f"{path}.effort", f"must be one of {', '.join(EFFORT_LEVELS)}")
            effort = None
        return cls(
            tier=r.string(doc.get("tier"), f"{path}.tier"),
            max_tokens=r.opt_integer(doc.get("maxTokens"), f"{path}.maxTokens", minimum=1),
            escalate_when=tuple(s for s in signals if s is not None),
            effort=effort,
            thinking=Thinking.read(r, doc.get("thinking"), f"{path}.thinking"),
            hedge_after_seconds=None
            if doc.get("hedgeAfterSeconds") is None
            else r.number(doc.get("hedgeAfterSeconds"), f"{path}.hedgeAfterSeconds"),
        )


@dataclass(frozen=True)
class InputBudget:
    """A route's most prompt tokens, and what to do with a prompt over it."""

    max_input_tokens: int
    on_exceed: str = "reject"  # reject | dropOldestTurns | truncateToolResults

    def to_document(self) -> dict[str, Any]:
        return {"maxInputTokens": self.max_input_tokens, "onExceed": self.on_exceed}

    @classmethod
    def read(cls, r: Reader, value: Any, path: str) -> InputBudget | None:
        if value is None:
            return None
        doc = r.obj(value, path)
        return cls(
            max_input_tokens=r.integer(
                doc.get("maxInputTokens"), f"{path}.maxInputTokens", minimum=1
            ),
            on_exceed=r.choice(doc.get("onExceed"), f"{path}.onExceed", ON_EXCEED, "reject"),
        )


@dataclass(frozen=True)
class Route:
    name: str
    models: tuple[str, ...]  # request models that select the route; the alias is added first
    steps: tuple[Step, ...]
    mode: str = "interactive"
    stream_policy: str = "cascade"
    format_instruction: str | None = None
    counterfactual_tier: str | None = None
    response_cache: str = "auto"  # auto | always | never
    input_budget: InputBudget | None = None

    def __post_init__(self) -> None:
        alias = route_alias(self.name)
        object.__setattr__(self, "models", tuple(dict.fromkeys((alias, *self.models))))

    @property
    def last_step(self) -> Step:
        return self.steps[-1]

    def to_document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "models": list(self.models),
            "mode": self.mode,
            "streamPolicy": self.stream_policy,
            "formatInstruction": self.format_instruction,
            "counterfactualTier": self.counterfactual_tier,
            "steps": [s.to_document() for s in self.steps],
            "responseCache": self.response_cache,
            "inputBudget": self.input_budget.to_document() if self.input_budget else None,
        }

    @classmethod
    def read(cls, r: Reader, value: Any, path: str) -> Route:
        doc = r.obj(value, path)
        steps_doc = doc.get("steps")
        if not isinstance(steps_doc, list) or not steps_doc:
            r.bad(f"{path}.steps", "must be a non-empty list")
            steps_doc = []
        instruction = doc.get("formatInstruction")
        if instruction is not None and not isinstance(instruction, str):
            r.bad(f"{path}.formatInstruction", "must be a string or null")
            instruction = None
        return cls(
            name=r.string(doc.get("name"), f"{path}.name"),
            models=r.strings(doc.get("models", []), f"{path}.models"),
            steps=tuple(Step.read(r, s, f"{path}.steps[{i}]") for i, s in enumerate(steps_doc)),
            mode=r.choice(doc.get("mode"), f"{path}.mode", MODES, "interactive"),
            stream_policy=r.choice(
                doc.get("streamPolicy"), f"{path}.streamPolicy", STREAM_POLICIES, "cascade"
            ),
            format_instruction=instruction or None,
            counterfactual_tier=r.opt_string(
                doc.get("counterfactualTier"), f"{path}.counterfactualTier"
            ),
            response_cache=r.choice(
                doc.get("responseCache"), f"{path}.responseCache", RESPONSE_CACHE_MODES, "auto"
            ),
            input_budget=InputBudget.read(r, doc.get("inputBudget"), f"{path}.inputBudget"),
        )


# --- tiers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TierLimits:
    max_output_tokens: int | None = None
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY

    def to_document(self) -> dict[str, Any]:
        return {
            "maxOutputTokens": self.max_output_tokens,
            "timeoutSeconds": _json_number(self.timeout_seconds),
            "maxConcurrency": self.max_concurrency,
        }

    @classmethod
    def read(cls, r: Reader, value: Any, path: str) -> TierLimits:
        doc = r.opt_obj(value, path) or {}
        return cls(
            max_output_tokens=r.opt_integer(
                doc.get("maxOutputTokens"), f"{path}.maxOutputTokens", minimum=1
            ),
            timeout_seconds=float(
                r.number(
                    doc.get("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS), f"{path}.timeoutSeconds"
                )
            ),
            max_concurrency=r.integer(
                doc.get("maxConcurrency", DEFAULT_MAX_CONCURRENCY),
                f"{path}.maxConcurrency",
                minimum=1,
            ),
        )


_ZERO_PRICES = {k: "0" for k in ("input", "output", "cacheWrite5m", "cacheWrite1h", "cacheRead")}


def read_prices(r: Reader, value: Any, path: str) -> Prices:
    doc = r.obj(value, path)
    try:
        prices = Prices.from_document(doc)
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        # A tier is never priced at zero by accident: no valid prices, no config.
        r.bad(path, f"incomplete or invalid prices ({type(exc).__name__}: {exc})")
        return Prices.from_document(_ZERO_PRICES)
    bands = [prices.rates] + ([prices.long_prompt.rates] if prices.long_prompt else [])
    for rates in bands:
        for rate in (rates.input, rates.output, rates.cache_write_5m, rates.cache_write_1h):
            if not rate.is_finite() or rate < 0:
                r.bad(path, f"prices must be finite and non-negative, got {rate}")
        if not rates.cache_read.is_finite() or rates.cache_read < 0:
            r.bad(path, f"prices must be finite and non-negative, got {rates.cache_read}")
    return prices


@dataclass(frozen=True)
class Tier:
    name: str  # the key in ``tiers``, not a field of the tier's object
    model: str
    prices: Prices
    endpoint: str = DEFAULT_ENDPOINT
    api_key_env: str | None = None
    limits: TierLimits = TierLimits()
    min_cacheable_tokens: int = DEFAULT_MIN_CACHEABLE_TOKENS
    provider: str = "anthropic"
    # An openai tier's form of asking for the step's answer schema (STRUCTURED_OUTPUTS).
    structured_output: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "endpoint", self.endpoint.rstrip("/"))

    def to_document(self) -> dict[str, Any]:
        doc = {
            "provider": self.provider,
            "model": self.model,
            "endpoint": self.endpoint,
            "apiKeyEnv": self.api_key_env,
            "pricing": self.prices.to_document(),
            "limits": self.limits.to_document(),
            "minCacheableTokens": self.min_cacheable_tokens,
        }
        # Written only when set, so documents (and hashes) of other tiers stay put.
        if self.structured_output != "none":
            doc["structuredOutput"] = self.structured_output
        return doc

    @classmethod
    def read(cls, r: Reader, name: str, value: Any, path: str) -> Tier:
        doc = r.obj(value, path)
        provider = doc.get("provider", "anthropic")
        if provider not in PROVIDERS:
            r.bad(f"{path}.provider", f"unsupported provider {provider!r} (anthropic or openai)")
        endpoint = r.string(doc.get("endpoint") or DEFAULT_ENDPOINT, f"{path}.endpoint")
        if endpoint and not re.match(r"^https?://", endpoint):
            r.bad(f"{path}.endpoint", f"must be an http(s) URL, got {endpoint!r}")
        return cls(
            name=name,
            model=r.string(doc.get("model"), f"{path}.model"),
            prices=read_prices(r, doc.get("pricing"), f"{path}.pricing"),
            endpoint=endpoint,
            api_key_env=r.opt_string(doc.get("apiKeyEnv"), f"{path}.apiKeyEnv"),
            limits=TierLimits.read(r, doc.get("limits"), f"{path}.limits"),
            min_cacheable_tokens=r.integer(
                doc.get("minCacheableTokens", DEFAULT_MIN_CACHEABLE_TOKENS),
                f"{path}.minCacheableTokens",
            ),
            provider=provider if provider in PROVIDERS else "anthropic",
            structured_output=_structured_output(r, doc, provider, path),
        )


def _structured_output(r: Reader, doc: Mapping[str, Any], provider: Any, path: str) -> str:
    where = f"{path}.structuredOutput"
    value = r.choice(doc.get("structuredOutput"), where, STRUCTURED_OUTPUTS, "none")
    if value != "none" and provider != OPENAI:
        r.bad(where, "only a tier with provider openai takes a response_format")
        return "none"
    return value


# --- policy-wide settings -----------------------------------------------------------------


@dataclass(frozen=True)
class Fallback:
    tier: str
    on: tuple[str, ...] = ("overloaded",)  # failure kinds, see FALLBACK_FAILURES

    def to_document(self) -> dict[str, Any]:
        return {"tier": self.tier, "on": list(self.on)}

    @classmethod
    def read(cls, r: Reader, value: Any, path: str) -> Fallback | None:
        doc = r.opt_obj(value, path)
        if doc is None:
            return None
        return cls(
            tier=r.string(doc.get("tier"), f"{path}.tier"),
            on=r.subset(doc.get("on", ["overloaded"]), f"{path}.on", FALLBACK_FAILURES, "failure"),
        )


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = DEFAULT_MAX_ATTEMPTS  # per upstream call, the first included
    initial_backoff_seconds: float = float(DEFAULT_INITIAL_BACKOFF_SECONDS)
    max_backoff_seconds: float = float(DEFAULT_MAX_BACKOFF_SECONDS)

    def to_document(self) -> dict[str, Any]:
        return {
            "maxAttempts": self.max_attempts,
            "initialBackoffSeconds": _decimal_text(self.initial_backoff_seconds),
            "maxBackoffSeconds": _decimal_text(self.max_backoff_seconds),
        }

    @classmethod
    def read(cls, r: Reader, value: Any, path: str) -> RetryPolicy:
        doc = r.opt_obj(value, path)
        if doc is None:
            return cls()
        initial = r.number(
            doc.get("initialBackoffSeconds", DEFAULT_INITIAL_BACKOFF_SECONDS),
            f"{path}.initialBackoffSeconds",
            positive=False,
        )
        maximum = r.number(
            doc.get("maxBackoffSeconds", DEFAULT_MAX_BACKOFF_SECONDS),
            f"{path}.maxBackoffSeconds",
            positive=False,
        )
        if maximum < initial:
            r.bad(f"{path}.maxBackoffSeconds", "must be >= initialBackoffSeconds")
        return cls(
            max_attempts=r.integer(
                doc.get("maxAttempts", DEFAULT_MAX_ATTEMPTS), f"{path}.maxAttempts", minimum=1
            ),
            initial_backoff_seconds=float(initial),
            max_backoff_seconds=float(maximum),
        )


@dataclass(frozen=True)
class PromptCaching:
    enabled: bool = False
    breakpoints: tuple[str, ...] = ()  # a subset of BREAKPOINT_KINDS
    ttl: str = DEFAULT_CACHE_TTL
    max_breakpoints: int = MAX_BREAKPOINTS  # per request, the client's own included

    def to_document(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "breakpoints": list(self.breakpoints),
            "ttl": self.ttl,
            "maxBreakpoints": self.max_breakpoints,
        }

    @classmethod
    def read(cls, r: Reader, value: Any, path: str) -> PromptCaching:
        doc = r.opt_obj(value, path) or {}
        return cls(
            enabled=r.boolean(doc.get("enabled"), f"{path}.enabled", False),
            breakpoints=r.subset(
                doc.get("breakpoints", []), f"{path}.breakpoints", BREAKPOINT_KINDS, "breakpoint"
            ),
            ttl=r.choice(doc.get("ttl"), f"{path}.ttl", CACHE_TTLS, DEFAULT_CACHE_TTL),
            max_breakpoints=_max_breakpoints(r, doc.get("maxBreakpoints"), path),
        )


def _max_breakpoints(r: Reader, value: Any, path: str) -> int:
    count = r.integer(
        MAX_BREAKPOINTS if value is None else value, f"{path}.maxBreakpoints", minimum=1
    )
    if count > MAX_BREAKPOINTS:
        r.bad(f"{path}.maxBreakpoints", f"must be at most {MAX_BREAKPOINTS}, got {count}")
        return MAX_BREAKPOINTS
    return count


@dataclass(frozen=True)
class ResponseCacheConfig:
    enabled: bool = False
    ttl_seconds: int = DEFAULT_RESPONSE_CACHE_TTL_SECONDS
    max_entries: int = DEFAULT_RESPONSE_CACHE_MAX_ENTRIES
    backend: str = DEFAULT_CACHE_BACKEND
    redis_url: str | None = None
    allow_non_deterministic: bool = False
    shared_routes: tuple[str, ...] = ()  # routes whose entries all callers share
    # Credentials are never in the document: the variables holding the whole URL or the
    # password (from Secrets), and the directory of a client certificate (tls.crt, tls.key,
    # ca.crt). Written only when set, so a config without them keeps its hash.
    redis_url_env: str | None = None
    redis_password_env: str | None = None
    redis_tls_dir: str | None = None

    def to_document(self) -> dict[str, Any]:
        document = {
            "enabled": self.enabled,
            "ttlSeconds": self.ttl_seconds,
            "maxEntries": self.max_entries,
            "backend": self.backend,
            "redisURL": self.redis_url,
            "allowNonDeterministic": self.allow_non_deterministic,
            "sharedRoutes": list(self.shared_routes),
        }
        optional = {
            "redisURLEnv": self.redis_url_env,
            "redisPasswordEnv": self.redis_password_env,
            "redisTLSDir": self.redis_tls_dir,
        }
        return {**document, **{k: v for k, v in optional.items() if v is not None}}

    def env_names(self) -> list[str]:
        """The variables the Redis connection needs (set from Secrets by the injection)."""
        if not (self.enabled and self.backend == "redis"):
            return []
        return [e for e in (self.redis_url_env, self.redis_password_env) if e]

    @classmethod
    def read(cls, r: Reader, value: Any, path: str) -> ResponseCacheConfig:
        doc = r.opt_obj(value, path) or {}
        config = cls(
            enabled=r.boolean(doc.get("enabled"), f"{path}.enabled", False),
            ttl_seconds=r.integer(
                doc.get("ttlSeconds", DEFAULT_RESPONSE_CACHE_TTL_SECONDS),
                f"{path}.ttlSeconds",
                minimum=1,
            ),
            max_entries=r.integer(
                doc.get("maxEntries", DEFAULT_RESPONSE_CACHE_MAX_ENTRIES),
                f"{path}.maxEntries",
                minimum=1,
            ),
            backend=r.choice(
                doc.get("backend"), f"{path}.backend", CACHE_BACKENDS, DEFAULT_CACHE_BACKEND
            ),
            redis_url=r.opt_string(doc.get("redisURL"), f"{path}.redisURL"),
            allow_non_deterministic=r.boolean(
                doc.get("allowNonDeterministic"), f"{path}.allowNonDeterministic", False
            ),
            shared_routes=r.strings(doc.get("sharedRoutes", []), f"{path}.sharedRoutes"),
            redis_url_env=r.opt_string(doc.get("redisURLEnv"), f"{path}.redisURLEnv"),
            redis_password_env=r.opt_string(
                doc.get("redisPasswordEnv"), f"{path}.redisPasswordEnv"
            ),
            redis_tls_dir=r.opt_string(doc.get("redisTLSDir"), f"{path}.redisTLSDir"),
        )
        redis_url = config.redis_url or config.redis_url_env
        if config.enabled and config.backend == "redis" and not redis_url:
            r.bad(f"{path}.redisURL", "is required when backend is 'redis' (or redisURLEnv)")
        return config


@dataclass(frozen=True)
class CacheConfig:
    profile: str | None = None
    prompt_caching: PromptCaching = PromptCaching()
    response_cache: ResponseCacheConfig = ResponseCacheConfig()

    def to_document(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "promptCaching": self.prompt_caching.to_document(),
            "responseCache": self.response_cache.to_document(),
        }

    @classmethod
    def read(cls, r: Reader, value: Any, path: str) -> CacheConfig:
        doc = r.opt_obj(value, path)
        if doc is None:
            return cls()
        return cls(
            profile=r.opt_string(doc.get("profile"), f"{path}.profile"),
            prompt_caching=PromptCaching.read(r, doc.get("promptCaching"), f"{path}.promptCaching"),
            response_cache=ResponseCacheConfig.read(
                r, doc.get("responseCache"), f"{path}.responseCache"
            ),
        )


@dataclass(frozen=True)
class PolicyRef:
    namespace: str
    name: str

    @property
    def label(self) -> str:
        """The value of the ``policy`` metric label."""
        return f"{self.namespace}/{self.name}"

    def to_document(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "name": self.name}

    @classmethod
    def read(cls, r: Reader, value: Any, path: str) -> PolicyRef:
        doc = r.obj(value, path)
        return cls(
            namespace=r.string(doc.get("namespace"), f"{path}.namespace"),
            name=r.string(doc.get("name"), f"{path}.name"),
        )


# --- the document -------------------------------------------------------------------------


@dataclass(frozen=True)
class RouterConfig:
    policy: PolicyRef
    routes: tuple[Route, ...]
    tiers: Mapping[str, Tier]
    default_route: str | None = None
    fallback: Fallback | None = None
    retry: RetryPolicy = RetryPolicy()
    cache: CacheConfig = CacheConfig()
    budgets: tuple[Budget, ...] = ()  # spend budgets (routerconfig.budget)
    schema_version: str = SCHEMA_VERSION
    hash: str = ""  # as the document declares it; ``to_document()`` writes the content's
    computed_hash: str = ""  # the hash of the content actually read
    # Derived read-only indexes (the first route wins a duplicate; ``parse`` reports it).
    routes_by_name: Mapping[str, Route] = field(init=False, repr=False, compare=False)
    routes_by_model: Mapping[str, Route] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, Route] = {}
        by_model: dict[str, Route] = {}
        for route in self.routes:
            by_name.setdefault(route.name, route)
            for model in route.models:
                by_model.setdefault(model, route)
        object.__setattr__(self, "tiers", MappingProxyType(dict(self.tiers)))
        object.__setattr__(self, "routes_by_name", MappingProxyType(by_name))
        object.__setattr__(self, "routes_by_model", MappingProxyType(by_model))

    @property
    def hash_matches(self) -> bool:
        return self.hash == self.computed_hash

    def with_hash(self) -> RouterConfig:
        """This config with ``hash`` (and ``computed_hash``) set from its own content."""
        digest = content_hash(self.to_document(include_hash=False))
        return replace(self, hash=digest, computed_hash=digest)

    def to_document(self, *, include_hash: bool = True) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "schemaVersion": self.schema_version,
            "policy": self.policy.to_document(),
            "defaultRoute": self.default_route,
            "routes": [route.to_document() for route in self.routes],
            "tiers": {name: tier.to_document() for name, tier in self.tiers.items()},
            "fallback": self.fallback.to_document() if self.fallback else None,
            "retry": self.retry.to_document(),
            "cache": self.cache.to_document(),
        }
        if self.budgets:  # only when set: documents of policies without budgets keep their hash
            doc["budgets"] = [b.to_document() for b in self.budgets]
        if include_hash:
            doc["hash"] = content_hash(doc)
        return doc

    @classmethod
    def read(cls, r: Reader, doc: Any) -> RouterConfig | None:
        if not isinstance(doc, Mapping):
            r.bad("$", "the document must be a JSON object")
            return None
        version = doc.get("schemaVersion")
        if version != SCHEMA_VERSION:
            # Refuse early: fields of an unknown schema cannot be trusted to mean the same.
            r.bad(
                "schemaVersion",
                f"unknown schema version {version!r} (this router understands {SCHEMA_VERSION!r})",
            )
            return None
        computed = content_hash(doc)
        declared = doc.get("hash")
        if declared is not None and not isinstance(declared, str):
            r.bad("hash", "must be a string")
        tiers_doc = r.obj(doc.get("tiers"), "tiers")
        if not tiers_doc and isinstance(doc.get("tiers"), Mapping):
            r.bad("tiers", "must name at least one tier")
        routes_doc = doc.get("routes")
        if not isinstance(routes_doc, list) or not routes_doc:
            r.bad("routes", "must be a non-empty list")
            routes_doc = []
        config = cls(
            schema_version=version,
            hash=declared if isinstance(declared, str) else computed,
            computed_hash=computed,
            policy=PolicyRef.read(r, doc.get("policy"), "policy"),
            default_route=r.opt_string(doc.get("defaultRoute"), "defaultRoute"),
            routes=tuple(Route.read(r, d, f"routes[{i}]") for i, d in enumerate(routes_doc)),
            tiers={n: Tier.read(r, n, d, f"tiers.{n}") for n, d in tiers_doc.items()},
            fallback=Fallback.read(r, doc.get("fallback"), "fallback"),
            retry=RetryPolicy.read(r, doc.get("retry"), "retry"),
            cache=CacheConfig.read(r, doc.get("cache"), "cache"),
            budgets=read_budgets(r, doc.get("budgets"), "budgets"),
        )
        config.check_references(r)
        return config

    def check_references(self, r: Reader) -> None:
        """Every name the document uses resolves, and no model selects two routes."""
        for i, route in enumerate(self.routes):
            path = f"routes[{i}]"
            if self.routes_by_name[route.name] is not route:
                r.bad("routes", f"duplicate route name {route.name!r}")
            for model in route.models:
                other = self.routes_by_model[model]
                if other is not route:
                    r.bad(
                        "routes", f"model {model!r} selects both {other.name!r} and {route.name!r}"
                    )
            for j, step in enumerate(route.steps):
                if step.tier and step.tier not in self.tiers:
                    r.bad(f"{path}.steps[{j}].tier", f"names no tier: {step.tier!r}")
                elif step.wants_logprobs and self.tiers[step.tier].provider != OPENAI:
                    r.bad(
                        f"{path}.steps[{j}].escalateWhen",
                        f"answerProbabilityBelow needs token log-probabilities, which tier "
                        f"{step.tier!r} (provider {self.tiers[step.tier].provider}) cannot return",
                    )
            if route.steps and route.steps[-1].hedge_after_seconds is not None:
                r.bad(
                    f"{path}.steps[{len(route.steps) - 1}].hedgeAfterSeconds",
                    "the last step has no next step to hedge with",
                )
            tier = route.counterfactual_tier
            if tier is not None and tier not in self.tiers:
                r.bad(f"{path}.counterfactualTier", f"names no tier: {tier!r}")
        if self.default_route is not None and self.default_route not in self.routes_by_name:
            r.bad("defaultRoute", f"names no route: {self.default_route!r}")
        if self.fallback and self.fallback.tier and self.fallback.tier not in self.tiers:
            r.bad("fallback.tier", f"names no tier: {self.fallback.tier!r}")
        for i, budget in enumerate(self.budgets):
            if budget.route is not None and budget.route not in self.routes_by_name:
                r.bad(f"budgets[{i}].route", f"names no route: {budget.route!r}")
