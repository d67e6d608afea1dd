"""Typed models of the three ``tierwise.dev/v1alpha1`` specs.

Defaults that reach the router config come from ``tierwise.routerconfig``, the format's
one owner. They mirror ``crds/*.yaml`` field for field (names, types, enums, defaults, required), and
``validate`` methods repeat the CRDs' CEL rules with the same messages, so ``tierwise
render`` rejects offline what the API server would reject. A test keeps both in agreement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from tierwise.api.budgets import Budget, check_budgets
from tierwise.api.capture import Capture
from tierwise.api.parsing import SpecError
from tierwise.api.shadow import Shadow
from tierwise.routerconfig import (
    CACHE_TTLS,
    DEFAULT_BREAKPOINTS,
    DEFAULT_CACHE_BACKEND,
    DEFAULT_CACHE_TTL,
    DEFAULT_INITIAL_BACKOFF_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BACKOFF_SECONDS,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_RESPONSE_CACHE_MAX_ENTRIES,
    DEFAULT_RESPONSE_CACHE_TTL_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    MAX_BREAKPOINTS,
)

Signal = Literal[
    "stopReason",
    "invalidJSON",
    "jsonFieldBelow",
    "jsonFieldNotIn",
    "regex",
    "answerProbabilityBelow",
]
Breakpoint = Literal["tools", "system", "history"]
FallbackTrigger = Literal["overloaded", "rateLimited", "serverError", "timeout"]
GraderType = Literal["jsonField", "allowedSet", "regex", "exact", "judge"]

_ROUTE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?)(ms|s)$")


def duration_seconds(text: str) -> Decimal:
    """Seconds of a duration such as ``800ms`` or ``1.5s`` (validated by the CRD)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    value = Decimal(match.group(1))
    return value / 1000 if match.group(3) == "ms" else value


# Kubernetes label syntax (as the API server checks label selectors).
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# The stop_reason values of the Messages API (platform.claude.com, "Handling stop reasons",
# checked 2026-11-29).
STOP_REASONS = (
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
)
LABEL_KEY_MESSAGE = (
    "an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.', "
    "starting and ending with a letter or digit"
)
LABEL_VALUE_MESSAGE = (
    "at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or "
    "digit (no spaces)"
)


def is_dns_subdomain(name: str) -> bool:
    """A DNS-1123 subdomain: most Kubernetes object names (ServiceAccounts, ConfigMaps)."""
    return len(name) <= 253 and bool(_DNS_SUBDOMAIN.match(name))


def is_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME.match(name))


def is_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_VALUE.match(value))


def _check(condition: bool, path: str, message: str) -> None:
    if not condition:
        raise SpecError(path, message)


# --- ModelTier ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str = "api-key"


@dataclass(frozen=True)
class LongPromptPricing:
    """Rates for a whole request whose prompt is over ``threshold_tokens``."""

    threshold_tokens: int
    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal

    def validate(self, path: str) -> None:
        _check(
            self.threshold_tokens >= 1,
            f"{path}.thresholdTokens",
            "pricing.longPrompt.thresholdTokens must be at least 1",
        )
        for name, value in _rate_fields(self).items():
            _check(
                value >= 0,
                f"{path}.{name}",
                f"pricing.longPrompt.{name} must be zero or more (USD per million tokens)",
            )


@dataclass(frozen=True)
class TierPricing:
    input: Decimal | None = None
    output: Decimal | None = None
    cache_write_5m: Decimal | None = None
    cache_write_1h: Decimal | None = None
    cache_read: Decimal | None = None
    long_prompt: LongPromptPricing | None = None

    def validate(self, path: str) -> None:
        for name, value in _rate_fields(self).items():
            _check(
                value >= 0,
                f"{path}.{name}",
                f"pricing.{name} must be zero or more (USD per million tokens)",
            )

    def as_overrides(self) -> dict[str, Any]:
        """The prices this spec sets, keyed by their CRD names."""
        named: dict[str, Any] = _rate_fields(self)
        if self.long_prompt is not None:
            band = self.long_prompt
            named["longPrompt"] = {"thresholdTokens": band.threshold_tokens, **_rate_fields(band)}
        return named


