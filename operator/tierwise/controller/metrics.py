"""The operator's own Prometheus metrics (served by ``tierwise operator --metrics-port``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "tierwise_operator_reconciles_total", "Reconciles by kind and result.", ["kind", "result"]
)
RECONCILE_ERRORS = Counter(
    "tierwise_operator_reconcile_errors_total", "Reconciles that raised, by kind.", ["kind"]
)
RECONCILE_SECONDS = Histogram(
    "tierwise_operator_reconcile_duration_seconds",
    "Time spent in one reconcile, by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONFIG_WRITES = Counter(
    "tierwise_operator_config_writes_total", "Router-config ConfigMaps created or replaced."
)
PRICE_CATALOG_INVALID = Gauge(
    "tierwise_operator_price_catalog_invalid",
    "1 while the price-catalog ConfigMap does not parse (the last good catalog is used).",
)
# The eval gate's verdicts (Promoted, Rejected, Inconclusive): the Helm chart's dashboard and
# its TierwiseEvalRejected alert read this counter.
EVAL_OUTCOMES = Counter(
    "tierwise_operator_eval_outcomes_total",
    "Eval verdicts on candidate router configs, by policy and outcome.",
    ["namespace", "policy", "outcome"],
)


@contextmanager
def timed(kind: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    except Exception:
        RECONCILE_ERRORS.labels(kind).inc()
        RECONCILES.labels(kind, "error").inc()
        raise
    finally:
        RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)
