"""Prometheus metrics of one router, in its own ``CollectorRegistry``.

Labels are low-cardinality by construction: policy, route and tier come from the config
(a handful each), reason/outcome/type/result from fixed sets. Dollars are exact
``Decimal`` everywhere else; they become floats only here, at the very edge.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from tierwise.pricing import Usage

PREFIX = "tierwise_router"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30)

TOKEN_TYPES = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")


class RouterMetrics:
    """All of one router's metrics; methods take plain values so callers stay small."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Client requests answered, by final tier and outcome "
            "(success, cache_hit, rejected, client_error, upstream_error, cancelled, "
            "internal_error).",
            ["policy", "route", "tier", "endpoint", "outcome"],
            registry=r,
        )
        self.tokens = Counter(
            f"{PREFIX}_tokens",
            "Tokens billed by upstream calls, by type.",
            ["policy", "route", "tier", "type"],
            registry=r,
        )
        self.cost = Counter(
            f"{PREFIX}_cost_usd",
            "Dollars spent on upstream calls (all cascade steps).",
            ["policy", "route", "tier"],
            registry=r,
        )
        self.counterfactual_cost = Counter(
            f"{PREFIX}_counterfactual_cost_usd",
            "Dollars the final answers would have cost on the route's counterfactual tier "
            "(response-cache hits included).",
            ["policy", "route", "tier"],
            registry=r,
        )
        self.escalations = Counter(
            f"{PREFIX}_escalations",
            "Cascade escalations, by the tier escalated from and reason.",
            ["policy", "route", "tier", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from request to the last byte answered.",
            ["policy", "route", "tier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "Streaming requests: time from request to the first content event sent.",
            ["policy", "route", "tier"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            f"{PREFIX}_upstream_errors",
            "Failed upstream attempts, by type (overloaded, "
            "rate_limited, server_error, timeout, connection, client_error, stream).",
            ["policy", "tier", "type"],
            registry=r,
        )
        self.retries = Counter(
            f"{PREFIX}_upstream_retries",
            "Upstream attempts retried after a failure.",
            ["policy", "tier"],
            registry=r,
        )
        self.queue_wait = Histogram(
            f"{PREFIX}_queue_wait_seconds",
            "Time an upstream call waited for one of its tier's maxConcurrency slots: when it "
            "grows, the cap, not the model, is the bottleneck.",
            ["policy", "tier"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.hedges = Counter(
            f"{PREFIX}_hedges",
            "Hedged steps (hedgeAfterSeconds passed, the next step started in parallel), by the "
            "hedged step's tier and whose answer was taken (primary, hedge, neither).",
            ["policy", "route", "tier", "result"],
            registry=r,
        )
        self.hedge_cancelled_cost = Counter(
            f"{PREFIX}_hedge_cancelled_cost_usd",
            "Estimated dollars of hedged calls cancelled because the other answered first "
            "(also in cost_usd_total).",
            ["policy", "route", "tier"],
            registry=r,
        )
        self.input_budget = Counter(
            f"{PREFIX}_input_budget",
            "Requests of routes with an input budget, by result (within, trimmed, rejected) "
            "and how the prompt was counted (count_tokens, estimate).",
            ["policy", "route", "result", "counted"],
            registry=r,
        )
        self.input_trimmed_tokens = Counter(
            f"{PREFIX}_input_trimmed_tokens",
            "Prompt tokens removed by input budgets (dropped turns, cut tool results).",
            ["policy", "route"],
            registry=r,
        )
        self.input_trim_saved = Counter(
            f"{PREFIX}_input_trim_saved_usd",
            "Dollars input budgets saved: trimmed tokens at the first step's input price.",
            ["policy", "route"],
            registry=r,
        )
        self.fallbacks = Counter(
            f"{PREFIX}_fallbacks",
            "Calls sent to the fallback tier after a step kept failing.",
            ["policy", "route", "tier"],
            registry=r,
        )
        self.response_cache = Counter(
            f"{PREFIX}_response_cache",
            "Response-cache lookups by result (hit, miss, bypass, error).",
            ["policy", "route", "result"],
            registry=r,
        )
        self.in_flight = Gauge(
            f"{PREFIX}_in_flight_requests", "Client requests being served.", registry=r
        )
        self.config_info = Gauge(
            f"{PREFIX}_config_info",
            "The config in use (value 1), by its hash.",
            ["policy", "hash", "schema_version"],
            registry=r,
        )
        self.reloads = Counter(
            f"{PREFIX}_config_reloads",
            "Config reload attempts by result (success, failure).",
            ["result"],
            registry=r,
        )
        self.last_reload_success = Gauge(
            f"{PREFIX}_config_last_reload_successful",
            "1 if the last config (re)load succeeded, 0 if the last good config is kept.",
            registry=r,
        )
        self.config_rejections = Counter(
            f"{PREFIX}_config_rejections",
            "Config files kept out by reason (invalid, missing_key_env); the last good "
            "config stays in use.",
            ["reason"],
            registry=r,
        )
        self.last_reload_timestamp = Gauge(
            f"{PREFIX}_config_last_reload_timestamp_seconds",
            "Unix time of the last config (re)load attempt.",
            registry=r,
        )
        self._config_labels: tuple[str, str, str] | None = None
        # Labelled children by (metric, labels): `labels()` validates and locks on every call,
        # a dict lookup does not. Bounded: label values come from the config and fixed sets.
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    # Per-request recording.

    def record_usage(self, policy: str, route: str, tier: str, usage: Usage, cost: Decimal) -> None:
        values = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_input_tokens,
            usage.cache_write_5m_input_tokens,
            usage.cache_write_1h_input_tokens,
        )
        for kind, value in zip(TOKEN_TYPES, values, strict=True):
            if value:
                self.child(self.tokens, policy, route, tier, kind).inc(value)
        self.child(self.cost, policy, route, tier).inc(float(cost))

    def record_counterfactual(self, policy: str, route: str, tier: str, cost: Decimal) -> None:
        self.child(self.counterfactual_cost, policy, route, tier).inc(float(cost))

    def record_request(
        self, policy: str, route: str, tier: str, endpoint: str, outcome: str, seconds: float
    ) -> None:
        self.child(self.requests, policy, route, tier, endpoint, outcome).inc()
        if endpoint == "messages" and outcome in ("success", "cache_hit"):
            self.child(self.latency, policy, route, tier).observe(seconds)

    # Config.

    def config_loaded(self, policy: str, config_hash: str, schema_version: str) -> None:
        labels = (policy, config_hash, schema_version)
        if self._config_labels and self._config_labels != labels:
            self.config_info.remove(*self._config_labels)
        self.config_info.labels(*labels).set(1)
        self._config_labels = labels

    def reload_result(self, success: bool, timestamp: float, reason: str = "invalid") -> None:
        self.reloads.labels("success" if success else "failure").inc()
        if not success:
            self.config_rejections.labels(reason).inc()
        self.last_reload_success.set(1 if success else 0)
        self.last_reload_timestamp.set(timestamp)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