def _rate_fields(prices: TierPricing | LongPromptPricing) -> dict[str, Decimal]:
    named = {
        "input": prices.input,
        "output": prices.output,
        "cacheWrite5m": prices.cache_write_5m,
        "cacheWrite1h": prices.cache_write_1h,
        "cacheRead": prices.cache_read,
    }
    return {k: v for k, v in named.items() if v is not None}


@dataclass(frozen=True)
class TierLimits:
    max_output_tokens: int | None = None
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY

    def validate(self, path: str) -> None:
        if self.max_output_tokens is not None:
            _check(
                self.max_output_tokens >= 1,
                f"{path}.maxOutputTokens",
                "limits.maxOutputTokens must be at least 1",
            )
        _check(
            1 <= self.timeout_seconds <= 3600,
            f"{path}.timeoutSeconds",
            "limits.timeoutSeconds must be between 1 and 3600",
        )
        _check(
            self.max_concurrency >= 1,
            f"{path}.maxConcurrency",
            "limits.maxConcurrency must be at least 1",
        )


@dataclass(frozen=True)
class OpenAITierSettings:
    """``spec.openai``: what an OpenAI-compatible server supports beyond Chat Completions."""

    # How to ask for an answer matching the step's schema: none, jsonSchema or jsonObject.
    structured_output: Literal["none", "jsonSchema", "jsonObject"] = "none"


@dataclass(frozen=True)
class ModelTierSpec:
    model: str
    provider: Literal["anthropic", "openai"] = "anthropic"
    endpoint: str | None = None
    api_key_secret_ref: SecretKeyRef | None = None
    pricing: TierPricing | None = None
    limits: TierLimits = field(default_factory=TierLimits)
    openai: OpenAITierSettings | None = None

    @property
    def structured_output(self) -> str:
        return self.openai.structured_output if self.openai else "none"

    def price_overrides(self) -> dict[str, Any] | None:
        """``spec.pricing`` over the catalog. A self-hosted (openai) tier's unset cache prices
        are its input price: the router sends such a tier no cache marks, so it bills no
        cache tokens, and nothing is guessed from Anthropic's multipliers."""
        if self.pricing is None:
            return None
        named = self.pricing.as_overrides()
        if self.provider == "openai":
            for name in ("cacheWrite5m", "cacheWrite1h", "cacheRead"):
                if named.get(name) is None:
                    named[name] = named.get("input")
        return named

    def validate(self, path: str) -> None:
        _check(0 < len(self.model) <= 128, f"{path}.model", "model must be 1 to 128 characters")
        if self.provider == "openai":
            _check(
                self.endpoint is not None,
                path,
                "a tier with provider openai needs endpoint, the base URL of its "
                "OpenAI-compatible server",
            )
            _check(
                self.pricing is not None
                and self.pricing.input is not None
                and self.pricing.output is not None,
                path,
                "a tier with provider openai needs pricing.input and pricing.output "
                "(USD per million tokens, 0 for a server you run yourself)",
            )
        _check(
            self.openai is None or self.provider == "openai",
            f"{path}.openai",
            "openai settings apply only to a tier with provider openai",
        )
        if self.endpoint is not None:
            where = f"{path}.endpoint"
            _check(
                self.endpoint.startswith(("http://", "https://")),
                where,
                "endpoint must be an http:// or https:// URL",
            )
            _check(
                not re.search(r"\s", self.endpoint),
                where,
                "endpoint must not contain spaces or line breaks",
            )
            _check(
                not re.search(r"/v1/?$", self.endpoint) and not re.search(r"[?#]", self.endpoint),
                where,
                "endpoint is the base URL without /v1, a query or a fragment; the router adds /v1/messages itself",
            )
            _check(
                bool(re.match(r"^https?://[^/]+", self.endpoint)),
                where,
                "endpoint must name a host",
            )


