"""An eval's results as text (the log, the terminal), full JSON, and a small summary.

The summary is what the eval Job writes to its termination message: the kubelet keeps at
most 4 KiB of it, so it holds the decision and per-route figures only, trimmed to fit.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from tierwise.evals.runner import ConfigRun, EvalReport, RouteReport
from tierwise.evals.stats import Interval, paired_difference

SUMMARY_SCHEMA = "tierwise.dev/eval-summary/v1"
TERMINATION_MESSAGE_LIMIT = 4096


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _usd(value: Decimal | None) -> str:
    return "-" if value is None else f"${value:.6f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _interval(value: Interval | None) -> str:
    return "-" if value is None else value.format()


def _interval_list(value: Interval | None) -> list[float] | None:
    return (
        None
        if value is None
        else [round(value.estimate, 4), round(value.low, 4), round(value.high, 4)]
    )


def route_figures(route: RouteReport, batch: bool = False) -> dict[str, Any]:
    """The figures of one route, JSON-ready (shared by the summary and the full JSON).

    Quality, baseline quality, drop, cost, saving, escalation and latency are all over the
    same item set (``counted``): the distinct items the baseline graded, with the candidate's
    failures counted wrong and their spend counted."""
    cand = route.candidate_set
    base = route.baseline_set
    measured = route.measured()
    drop = paired_difference(route.paired) if route.paired is not None else None
    return {
        "decision": route.decision.outcome,
        "lines": route.lines,
        "items": measured.items,
        "duplicates": len(route.duplicates),
        "counted": measured.counted,
        "errors": measured.failed,
        "baselineErrors": measured.baseline_failed if route.baseline is not None else None,
        # Over every item the candidate ran (not only the counted set): why calls failed.
        "failures": failures(route.candidate),
        "quality": _interval_list(measured.quality),
        "baselineQuality": _interval_list(base.quality) if base else None,
        "qualityDrop": _interval_list(drop),
        "costPerItem": _str(cand.cost_per_item),
        "baselineCostPerItem": _str(base.cost_per_item) if base else None,
        "saving": None if route.saving is None else round(route.saving, 4),
        "escalationRate": _round(cand.escalation_rate),
        # Over batches an item's latency is its batch's: not an interactive figure.
        "p50Seconds": None if batch else _round(cand.latency(0.5)),
        "p95Seconds": None if batch else _round(cand.latency(0.95)),
        "batch": batch,
    }


def failures(run: ConfigRun, limit: int = 3) -> list[dict[str, Any]]:
    """The most common errors of a run, by the tier that answered with them: the operator
    says why an eval in which calls failed could not decide."""
    counts = Counter((r.outcome.tier, r.outcome.error) for r in run.results if r.outcome.error)
    return [
        {"tier": tier, "error": error[:200], "count": count}
        for (tier, error), count in counts.most_common(limit)
    ]


def _str(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:.6f}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def summary(report: EvalReport, limit: int = TERMINATION_MESSAGE_LIMIT) -> dict[str, Any]:
    """The decision and per-route figures, trimmed until its JSON fits in ``limit`` bytes."""
    doc: dict[str, Any] = {
        "schemaVersion": SUMMARY_SCHEMA,
        "policy": report.policy,
        "candidateHash": report.candidate_hash,
        "baselineHash": report.baseline_hash,
        "baseline": report.baseline_kind,
        "decision": report.decision.outcome,
        "badInput": report.decision.bad_input,
        "reasons": list(report.decision.reasons),
        "decidingRoutes": list(report.deciding),
        "changes": dict(report.changes),
        "seconds": round(report.seconds, 2),
        "routes": {r.name: route_figures(r, report.batch) for r in _deciding_first(report)},
    }
    return fit(doc, limit)


def _deciding_first(report: EvalReport) -> list[RouteReport]:
    """Routes with the deciding ones first, so trimming the summary keeps them."""
    return sorted(report.routes, key=lambda r: r.name not in report.deciding)


def fit(doc: dict[str, Any], limit: int = TERMINATION_MESSAGE_LIMIT) -> dict[str, Any]:
    """Drop detail (reasons first, then routes, then unchanged routes' entries) until the
    JSON is at most ``limit`` bytes; the deciding route's figures come first and stay."""

    def size() -> int:
        return len(dump_summary(doc).encode())

    while size() > limit and doc.get("reasons"):
        reasons = doc["reasons"]
        if len(reasons) > 1:
            doc["reasons"] = reasons[:-1]
        elif len(reasons[0]) > 120:
            doc["reasons"] = [reasons[0][:117] + "..."]
        else:
            break
    while size() > limit and len(doc.get("routes") or {}) > 1:
        routes = dict(doc["routes"])
        routes.popitem()
        doc["routes"] = routes
        doc["truncated"] = True
    if size() > limit and doc.get("changes"):  # the changed routes matter, not the others
        doc["changes"] = {k: v for k, v in doc["changes"].items() if v != "unchanged"}
        doc["truncated"] = True
    return doc


def dump_summary(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def full_json(report: EvalReport) -> dict[str, Any]:
    """Everything, per route and item, for ``--json`` and CI artifacts."""
    routes = []
    for route in report.routes:
        routes.append(
            {
                "name": route.name,
                "grader": route.grader.type,
                **route_figures(route, report.batch),
                "reasons": list(route.decision.reasons),
                "countedIds": list(route.counted),
                "duplicateOf": {dup.id: first.id for dup, first in route.duplicates},
                "confusion": [
                    {"expected": e, "predicted": p, "count": n}
                    for (e, p), n in sorted(route.confusion().items())
                ],
                "results": [
                    _item_json(r, base)
                    for r, base in zip(
                        route.candidate.results,
                        route.baseline.results
                        if route.baseline
                        else [None] * len(route.candidate.results),
                        strict=True,
                    )
                ],
            }
        )
    return {
        "schemaVersion": "tierwise.dev/eval-report/v1",
        "policy": report.policy,
        "candidateHash": report.candidate_hash,
        "baselineHash": report.baseline_hash,
        "baseline": report.baseline_kind,
        "decision": report.decision.outcome,
        "badInput": report.decision.bad_input,
        "reasons": list(report.decision.reasons),
        "decidingRoutes": list(report.deciding),
        "changes": dict(report.changes),
        "seconds": round(report.seconds, 3),
        "judgeCost": _str(report.judge_cost),
        "routes": routes,
    }


def _item_json(result: Any, baseline: Any) -> dict[str, Any]:
    def side(r: Any) -> dict[str, Any] | None:
        if r is None:
            return None
        return {
            "tier": r.outcome.tier,
            "correct": r.verdict.correct if r.verdict else None,
            "predicted": r.verdict.predicted if r.verdict else None,
            "cost": _str(r.outcome.cost),
            "escalations": r.outcome.escalations,
            "seconds": round(r.outcome.seconds, 4),
            "error": r.outcome.error,
        }

    return {
        "id": result.item.id,
        "line": result.item.line,
        "candidate": side(result),
        "baseline": side(baseline),
    }


def text_report(report: EvalReport) -> str:
    baseline = {
        "promoted": "the last promoted config",
        "strongest": "each route's strongest tier",
        "none": "none",
    }.get(report.baseline_kind, report.baseline_kind)
    lines = [
        f"policy {report.policy}: candidate {report.candidate_hash[:19]}, baseline {baseline}",
    ]
    for route in report.routes:
        lines += ["", *_route_text(route, report.batch)]
    if report.changes:
        lines += ["", "routes against the baseline:"]
        lines += [f"  {name:<20}{change}" for name, change in report.changes.items()]
    outcome = report.decision.outcome + (" (bad input)" if report.decision.bad_input else "")
    lines += ["", f"decision: {outcome}"]
    if report.deciding and report.decision.outcome != "Promoted":
        lines.append(f"decided by: {', '.join(report.deciding)}")
    lines += [f"  - {reason}" for reason in report.decision.reasons]
    if report.judge_cost:
        lines.append(f"judge cost: {_usd(report.judge_cost)}")
    lines.append(f"took {report.seconds:.1f}s")
    return "\n".join(lines) + "\n"


def _route_text(route: RouteReport, batch: bool = False) -> list[str]:
    cand, base = route.candidate_set, route.baseline_set
    m = route.measured()
    rows = [
        ("", "candidate", "baseline"),
        ("quality", _interval(m.quality), _interval(base.quality) if base else "-"),
        (
            "failed",
            f"{m.failed}/{m.items}",
            f"{m.baseline_failed}/{m.items}" if route.baseline else "-",
        ),
        ("cost per item", _usd(cand.cost_per_item), _usd(base.cost_per_item) if base else "-"),
        (
            "escalation rate",
            _pct(cand.escalation_rate),
            _pct(base.escalation_rate) if base else "-",
        ),
        ("latency p50", _ms(cand.latency(0.5)), _ms(base.latency(0.5)) if base else "-"),
        ("latency p95", _ms(cand.latency(0.95)), _ms(base.latency(0.95)) if base else "-"),
    ]
    if batch:
        rows[-2:] = [("latency", "batch", "batch")]
    width = max(len(r[1]) for r in rows) + 3
    via = ", Message Batches at batch prices" if batch else ""
    lines = [f"route {route.name} ({route.grader.type} grader{via}): {route.decision.outcome}"]
    lines.append(f"  {_item_set(route)}")
    lines += [f"  {a:<16}{b:<{width}}{c}" for a, b, c in rows]
    lines.append(f"  {'saving':<16}{_pct(route.saving)} of the baseline's cost per item")
    for label, run in (("candidate", route.candidate), ("baseline", route.baseline)):
        if run is not None:
            for error, count in run.errors().most_common(3):
                lines.append(f"  {label} errors: {count} x {error}")
            for note, count in run.ungradable().most_common(3):
                lines.append(f"  {label} not gradable: {count} x {note}")
    lines += _confusion(route)
    return lines


def _item_set(route: RouteReport) -> str:
    """The one item set every figure of the route is over, and what left it."""
    m = route.measured()
    parts = [f"figures over {m.counted} items"]
    if route.duplicates:
        dup, first = route.duplicates[0]
        parts.append(
            f"{route.lines} in the dataset, {m.items} distinct: {len(route.duplicates)} "
            f"duplicates or near-duplicates not counted (e.g. line {dup.line} repeats line "
            f"{first.line})"
        )
    left = m.items - m.counted
    if left:
        who = "the baseline did not grade or nobody could grade" if route.baseline else "ungradable"
        parts.append(f"{left} left out ({who})")
    failed = sum(1 for r in route.candidate_set.results if r.outcome.error is not None)
    if failed:
        parts.append(f"{failed} candidate failures counted wrong")
    return "; ".join(parts)


def _confusion(route: RouteReport) -> list[str]:
    counts = route.confusion()
    if not counts:
        return []
    expected = sorted({e for e, _ in counts})
    predicted = sorted({p for _, p in counts}, key=lambda p: (p not in expected, p))
    width = max(12, *(len(x) + 2 for x in expected + predicted))
    lines = ["  confusion (candidate; rows: label, columns: answer)"]
    lines.append("  " + " " * width + "".join(f"{p:>{width}}" for p in predicted))
    for e in expected:
        lines.append(
            f"  {e:<{width}}" + "".join(f"{counts.get((e, p), 0):>{width}}" for p in predicted)
        )
    return lines
