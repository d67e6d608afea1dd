"""The gate's decision table."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tierwise.evals.gate import (
    INCONCLUSIVE,
    PROMOTED,
    REJECTED,
    Decision,
    GateSpec,
    Measured,
    combine,
    decide,
)
from tierwise.evals.stats import PairedCounts


def measured(
    correct: int, graded: int = 200, items: int | None = None, cost: str = "0.001", p95: float = 1.0
) -> Measured:
    items = items or graded
    return Measured(items, graded, correct, Decimal(cost), p95, failed=items - graded)


GATE = GateSpec(min_quality=0.85, min_items=30, max_error_rate=0.05)


@pytest.mark.parametrize(
    ("case", "gate", "candidate", "paired", "outcome", "says"),
    [
        ("clear pass", GATE, measured(190), None, PROMOTED, "lower bound meets"),
        ("clear fail", GATE, measured(150), None, REJECTED, "below minQuality"),
        # 176/200 = 0.88 mean, interval [0.828, 0.918] straddles 0.85
        ("straddles", GATE, measured(176), None, INCONCLUSIVE, "straddles minQuality"),
        ("too few graded", GATE, measured(29, graded=29), None, INCONCLUSIVE, "only 29 graded"),
        (
            "nothing graded",
            GATE,
            measured(0, graded=0, items=200),
            None,
            INCONCLUSIVE,
            "maxErrorRate",
        ),
        (
            "too many errors",
            GATE,
            measured(180, graded=180, items=200),
            None,
            INCONCLUSIVE,
            "maxErrorRate",
        ),
        (
            "drop within",
            GateSpec(0.8, max_quality_drop=0.05),
            measured(186),
            PairedCounts(180, 2, 2, 16),
            PROMOTED,
            "within maxQualityDrop",
        ),
        (
            "drop above",
            GateSpec(0.5, max_quality_drop=0.05),
            measured(150),
            PairedCounts(140, 45, 10, 5),
            REJECTED,
            "above maxQualityDrop",
        ),
        (
            "drop straddles",
            GateSpec(0.5, max_quality_drop=0.05),
            measured(176),
            PairedCounts(166, 20, 10, 4),
            INCONCLUSIVE,
            "straddles maxQualityDrop",
        ),
        (
            "drop without baseline",
            GateSpec(0.5, max_quality_drop=0.05),
            measured(190),
            None,
            INCONCLUSIVE,
            "no baseline",
        ),
        (
            "cost above",
            GateSpec(0.5, max_cost_per_item=Decimal("0.0005")),
            measured(190, cost="0.001"),
            None,
            REJECTED,
            "above maxCostPerItem",
        ),
        (
            "latency above",
            GateSpec(0.5, max_p95_latency_seconds=0.5),
            measured(190, p95=0.8),
            None,
            REJECTED,
            "above maxP95LatencySeconds",
        ),
        (
            "reject wins over undecided",
            GateSpec(0.85, max_cost_per_item=Decimal("0.0005")),
            measured(176, cost="0.001"),
            None,
            REJECTED,
            "straddles minQuality",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_decision_table(case, gate, candidate, paired, outcome, says):
    decision = decide(gate, candidate, paired)
    assert decision.outcome == outcome, decision.reasons
    assert any(says in r for r in decision.reasons), decision.reasons


def test_inconclusive_never_promotes():
    decision = decide(GATE, measured(0, graded=0, items=0))
    assert decision.outcome == INCONCLUSIVE and not decision.promoted


def test_combining_routes():
    ok, bad, unsure = (
        Decision(PROMOTED, ("a ok",)),
        Decision(REJECTED, ("b bad",)),
        Decision(INCONCLUSIVE, ("c unsure",)),
    )
    assert combine([ok, ok]).outcome == PROMOTED
    assert combine([ok, unsure]) == Decision(INCONCLUSIVE, ("c unsure",))
    assert combine([ok, unsure, bad]) == Decision(REJECTED, ("b bad",))
    assert combine([]).outcome == INCONCLUSIVE


def test_gate_document_round_trip():
    gate = GateSpec(0.9, 0.02, Decimal("0.004"), 2.5, 40, 0.1, "Excluded")
    assert GateSpec.from_document(gate.to_document()) == gate