# --- CacheProfile ------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptCaching:
    enabled: bool = True
    breakpoints: tuple[Breakpoint, ...] = DEFAULT_BREAKPOINTS
    ttl: str = DEFAULT_CACHE_TTL
    max_breakpoints: int = MAX_BREAKPOINTS

    def validate(self, path: str) -> None:
        _check(
            len(set(self.breakpoints)) == len(self.breakpoints),
            f"{path}.breakpoints",
            "breakpoints must not repeat",
        )
        _check(
            self.ttl in CACHE_TTLS,
            f"{path}.ttl",
            "ttl must be 5m or 1h, the two prompt-cache lifetimes the API offers",
        )
        _check(
            1 <= self.max_breakpoints <= MAX_BREAKPOINTS,
            f"{path}.maxBreakpoints",
            "maxBreakpoints must be between 1 and 4, the API rejects more than 4 cache_control blocks",
        )
        _check(
            len(self.breakpoints) <= self.max_breakpoints,
            path,
            "promptCaching lists more breakpoints than maxBreakpoints allows",
        )


# A Redis URL with a password in it ("redis://:secret@host", "rediss://user:secret@host").
_URL_WITH_PASSWORD = re.compile(r"^rediss?://[^/@]*:[^/@]*@")


@dataclass(frozen=True)
class RedisSecretKeyRef:
    """One key of a Secret in the profile's namespace, passed to the sidecar through
    secretKeyRef (the operator never reads it)."""

    name: str
    key: str


@dataclass(frozen=True)
class RedisClientCertRef:
    """A kubernetes.io/tls Secret (tls.crt, tls.key, and ca.crt for a private CA), mounted
    into the sidecar (the operator never reads it)."""

    name: str


@dataclass(frozen=True)
class RedisSpec:
    url: str | None = None
    url_secret_ref: RedisSecretKeyRef | None = None
    password_secret_ref: RedisSecretKeyRef | None = None
    client_cert_secret_ref: RedisClientCertRef | None = None

    def validate(self, path: str) -> None:
        if self.url is not None:
            _check(
                self.url.startswith(("redis://", "rediss://")),
                f"{path}.url",
                "redis.url must start with redis:// or rediss://",
            )
            _check(
                not _URL_WITH_PASSWORD.match(self.url),
                f"{path}.url",
                REDIS_URL_PASSWORD_MESSAGE,
            )
            _check(
                self.client_cert_secret_ref is None or self.url.startswith("rediss://"),
                f"{path}.clientCertSecretRef",
                "redis.clientCertSecretRef needs a rediss:// (TLS) URL",
            )
        _check(
            self.url is None or self.url_secret_ref is None,
            path,
            "give redis.url or redis.urlSecretRef, not both",
        )


REDIS_URL_PASSWORD_MESSAGE = (
    "redis.url must not hold a password (it would be in git and in the router's ConfigMap):"
    " put the password in a Secret and name it in redis.passwordSecretRef, or the whole URL"
    " in redis.urlSecretRef"
)


@dataclass(frozen=True)
class ResponseCache:
    enabled: bool = False
    ttl_seconds: int = DEFAULT_RESPONSE_CACHE_TTL_SECONDS
    max_entries: int = DEFAULT_RESPONSE_CACHE_MAX_ENTRIES
    backend: Literal["memory", "redis"] = DEFAULT_CACHE_BACKEND  # type: ignore[assignment]
    redis: RedisSpec | None = None
    allow_non_deterministic: bool = False
    shared_routes: tuple[str, ...] = ()

    def validate(self, path: str) -> None:
        _check(
            self.ttl_seconds >= 1,
            f"{path}.ttlSeconds",
            "responseCache.ttlSeconds must be at least 1",
        )
        _check(
            self.max_entries >= 1,
            f"{path}.maxEntries",
            "responseCache.maxEntries must be at least 1",
        )
        _check(
            self.backend != "redis"
            or (
                self.redis is not None
                and (self.redis.url is not None or self.redis.url_secret_ref is not None)
            ),
            path,
            "responseCache with backend redis needs redis.url or redis.urlSecretRef",
        )


@dataclass(frozen=True)
class CacheProfileSpec:
    prompt_caching: PromptCaching | None = None
    response_cache: ResponseCache | None = None


