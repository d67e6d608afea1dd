"""The shadow stage's pure decisions: counting across router restarts, and the verdict."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from tierwise.api.models import Evaluation
from tierwise.api.parsing import parse
from tierwise.api.shadow import Shadow
from tierwise.controller.shadow import changed_routes, shadow_document
from tierwise.controller.shadow_state import (
    SHADOWING,
    Source,
    Totals,
    judge,
    known_sources,
    merge,
    read_sources,
    shadow_status,
    totals,
)
from tierwise.evals.gate import INCONCLUSIVE, PROMOTED, REJECTED
from tierwise.routerconfig import content_hash

T0 = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)
SPEC = Shadow(min_agreement=Decimal("0.9"), spend_limit_per_hour_usd=Decimal(1), min_samples=50)


def test_a_repeated_or_stale_read_never_counts_twice() -> None:
    first = [Source("pod-a", "s1", 10, 9, 0)]
    again = merge(first, [Source("pod-a", "s1", 10, 9, 0)])
    stale = merge(again, [Source("pod-a", "s1", 7, 6, 0)])  # a read from before the last one
    assert totals(stale) == Totals(10, 9, 0, Decimal(0))


def test_a_restarted_router_adds_to_its_previous_run() -> None:
    known = [Source("pod-a", "s1", 40, 38, 1)]
    # The router restarted: a new start id, counters from zero; the old run is not read again.
    after = merge(known, [Source("pod-a", "s2", 5, 5, 0)])
    assert totals(after) == Totals(45, 43, 1, Decimal(0))
    assert {s.start for s in after} == {"s1", "s2"}


def test_sources_survive_the_status_round_trip() -> None:
    sources = [Source("pod-a", "s1", 3, 2, 1, Decimal("0.000123")), Source("pod-b", "s9", 1, 1, 0)]
    status = shadow_status("sha256:c", "2026-12-06T04:00:00Z", sources, totals(sources))
    assert known_sources(status, "sha256:c") == sources
    assert known_sources(status, "sha256:other") == []  # another candidate starts afresh
    assert status["samples"] == 4 and status["agreement"].startswith("0.750 [")


def test_promoted_only_when_the_lower_bound_reaches_the_threshold_with_enough_samples() -> None:
    assert judge(SPEC, Totals(49, 49, 0), T0, T0).outcome == SHADOWING  # too few
    verdict = judge(SPEC, Totals(60, 60, 0), T0, T0)
    assert verdict.outcome == PROMOTED, verdict.reasons
    # 0.93 observed, but the lower bound is below 0.9: go on, never promote on the mean.
    assert judge(SPEC, Totals(60, 56, 0), T0, T0).outcome == SHADOWING


def test_rejected_when_the_upper_bound_is_below_the_threshold() -> None:
    verdict = judge(SPEC, Totals(60, 40, 0), T0, T0)
    assert verdict.outcome == REJECTED
    assert verdict.reasons == ("agreement 0.667 [0.541, 0.773]: below minAgreement 0.900",)


def test_undecided_at_the_deadline_is_inconclusive_never_promoted() -> None:
    late = T0 + timedelta(seconds=SPEC.max_duration_seconds)
    verdict = judge(SPEC, Totals(60, 56, 0), T0, late)
    assert verdict.outcome == INCONCLUSIVE
    assert "maxDurationSeconds" in verdict.reasons[0]


def test_all_failing_shadow_calls_end_inconclusive() -> None:
    failing = Totals(80, 0, 80)
    assert judge(SPEC, failing, T0, T0).outcome == SHADOWING  # not a rejection of the config
    late = T0 + timedelta(days=2)
    verdict = judge(SPEC, failing, T0, late)
    assert verdict.outcome == INCONCLUSIVE
    assert "candidate: 80 of 80 shadow calls failed" in verdict.reasons[1]


def test_counters_are_read_for_the_candidate_and_the_router_run() -> None:
    samples = [
        ("tierwise_shadow_info", {"candidate": "sha256:c", "start": "s1", "policy": "p"}, 1.0),
        ("tierwise_shadow_samples_total", {"candidate": "sha256:c", "result": "agree"}, 7.0),
        ("tierwise_shadow_samples_total", {"candidate": "sha256:c", "result": "disagree"}, 2.0),
        ("tierwise_shadow_samples_total", {"candidate": "sha256:c", "result": "failed"}, 1.0),
        ("tierwise_shadow_samples_total", {"candidate": "sha256:old", "result": "agree"}, 99.0),
        ("tierwise_shadow_cost_usd_total", {"candidate": "sha256:c", "route": "t"}, 0.0125),
    ]
    (source,) = read_sources("uid-1", samples, "sha256:c")
    assert source == Source("uid-1", "s1", 10, 7, 1, Decimal("0.0125"))
    assert read_sources("uid-1", samples, "sha256:none") == []


# --- what is shadowed: the changed routes, less those that opted out --------------------------


def _documents(threshold: str) -> dict:
    """The example policy rendered with the triage route's confidence threshold."""
    golden = Path(__file__).resolve().parents[1] / "golden" / "render"
    doc = json.loads((golden / "example-support-triage.json").read_text())
    doc = copy.deepcopy(doc)
    for signal in doc["routes"][0]["steps"][0]["escalateWhen"]:
        if signal.get("signal") == "jsonFieldBelow":
            signal["threshold"] = threshold
    doc.pop("hash", None)
    doc["hash"] = content_hash(doc)
    return doc


def _evaluation(**shadow: object) -> Evaluation:
    return parse(
        Evaluation,
        {
            "dataset": {"configMapRef": {"name": "ds"}},
            "grader": {"type": "jsonField", "field": "result.label"},
            "routes": [{"name": "triage"}],
            "gate": {"minQuality": 0.9},
            "shadow": {"minAgreement": 0.9, "spendLimitPerHourUSD": 1, **shadow},
        },
        "spec.evaluation",
    )


def test_only_changed_routes_are_shadowed_with_the_routes_grader_field() -> None:

    live, candidate = _documents("0.9"), _documents("0.85")
    assert changed_routes(candidate, live) == ["triage"]
    assert changed_routes(live, live) == []
    doc = json.loads(shadow_document(_evaluation(), candidate, live) or "{}")
    assert doc["routes"] == [
        {"name": "triage", "comparison": "graderField", "field": "result.label"}
    ]
    assert doc["config"]["hash"] == candidate["hash"]


def test_a_route_that_opted_out_is_never_shadowed() -> None:
    live, candidate = _documents("0.9"), _documents("0.85")
    assert shadow_document(_evaluation(excludeRoutes=["triage"]), candidate, live) is None
