"""The gate: Promoted, Rejected or Inconclusive, with the reasons, from an eval's figures.

A pure decision table. Every rule reads an interval, never a raw mean, and has three
outcomes: it passes when the whole interval is on the good side, rejects when the whole
interval is on the bad side, and is inconclusive when the interval straddles the limit. A
95% two-sided interval read on one side is a one-sided test at 97.5%.

Every figure is over one stated item set: the distinct items (duplicates and near-duplicates
removed, see ``dataset.Dataset.distinct``) the baseline answered and graded, with the
candidate's answer graded or failed. A candidate item that failed upstream (5xx, timeout)
counts as wrong, and its spend counts in its cost (unless ``candidateErrors: Excluded``);
only items the baseline could not answer or nobody could grade leave the set.

| rule | passes | rejects | inconclusive |
|---|---|---|---|
| candidate errors (upstream or ungradable) | share <= maxErrorRate | | more |
| baseline errors (upstream or ungradable) | share <= maxErrorRate | | more |
| items in the set (pairs with a baseline) | >= minItems | | fewer (including zero) |
| minQuality | low >= minQuality | high < minQuality | straddles |
| maxQualityDrop (paired, vs baseline) | drop high <= max | drop low > max | straddles |
| maxCostPerItem | mean <= max | mean > max | |
| maxP95LatencySeconds | p95 <= max | p95 > max | |

The outcome: Inconclusive when the eval could not measure (too many errors on either side,
too few items: then nothing else is judged); else Rejected when any rule rejects; else
Inconclusive when any rule is undecided; else Promoted. Inconclusive never promotes, and a
bad-input decision (nothing gradable) is Inconclusive with ``bad_input`` set.
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
    candidate_errors: str = "Wrong"  # or "Excluded": a failed candidate item leaves the set

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
            "candidateErrors": self.candidate_errors,
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
            candidate_errors=str(doc.get("candidateErrors", "Wrong")),
        )


@dataclass(frozen=True)
class Measured:
    """What one config did on one route's items, over the item set the gate counts.

    ``items``: distinct items replayed; ``counted``: the item set (pairs when there is a
    baseline); ``correct``: the candidate's correct answers in it (a failed one is wrong);
    ``failed`` / ``baseline_failed``: items of ``items`` that failed upstream or could not be
    graded, per config.
    """

    items: int
    counted: int
    correct: int
    cost_per_item: Decimal | None  # None when the set is empty
    p95_seconds: float | None
    failed: int = 0
    baseline_failed: int = 0

    @property
    def quality(self) -> Interval | None:
        return wilson_interval(self.correct, self.counted)


@dataclass(frozen=True)
class Decision:
    outcome: str
    reasons: tuple[str, ...]
    bad_input: bool = False  # nothing gradable: the dataset or grader is wrong, not the config

    @property
    def promoted(self) -> bool:
        return self.outcome == PROMOTED


def bad_input(reason: str) -> Decision:
    """The decision when the eval measured nothing gradable: never a verdict on the config."""
    return Decision(INCONCLUSIVE, (reason,), bad_input=True)


def decide(
    gate: GateSpec,
    candidate: Measured,
    paired: PairedCounts | None = None,
) -> Decision:
    """The decision for one route. ``paired``: baseline vs candidate verdicts on the item
    set (None without a baseline)."""
    for side, failed in (("candidate", candidate.failed), ("baseline", candidate.baseline_failed)):
        rate = failed / candidate.items if candidate.items else 1.0
        if rate > gate.max_error_rate:
            return Decision(
                INCONCLUSIVE,
                (
                    f"{side}: {failed} of {candidate.items} items failed upstream or could not "
                    f"be graded ({rate:.1%} > maxErrorRate {gate.max_error_rate:.1%})",
                ),
            )
    if candidate.counted < gate.min_items:
        what = "pairs graded on both configs" if paired is not None else "graded items"
        return Decision(
            INCONCLUSIVE,
            (f"only {candidate.counted} {what}, the gate needs at least {gate.min_items}",),
        )
    rejects: list[str] = []
    undecided: list[str] = []
    passes: list[str] = []
    quality = candidate.quality
    assert quality is not None  # counted >= min_items >= 1
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
    """The decision for several routes: any bad input first (it says nothing about the
    config), then any Rejected rejects, then any Inconclusive."""
    found: Sequence[Decision] = list(decisions)
    if not found:
        return Decision(INCONCLUSIVE, ("nothing was evaluated",))
    bad = [d for d in found if d.bad_input]
    if bad:
        return Decision(INCONCLUSIVE, tuple(r for d in bad for r in d.reasons), bad_input=True)
    for outcome in (REJECTED, INCONCLUSIVE):
        matching = [d for d in found if d.outcome == outcome]
        if matching:
            return Decision(outcome, tuple(r for d in matching for r in d.reasons))
    return Decision(PROMOTED, tuple(r for d in found for r in d.reasons))


def deciding(decisions: Mapping[str, Decision], combined: Decision) -> tuple[str, ...]:
    """The routes whose decision is the combined one (every route when Promoted)."""
    return tuple(
        name
        for name, d in decisions.items()
        if d.outcome == combined.outcome and d.bad_input == combined.bad_input
    )