# --- CascadePolicy -----------------------------------------------------------------------


@dataclass(frozen=True)
class LabelSelectorRequirement:
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] | None = None

    def validate(self, path: str) -> None:
        # The API server refuses such selectors when the operator lists pods with them.
        _check(
            is_label_key(self.key), f"{path}.key", f"key must be a label key: {LABEL_KEY_MESSAGE}"
        )
        if self.operator in ("In", "NotIn"):
            _check(bool(self.values), path, "operators In and NotIn need a non-empty values list")
        else:
            _check(not self.values, path, "operators Exists and DoesNotExist take no values")
        for index, value in enumerate(self.values or ()):
            _check(
                is_label_value(value),
                f"{path}.values[{index}]",
                f"values must be label values: {LABEL_VALUE_MESSAGE}; got {value!r}",
            )


@dataclass(frozen=True)
class LabelSelector:
    match_labels: dict[str, str] | None = None
    match_expressions: tuple[LabelSelectorRequirement, ...] | None = None

    def validate(self, path: str) -> None:
        for key, value in (self.match_labels or {}).items():
            _check(
                is_label_key(key),
                f"{path}.matchLabels",
                f"matchLabels keys must be label keys: {LABEL_KEY_MESSAGE}; got {key!r}",
            )
            _check(
                is_label_value(value),
                f"{path}.matchLabels",
                f"matchLabels values must be label values: {LABEL_VALUE_MESSAGE}; got {value!r}",
            )


@dataclass(frozen=True)
class ObjectRef:
    name: str


@dataclass(frozen=True)
class EscalationSignal:
    signal: Signal
    values: tuple[str, ...] | None = None
    field: str | None = None
    threshold: Decimal | None = None
    pattern: str | None = None

    def validate(self, path: str) -> None:
        if self.signal == "stopReason":
            _check(
                bool(self.values),
                path,
                "signal stopReason needs values, e.g. [max_tokens, refusal]",
            )
        if self.signal == "jsonFieldBelow":
            _check(
                self.field is not None and self.threshold is not None,
                path,
                "signal jsonFieldBelow needs field and threshold",
            )
        if self.signal == "jsonFieldNotIn":
            _check(
                self.field is not None and bool(self.values),
                path,
                "signal jsonFieldNotIn needs field and a non-empty values list",
            )
        if self.signal == "regex":
            _check(self.pattern is not None, path, "signal regex needs pattern")
        if self.signal == "answerProbabilityBelow":
            _check(
                self.threshold is not None,
                path,
                "signal answerProbabilityBelow needs threshold (and field for a JSON answer's value)",
            )
        if self.signal == "stopReason":
            unknown = [v for v in self.values or () if v not in STOP_REASONS]
            _check(
                not unknown,
                path,
                "stopReason values must be stop reasons of the Messages API: "
                f"{', '.join(STOP_REASONS)} (not {', '.join(unknown)})",
            )
        if self.threshold is not None:
            _check(
                0 <= self.threshold <= 1, f"{path}.threshold", "threshold must be between 0 and 1"
            )
        if self.pattern is not None:
            # Beyond the CRD: CEL cannot tell whether the router's regex engine accepts it.
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise SpecError(
                    f"{path}.pattern", f"not a valid regular expression: {exc}"
                ) from exc


Effort = Literal["low", "medium", "high", "xhigh", "max"]


@dataclass(frozen=True)
class StepThinking:
    type: Literal["adaptive", "enabled", "disabled"]
    budget_tokens: int | None = None

    def validate(self, path: str) -> None:
        _check(
            (self.budget_tokens is not None) == (self.type == "enabled"),
            path,
            "thinking.budgetTokens is required with type enabled, and only then",
        )
        if self.budget_tokens is not None:
            _check(
                self.budget_tokens >= 1024,
                f"{path}.budgetTokens",
                "thinking.budgetTokens must be at least 1024",
            )


