"""The gate: Promoted, Rejected or Inconclusive, with the reasons, from an eval's figures.

A pure decision table. Every rule reads an interval, never a raw mean, and has three
outcomes: it passes when the whole interval is on the good side, rejects when the whole
interval is on the bad side, and is inconclusive when the interval straddles the limit.

| rule | passes | rejects | inconclusive |
|---|---|---|---|
| graded items | >= minItems | | fewer (including zero) |
| errors (upstream or ungradable) | share <= maxErrorRate | | more |
| minQuality | low >= minQuality | high < minQuality | straddles |
| maxQualityDrop (paired, vs baseline) | drop high <= max | drop low > max | straddles |
| maxCostPerItem | mean <= max | mean > max | |
| maxP95Latency | p95 <= max | p95 > max | |

The outcome: Inconclusive when the eval could not measure (too few graded items, too many
errors: then nothing else is judged); else Rejected when any rule rejects; else Inconclusive
when any rule is undecided; else Promoted. Inconclusive never promotes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tierwise.evals.stats import Interval, PairedCounts, paired_difference, wilson_interval

PROMOTED = "Promoted"
REJECTED = "Rejected"
INCONCLUSIVE = "Inconclusive"


@dataclass(frozen=True)
class GateSpec:
    min_quality: float
    max_quality_drop: float | None = None
    max_cost_per_item: Decimal | None = None
    max_p95_latency_seconds: float | None = None
    min_items: int = 30
    max_error_rate: float = 0.05

    def to_document(self) -> dict[str, Any]:
        return {
            "minQuality": self.min_quality,
            "maxQualityDrop": self.max_quality_drop,
            "maxCostPerItem": None
            if self.max_cost_per_item is None
            else str(self.max_cost_per_item),
            "maxP95LatencySeconds": self.max_p95_latency_seconds,
            "minItems": self.min_items,
            "maxErrorRate": self.max_error_rate,
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> GateSpec:
        cost = doc.get("maxCostPerItem")
        drop, latency = doc.get("maxQualityDrop"), doc.get("maxP95LatencySeconds")
        return cls(
            min_quality=float(doc["minQuality"]),
            max_quality_drop=None if drop is None else float(drop),
            max_cost_per_item=None if cost is None else Decimal(str(cost)),
            max_p95_latency_seconds=None if latency is None else float(latency),
            min_items=int(doc.get("minItems", 30)),
            max_error_rate=float(doc.get("maxErrorRate", 0.05)),
        )


@dataclass(frozen=True)
class Measured:
    """What one config did on one route's items."""

    items: int
    graded: int
    correct: int
    cost_per_item: Decimal | None  # None when no item was answered
    p95_seconds: float | None

    @property
    def errors(self) -> int:
        return self.items - self.graded

    @property
    def quality(self) -> Interval | None:
        return wilson_interval(self.correct, self.graded)


@dataclass(frozen=True)
class Decision:
    outcome: str
    reasons: tuple[str, ...]

    @property
    def promoted(self) -> bool:
        return self.outcome == PROMOTED


def decide(
    gate: GateSpec,
    candidate: Measured,
    paired: PairedCounts | None = None,
) -> Decision:
    """The decision for one route. ``paired``: candidate vs baseline verdicts on the items
    both graded (None without a baseline, e.g. when it failed)."""
    if candidate.graded < gate.min_items:
        return Decision(
            INCONCLUSIVE,
            (f"only {candidate.graded} graded items, the gate needs at least {gate.min_items}",),
        )
    error_rate = candidate.errors / candidate.items if candidate.items else 1.0
    if error_rate > gate.max_error_rate:
        return Decision(
            INCONCLUSIVE,
            (
                f"{candidate.errors} of {candidate.items} items failed upstream or could not be "
                f"graded ({error_rate:.1%} > maxErrorRate {gate.max_error_rate:.1%})",
            ),
        )
    rejects: list[str] = []
    undecided: list[str] = []
    passes: list[str] = []
    quality = candidate.quality
    assert quality is not None  # graded >= min_items >= 1
    q = quality.format()
    if quality.low >= gate.min_quality:
        passes.append(f"quality {q}: lower bound meets minQuality {gate.min_quality:.3f}")
    elif quality.high < gate.min_quality:
        rejects.append(f"quality {q}: below minQuality {gate.min_quality:.3f}")
    else:
        undecided.append(f"quality {q}: the interval straddles minQuality {gate.min_quality:.3f}")
    if gate.max_quality_drop is not None:
        _drop_rule(gate.max_quality_drop, paired, passes, rejects, undecided)
    if gate.max_cost_per_item is not None and candidate.cost_per_item is not None:
        cost = f"${candidate.cost_per_item:.6f}"
        if candidate.cost_per_item <= gate.max_cost_per_item:
            passes.append(f"cost per item {cost} within maxCostPerItem ${gate.max_cost_per_item}")
        else:
            rejects.append(f"cost per item {cost} above maxCostPerItem ${gate.max_cost_per_item}")
    if gate.max_p95_latency_seconds is not None and candidate.p95_seconds is not None:
        p95 = f"p95 latency {candidate.p95_seconds:.2f}s"
        limit = gate.max_p95_latency_seconds
        if candidate.p95_seconds <= limit:
            passes.append(f"{p95} within maxP95LatencySeconds {limit}")
        else:
            rejects.append(f"{p95} above maxP95LatencySeconds {limit}")
    if rejects:
        return Decision(REJECTED, tuple(rejects + undecided))
    if undecided:
        return Decision(INCONCLUSIVE, tuple(undecided))
    return Decision(PROMOTED, tuple(passes))


def _drop_rule(
    max_drop: float,
    paired: PairedCounts | None,
    passes: list[str],
    rejects: list[str],
    undecided: list[str],
) -> None:
    drop = paired_difference(paired) if paired is not None else None
    if drop is None:
        undecided.append("no baseline quality to compare with (maxQualityDrop)")
        return
    text = f"quality drop vs baseline {drop.format()}"
    if drop.high <= max_drop:
        passes.append(f"{text}: within maxQualityDrop {max_drop:.3f}")
    elif drop.low > max_drop:
        rejects.append(f"{text}: above maxQualityDrop {max_drop:.3f}")
    else:
        undecided.append(f"{text}: the interval straddles maxQualityDrop {max_drop:.3f}")


def combine(decisions: Iterable[Decision]) -> Decision:
    """The decision for several routes: any Rejected rejects, then any Inconclusive."""
    found: Sequence[Decision] = list(decisions)
    if not found:
        return Decision(INCONCLUSIVE, ("nothing was evaluated",))
    for outcome in (REJECTED, INCONCLUSIVE):
        matching = [d for d in found if d.outcome == outcome]
        if matching:
            return Decision(outcome, tuple(r for d in matching for r in d.reasons))
    return Decision(PROMOTED, tuple(r for d in found for r in d.reasons))
