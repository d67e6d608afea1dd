"""`tierwise report`: the cost report of a running router, read from its ``/metrics``.

"Measure first" as a command: point it at a router's metrics port (the sidecar's, through
``kubectl port-forward``, or a local one) and it prints what the traffic cost, what the same
answers would have cost on each route's counterfactual (strongest) tier, the saving, how often
cascades escalated, how much of the prompt the prompt cache served, and latency. Counters
count since the router started, so the report covers its whole life (or the difference of two
reports, taken apart).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

PREFIX = "tierwise_router_"
BUDGET_PREFIX = "tierwise_budget_"
BUDGET_GAUGES = frozenset(
    {"spend_usd", "limit_usd", "reserved_usd", "action", "shared", "window_reset_timestamp_seconds"}
)
BUDGET_ACTIONS = ("none", "alert", "degrade", "reject")
Labels = Mapping[str, str]
Sample = tuple[str, dict[str, str], float]


@dataclass
class Report:
    requests: int = 0
    cache_hits: int = 0
    answered_by: Counter[str] = field(default_factory=Counter)
    escalations: Counter[str] = field(default_factory=Counter)  # by reason
    escalated_from: Counter[str] = field(default_factory=Counter)  # by tier
    errors: Counter[str] = field(default_factory=Counter)  # by outcome
    tokens: Counter[str] = field(default_factory=Counter)  # by type
    cost: float = 0.0
    counterfactual: float = 0.0
    p50: float | None = None
    p95: float | None = None
    queue_wait_p95: dict[str, float] = field(default_factory=dict)
    # Spend budgets by name: the ``tierwise_budget_*`` gauges (spend, limit, reserved, ...).
    budgets: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))

    @property
    def upstream_requests(self) -> int:
        return sum(self.answered_by.values())

    @property
    def saving(self) -> float:
        return self.counterfactual - self.cost

    def to_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "responseCacheHits": self.cache_hits,
            "answeredBy": dict(self.answered_by),
            "escalations": dict(self.escalations),
            "errors": dict(self.errors),
            "tokens": dict(self.tokens),
            "costUsd": round(self.cost, 6),
            "counterfactualCostUsd": round(self.counterfactual, 6),
            "savingUsd": round(self.saving, 6),
            "latencySeconds": {"p50": self.p50, "p95": self.p95},
            "queueWaitP95Seconds": self.queue_wait_p95,
            "budgets": {name: dict(figures) for name, figures in self.budgets.items()},
        }


def parse_samples(text: str) -> list[Sample]:
    samples = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.append((sample.name, dict(sample.labels), sample.value))
    return samples


def summarize(samples: Iterable[Sample], route: str | None = None) -> Report:
    """The report of the samples of one router (optionally of one route)."""
    report = Report()
    latency: dict[float, float] = defaultdict(float)
    queue: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for name, labels, value in samples:
        if name.startswith(BUDGET_PREFIX) and name[len(BUDGET_PREFIX) :] in BUDGET_GAUGES:
            report.budgets[labels["budget"]][name[len(BUDGET_PREFIX) :]] = value
            continue
        if not name.startswith(PREFIX):
            continue
        if route is not None and "route" in labels and labels["route"] != route:
            continue
        metric = name[len(PREFIX) :]
        if metric == "requests_total" and labels.get("endpoint") == "messages":
            _count_request(report, labels, int(value))
        elif metric == "escalations_total":
            report.escalations[labels["reason"]] += int(value)
            report.escalated_from[labels["tier"]] += int(value)
        elif metric == "tokens_total":
            report.tokens[labels["type"]] += int(value)
        elif metric == "cost_usd_total":
            report.cost += value
        elif metric == "counterfactual_cost_usd_total":
            report.counterfactual += value
        elif metric == "request_duration_seconds_bucket":
            latency[_le(labels)] += value
        elif metric == "queue_wait_seconds_bucket":
            queue[labels["tier"]][_le(labels)] += value
    report.p50 = histogram_quantile(0.5, latency)
    report.p95 = histogram_quantile(0.95, latency)
    for tier, buckets in sorted(queue.items()):
        found = histogram_quantile(0.95, buckets)
        if found is not None:
            report.queue_wait_p95[tier] = found
    return report


def _count_request(report: Report, labels: Labels, count: int) -> None:
    outcome = labels.get("outcome", "")
    report.requests += count
    if outcome == "cache_hit":
        report.cache_hits += count
    elif outcome == "success":
        report.answered_by[labels.get("tier", "?")] += count
    else:
        report.errors[outcome] += count


def _le(labels: Labels) -> float:
    return math.inf if labels["le"] in ("+Inf", "inf") else float(labels["le"])


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative buckets: linear within a bucket."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # the highest finite bound, as Prometheus does
            width = count - below
            return lower + (bound - lower) * ((rank - below) / width if width else 1.0)
        lower, below = bound, count
    return lower


def format_report(report: Report) -> list[str]:
    upstream = report.upstream_requests
    lines = [
        f"requests            {report.requests:,} ({report.cache_hits:,} served from the response cache)",
        "answered by         "
        + (", ".join(f"{t} {n:,}" for t, n in report.answered_by.most_common()) or "none"),
    ]
    escalated = sum(report.escalated_from.values())
    if upstream:
        reasons = ", ".join(f"{r} {n:,}" for r, n in report.escalations.most_common())
        lines.append(
            f"escalation rate     {escalated / upstream:.1%} of upstream requests escalated"
            + (f" ({reasons})" if reasons else "")
        )
    if report.errors:
        lines.append(
            "errors              " + ", ".join(f"{o} {n:,}" for o, n in report.errors.items())
        )
    prompt = sum(
        report.tokens[t] for t in ("input", "cache_read", "cache_write_5m", "cache_write_1h")
    )
    if prompt:
        written = report.tokens["cache_write_5m"] + report.tokens["cache_write_1h"]
        lines.append(
            f"prompt cache        {report.tokens['cache_read'] / prompt:.1%} of prompt tokens "
            f"read from cache ({written:,} written)"
        )
    lines.append(f"output tokens       {report.tokens['output']:,} (thinking included)")
    lines.append(f"cost (cascade)      ${report.cost:.4f}")
    lines.append(f"cost (all-strong)   ${report.counterfactual:.4f} on each route's strongest tier")
    if report.counterfactual > 0:
        lines.append(
            f"saving              ${report.saving:.4f} ({report.saving / report.counterfactual:.1%} cut)"
        )
    else:
        lines.append("saving              n/a (no counterfactual cost recorded yet)")
    if report.p50 is not None and report.p95 is not None:
        lines.append(
            f"latency             p50 {report.p50 * 1000:.0f} ms, p95 {report.p95 * 1000:.0f} ms "
            "(from histogram buckets)"
        )
    for tier, seconds in report.queue_wait_p95.items():
        lines.append(
            f"queue wait          {tier}: p95 {seconds * 1000:.0f} ms for a concurrency slot"
        )
    lines.extend(budget_line(name, figures) for name, figures in sorted(report.budgets.items()))
    return lines


def budget_line(name: str, figures: Mapping[str, float]) -> str:
    """One spend budget as this router last saw it (docs/budgets.md)."""
    limit = figures.get("limit_usd", 0.0)
    spend = figures.get("spend_usd", 0.0)
    share = f" ({spend / limit:.1%})" if limit else ""
    action = BUDGET_ACTIONS[int(figures.get("action", 0))]
    reset = figures.get("window_reset_timestamp_seconds")
    when = datetime.fromtimestamp(reset, UTC).strftime(" resets %Y-%m-%dT%H:%MZ,") if reset else ""
    where = "shared (Redis)" if figures.get("shared") == 1 else "local share (this router only)"
    return (
        f"budget {name:<12} ${spend:.4f} of ${limit:.2f}{share}, reserved "
        f"${figures.get('reserved_usd', 0.0):.4f}, action {action},{when} {where}"
    )


# --- the command --------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Print the cost report of a running router from its Prometheus /metrics: requests, "
        "tiers that answered, escalation rate, prompt and response cache, cost against the "
        "same answers on each route's strongest tier, the saving, latency and queue wait. "
        "Counters run since the router started."
    )
    parser.epilog = (
        "examples:\n"
        "  tierwise report --metrics http://127.0.0.1:9090\n"
        "  kubectl port-forward pod/my-app 9787 & tierwise report --metrics localhost:9787 --route triage"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--metrics",
        required=True,
        metavar="URL",
        help="the router's metrics address (/metrics is appended when the URL has no path)",
    )
    parser.add_argument("--route", help="report one route only")
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")


def metrics_url(url: str) -> str:
    if "://" not in url:
        url = "http://" + url
    scheme, _, rest = url.partition("://")
    return url if "/" in rest.strip("/") else f"{scheme}://{rest.rstrip('/')}/metrics"


def run(args: argparse.Namespace) -> int:
    url = metrics_url(args.metrics)
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            text = response.read().decode("utf-8")
        samples = parse_samples(text)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"error: cannot read router metrics from {url}: {exc}", file=sys.stderr)
        return 1
    if not any(name.startswith(PREFIX) for name, _, _ in samples):
        print(f"error: {url} serves no tierwise_router_* metrics: is it a router?", file=sys.stderr)
        return 1
    report = summarize(samples, args.route)
    if args.output == "json":
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        print("\n".join(format_report(report)))
    return 0