@dataclass(frozen=True)
class Step:
    tier: str
    max_tokens: int | None = None
    escalate_when: tuple[EscalationSignal, ...] | None = None
    effort: Effort | None = None
    thinking: StepThinking | None = None
    hedge_after: str | None = None

    def validate(self, path: str) -> None:
        if self.hedge_after is not None:
            _check(
                _DURATION.match(self.hedge_after) is not None,
                f"{path}.hedgeAfter",
                "hedgeAfter must be a duration such as 800ms or 1.5s",
            )
        if self.max_tokens is not None:
            _check(self.max_tokens >= 1, f"{path}.maxTokens", "maxTokens must be at least 1")
        budget = self.thinking.budget_tokens if self.thinking else None
        if budget is not None and self.max_tokens is not None:
            _check(
                budget < self.max_tokens,
                path,
                "thinking.budgetTokens must be less than maxTokens (thinking counts toward max_tokens)",
            )


@dataclass(frozen=True)
class RouteMatch:
    models: tuple[str, ...] | None = None


@dataclass(frozen=True)
class InputBudget:
    max_input_tokens: int
    on_exceed: Literal["reject", "dropOldestTurns", "truncateToolResults"] = "reject"

    def validate(self, path: str) -> None:
        _check(
            self.max_input_tokens >= 1,
            f"{path}.maxInputTokens",
            "inputBudget.maxInputTokens must be at least 1",
        )


@dataclass(frozen=True)
class Route:
    name: str
    steps: tuple[Step, ...]
    match: RouteMatch | None = None
    mode: Literal["interactive", "batch"] = "interactive"
    stream_policy: Literal["cascade", "strongestOnly"] = "cascade"
    format_instruction: str | None = None
    response_cache: Literal["auto", "always", "never"] = "auto"
    input_budget: InputBudget | None = None

    def validate(self, path: str) -> None:
        _check(
            self.steps[-1].hedge_after is None if self.steps else True,
            f"{path}.steps",
            "hedgeAfter cannot be set on a route's last step: there is no next step to hedge with",
        )
        _check(
            len(self.name) <= 63 and bool(_ROUTE_NAME.match(self.name)),
            f"{path}.name",
            "route name must be lowercase letters, digits and '-', starting and ending with a letter or digit",
        )
        _check(len(self.steps) >= 1, f"{path}.steps", "a route needs at least one step")
        if self.steps:
            _check(
                not self.steps[-1].escalate_when,
                path,
                "the last step of a route has nothing to escalate to; remove its escalateWhen",
            )
        tiers = [step.tier for step in self.steps]
        repeated = sorted({t for t in tiers if tiers.count(t) > 1})
        _check(
            not repeated,
            path,
            f"a tier may appear only once in a route's steps (repeated: {', '.join(repeated)})",
        )


@dataclass(frozen=True)
class Fallback:
    tier: str
    when: tuple[FallbackTrigger, ...] = ("overloaded",)


@dataclass(frozen=True)
class Retry:
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    initial_backoff_seconds: Decimal = DEFAULT_INITIAL_BACKOFF_SECONDS
    max_backoff_seconds: Decimal = DEFAULT_MAX_BACKOFF_SECONDS

    def validate(self, path: str) -> None:
        _check(
            1 <= self.max_attempts <= 10,
            f"{path}.maxAttempts",
            "retry.maxAttempts must be between 1 and 10",
        )
        _check(
            self.initial_backoff_seconds >= 0,
            f"{path}.initialBackoffSeconds",
            "retry.initialBackoffSeconds must be zero or more",
        )
        _check(
            self.max_backoff_seconds >= 0,
            f"{path}.maxBackoffSeconds",
            "retry.maxBackoffSeconds must be zero or more",
        )
        _check(
            self.initial_backoff_seconds <= self.max_backoff_seconds,
            path,
            "retry.initialBackoffSeconds must not be above retry.maxBackoffSeconds",
        )


# --- evaluation (eval-gated rollout) -------------------------------------------------------


@dataclass(frozen=True)
class ConfigMapKeyRef:
    name: str
    key: str = "dataset.jsonl"


@dataclass(frozen=True)
class DatasetRef:
    config_map_ref: ConfigMapKeyRef
    sample_size: int | None = None
    template: str | None = None

    def validate(self, path: str) -> None:
        if self.sample_size is not None:
            _check(self.sample_size >= 1, f"{path}.sampleSize", "sampleSize must be at least 1")
        if self.template is not None:
            _check(
                "{{input}}" in self.template,
                f"{path}.template",
                "template must contain {{input}}",
            )


@dataclass(frozen=True)
class Grader:
    type: GraderType
    field: str = "label"
    values: tuple[str, ...] | None = None
    pattern: str | None = None
    tier: str | None = None
    criteria: str | None = None

    def validate(self, path: str) -> None:
        _check(
            self.type != "judge" or self.tier is not None,
            path,
            "a judge grader needs tier, the ModelTier that grades",
        )
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise SpecError(
                    f"{path}.pattern", f"not a valid regular expression: {exc}"
                ) from exc


@dataclass(frozen=True)
class EvaluatedRoute:
    name: str
    dataset: DatasetRef | None = None
    grader: Grader | None = None


@dataclass(frozen=True)
class Gate:
    min_quality: Decimal
    max_quality_drop: Decimal | None = None
    max_cost_per_item: Decimal | None = None
    max_p95_latency_seconds: Decimal | None = None
    min_items: int = 30
    max_error_rate: Decimal = Decimal("0.05")
    # A candidate item that failed upstream: a wrong answer (default), or left out.
    candidate_errors: Literal["Wrong", "Excluded"] = "Wrong"

    def validate(self, path: str) -> None:
        for name, value in (
            ("minQuality", self.min_quality),
            ("maxQualityDrop", self.max_quality_drop),
            ("maxErrorRate", self.max_error_rate),
        ):
            if value is not None:
                _check(0 <= value <= 1, f"{path}.{name}", f"gate.{name} must be between 0 and 1")
        if self.max_cost_per_item is not None:
            _check(
                self.max_cost_per_item >= 0,
                f"{path}.maxCostPerItem",
                "gate.maxCostPerItem must be zero or more",
            )
        if self.max_p95_latency_seconds is not None:
            _check(
                self.max_p95_latency_seconds > 0,
                f"{path}.maxP95LatencySeconds",
                "gate.maxP95LatencySeconds must be more than zero",
            )
        _check(self.min_items >= 1, f"{path}.minItems", "gate.minItems must be at least 1")


@dataclass(frozen=True)
class Evaluation:
    routes: tuple[EvaluatedRoute, ...]
    gate: Gate
    dataset: DatasetRef | None = None
    grader: Grader | None = None
    on_new_policy: Literal["Evaluate", "Promote"] = "Evaluate"
    # A changed route without a dataset: Inconclusive (named in the decision) or Promote.
    unevaluated_routes: Literal["Inconclusive", "Promote"] = "Inconclusive"
    concurrency: int = 8
    timeout_seconds: int = 1800
    use_batch_api: bool = field(default=False, metadata={"json": "useBatchAPI"})
    shadow: Shadow | None = None  # the shadow stage after the offline eval (api/shadow.py)

    def validate(self, path: str) -> None:
        _check(
            len(self.routes) >= 1 or self.shadow is not None,
            f"{path}.routes",
            "evaluation needs at least one route, or shadow to gate changed routes on live traffic",
        )
        names = [r.name for r in self.routes]
        _check(
            len(set(names)) == len(names),
            f"{path}.routes",
            "evaluation.routes names must be unique",
        )
        # Without a dataset, a route is gated by the shadow stage alone (when there is one).
        _check(
            self.shadow is not None
            or self.dataset is not None
            or all(r.dataset is not None for r in self.routes),
            path,
            "every evaluated route needs a dataset, its own or evaluation.dataset (or "
            "evaluation.shadow, which gates a route without one on live traffic)",
        )
        excluded = set(self.shadow.exclude_routes or ()) if self.shadow else set()
        _check(
            self.dataset is not None
            or all(r.dataset is not None or r.name not in excluded for r in self.routes),
            path,
            "a route without a dataset cannot opt out of the shadow stage (excludeRoutes): "
            "nothing would gate it",
        )
        _check(
            self.on_new_policy == "Promote" or bool(self.offline_routes()),
            path,
            "with no dataset, a new policy's first config cannot be evaluated (there is no live "
            "traffic to shadow yet): set onNewPolicy: Promote, or give a route a dataset",
        )
        _check(
            not self.use_batch_api or self.gate.max_p95_latency_seconds is None,
            path,
            "useBatchAPI cannot be combined with gate.maxP95LatencySeconds, batch results say "
            "nothing about interactive latency",
        )
        _check(
            1 <= self.concurrency <= 256,
            f"{path}.concurrency",
            "evaluation.concurrency must be between 1 and 256",
        )
        _check(
            30 <= self.timeout_seconds <= 86400,
            f"{path}.timeoutSeconds",
            "evaluation.timeoutSeconds must be between 30 and 86400",
        )
        if self.shadow is not None:
            self.shadow.validate(f"{path}.shadow")

    def dataset_for(self, route: str) -> DatasetRef:
        found = self.dataset_of(route)
        assert found is not None, "an offline route (offline_routes) has a dataset"
        return found

    def dataset_of(self, route: str) -> DatasetRef | None:
        """The route's dataset, its own or the default; None: the shadow stage alone gates it."""
        own = next((r.dataset for r in self.routes if r.name == route), None)
        return own or self.dataset

    def offline_routes(self) -> tuple[EvaluatedRoute, ...]:
        """The routes the offline eval replays: those with a dataset."""
        return tuple(r for r in self.routes if self.dataset_of(r.name) is not None)

    def grader_for(self, route: str) -> Grader:
        own = next((r.grader for r in self.routes if r.name == route), None)
        return own or self.grader or Grader(type="jsonField")

    def judge_tiers(self) -> list[str]:
        graders = [self.grader, *(r.grader for r in self.routes)]
        return list(dict.fromkeys(g.tier for g in graders if g and g.type == "judge" and g.tier))


@dataclass(frozen=True)
class CascadePolicySpec:
    routes: tuple[Route, ...]
    pod_selector: LabelSelector | None = None
    cache_profile_ref: ObjectRef | None = None
    default_route: str | None = None
    fallback: Fallback | None = None
    retry: Retry | None = None
    evaluation: Evaluation | None = None
    budgets: tuple[Budget, ...] | None = None
    capture: Capture | None = None  # live requests captured by the sidecar (api/capture.py)

    def validate(self, path: str) -> None:
        _check(len(self.routes) >= 1, f"{path}.routes", "a CascadePolicy needs at least one route")
        names = [r.name for r in self.routes]
        repeated = sorted({n for n in names if names.count(n) > 1})
        _check(
            not repeated,
            f"{path}.routes",
            f"route names must be unique within a CascadePolicy; repeated: {', '.join(repeated)}",
        )
        # Beyond the CRD (CEL cannot afford the comparison): a model name taken over by two
        # routes would go to whichever the router happens to check first.
        claims: dict[str, str] = {}
        for route in self.routes:
            for model in (route.match.models or ()) if route.match else ():
                _check(
                    claims.setdefault(model, route.name) == route.name,
                    f"{path}.routes",
                    f"a model name may be claimed by one route only: {model!r} is in "
                    f"match.models of routes {claims[model]} and {route.name}",
                )
        if self.default_route is not None:
            _check(
                self.default_route in names,
                path,
                "defaultRoute must name one of the routes in spec.routes",
            )
        if self.evaluation is not None:
            _check(
                all(r.name in names for r in self.evaluation.routes),
                path,
                "evaluation.routes must name routes in spec.routes",
            )
            shadow = self.evaluation.shadow
            _check(
                shadow is None or all(r in names for r in shadow.exclude_routes or ()),
                path,
                "evaluation.shadow.excludeRoutes must name routes in spec.routes",
            )
        check_budgets(self.budgets, names, path)

    def tier_names(self) -> list[str]:
        """Every tier the policy uses, in first-use order (steps, then fallback)."""
        seen = [step.tier for route in self.routes for step in route.steps]
        if self.fallback:
            seen.append(self.fallback.tier)
        return list(dict.fromkeys(seen))
