"""The shadow stage's decisions, as pure functions of what the operator read.

After a candidate passes its offline eval, a policy with ``spec.evaluation.shadow`` does not
promote it yet: it enters phase ``Shadowing``, the live ConfigMap gains the shadow document
(``routerconfig.shadow``) and every sidecar runs the candidate on a sample of live requests,
counting agreements with production (``router.shadow``). ``controller/rollout.py`` reads the
sidecars' counters and asks this module what follows.

**Counting, across restarts and reloads.** A sidecar's counters are cumulative for one
router process, which ``tierwise_shadow_info`` names by a random start id (a config reload
keeps the process, its start id and its counts; a restart gets a new id and starts from
zero). The operator keeps, in ``status.shadow.sources``, the last figures it read from each
(pod uid, start id) and takes the larger of what it knew and what it reads now, so a stale
or repeated read never counts twice, and a restarted router's new counters add to its old
run's instead of replacing them. Samples a router counted after the operator's last read and
before it died are never read: they are not counted, never counted twice.

**Deciding.** The same statistics as the offline gate (``evals.gate.decide``): each sample is
a pair, production's answer (the baseline) and the candidate's, and the agreement share is
their paired concordance, with its 95% Wilson interval. A failed shadow call is a
disagreement and counts against ``maxErrorRate``. Promoted when the lower bound reaches
``minAgreement`` with at least ``minSamples``; Rejected when the upper bound is below it;
else the stage goes on until ``maxDurationSeconds``, when it ends Inconclusive (never
promoted).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from tierwise.api.models import Evaluation
from tierwise.api.shadow import Shadow
from tierwise.controller.rollout_state import NO_DATASET, PAUSED, Step
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
from tierwise.evals.plan import route_changes, without_dataset
from tierwise.evals.stats import wilson_interval

SHADOWING = "Shadowing"
# The rollout's reason while a shadow stage is held by the pause annotation.
SHADOW_PAUSED = "ShadowPaused"
# What the shadow stage does at a sync (``stage_move``).
START, GO_ON, HOLD = "start", "go on", "hold"
MAX_SOURCES = 1024  # status.shadow.sources: the oldest runs beyond this are summed into one


@dataclass(frozen=True)
class Totals:
    samples: int = 0
    agreements: int = 0
    failed: int = 0
    spend: Decimal = Decimal(0)


@dataclass(frozen=True)
class Source:
    """One router run's cumulative shadow counters for one candidate.

    ``before``: what the run had already counted for this candidate when the stage started
    (a candidate shadowed again, e.g. re-evaluated after an Inconclusive, finds its routers'
    counters where the earlier stage left them); only what came after counts."""

    pod: str  # pod uid
    start: str  # the router process's start id
    samples: int = 0
    agreements: int = 0
    failed: int = 0
    spend: Decimal = Decimal(0)
    before: Totals | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.pod, self.start)

    def counted(self) -> Totals:
        """This run's figures in this stage."""
        base = self.before or Totals()
        return Totals(
            max(0, self.samples - base.samples),
            max(0, self.agreements - base.agreements),
            max(0, self.failed - base.failed),
            max(Decimal(0), self.spend - base.spend),
        )

    def as_stage_start(self) -> Source:
        """This run read as the stage starts: everything it counted so far is before it."""
        return replace(self, before=Totals(self.samples, self.agreements, self.failed, self.spend))

    def to_status(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pod": self.pod,
            "start": self.start,
            "samples": self.samples,
            "agreements": self.agreements,
            "failed": self.failed,
            "spendUSD": str(self.spend),
        }
        if self.before is not None and self.before != Totals():
            item["before"] = {
                "samples": self.before.samples,
                "agreements": self.before.agreements,
                "failed": self.before.failed,
                "spendUSD": str(self.before.spend),
            }
        return item

    @classmethod
    def from_status(cls, item: Mapping[str, Any]) -> Source:
        before = item.get("before")
        return cls(
            pod=str(item.get("pod") or ""),
            start=str(item.get("start") or ""),
            samples=_int(item.get("samples")),
            agreements=_int(item.get("agreements")),
            failed=_int(item.get("failed")),
            spend=_decimal(item.get("spendUSD")),
            before=None
            if not isinstance(before, Mapping)
            else Totals(
                _int(before.get("samples")),
                _int(before.get("agreements")),
                _int(before.get("failed")),
                _decimal(before.get("spendUSD")),
            ),
        )

    def later(self, other: Source) -> Source:
        """The later of two reads of the same run: counters only grow; what was before the
        stage is kept from the first read."""
        return Source(
            self.pod,
            self.start,
            max(self.samples, other.samples),
            max(self.agreements, other.agreements),
            max(self.failed, other.failed),
            max(self.spend, other.spend),
            self.before if self.before is not None else other.before,
        )


def merge(known: Iterable[Source], read: Iterable[Source]) -> list[Source]:
    """What the operator knew, updated with what it read now (see the module docstring)."""
    merged: dict[tuple[str, str], Source] = {}
    for source in [*known, *read]:
        found = merged.get(source.key)
        merged[source.key] = source if found is None else found.later(source)
    return list(merged.values())


def totals(sources: Iterable[Source]) -> Totals:
    """The stage's figures: each run's counts since the stage started, summed."""
    t = Totals()
    for source in sources:
        s = source.counted()
        t = Totals(
            t.samples + s.samples,
            t.agreements + s.agreements,
            t.failed + s.failed,
            t.spend + s.spend,
        )
    return t


@dataclass(frozen=True)
class Verdict:
    outcome: str  # Shadowing (go on), Promoted, Rejected or Inconclusive
    reasons: tuple[str, ...]

    @property
    def final(self) -> bool:
        return self.outcome != SHADOWING


def without_offline_eval(
    evaluation: Evaluation,
    candidate: Mapping[str, Any],
    promoted: Mapping[str, Any] | None,
) -> Decision | None:
    """The decision that stands in for the offline eval when no route has a dataset (None:
    one has, and an eval Job runs). The changed routes the shadow stage gates are Promoted
    here, to be shadowed; those that opt out follow ``unevaluatedRoutes``, as in an eval."""
    if evaluation.offline_routes():
        return None
    if promoted is None:
        return Decision(
            INCONCLUSIVE, ("no config is live to shadow the candidate against, and no dataset",)
        )
    shadow = evaluation.shadow
    changes = route_changes(candidate, promoted, ())
    decisions = without_dataset(
        changes, evaluation.unevaluated_routes, shadow.shadowed if shadow is not None else None
    )
    if not decisions:
        return Decision(
            INCONCLUSIVE,
            (
                "no route's rendered config changed (the change is outside the routes, e.g. "
                "defaultRoute), so nothing can be shadowed, and no route has a dataset",
            ),
        )
    return combine(decisions.values())


def stage_move(
    previous: Mapping[str, Any], record: Mapping[str, Any], candidate: str, step: Step
) -> str | None:
    """What the shadow stage of ``candidate`` does now, given ``status.rollout`` and
    ``status.shadow`` as the last sync left them and the offline rollout's ``step``: START
    (the offline eval passed, or no route has a dataset), GO_ON (read and judge the figures),
    HOLD (paused: keep shadowing, decide nothing) or None (no stage: the step stands).

    A stage is underway when the last sync left it Shadowing, or held by a pause, for this
    candidate; a break-glass promotion ends it. A pause before the stage starts keeps it
    from starting (the offline step is Paused, not passed)."""
    underway = (
        previous.get("phase") == SHADOWING
        or (previous.get("phase") == PAUSED and previous.get("reason") == SHADOW_PAUSED)
    ) and record.get("hash") == candidate
    if underway and step.reason != "BreakGlass":
        return HOLD if step.phase == PAUSED else GO_ON
    passed = step.reason in ("EvalPassed", NO_DATASET)
    if step.decided and step.phase == PROMOTED and passed:
        return START
    return None


def gate_spec(shadow: Shadow) -> GateSpec:
    """The offline gate's rules, read for agreement with production."""
    return GateSpec(
        min_quality=float(shadow.min_agreement),
        min_items=shadow.min_samples,
        max_error_rate=float(shadow.max_error_rate),
    )


def judge(shadow: Shadow, figures: Totals, started: datetime, now: datetime) -> Verdict:
    """Promote, reject, go on, or (at the deadline) inconclusive."""
    measured = Measured(
        items=figures.samples,
        counted=figures.samples,
        correct=figures.agreements,
        cost_per_item=None,
        p95_seconds=None,
        failed=figures.failed,
    )
    decision = decide(gate_spec(shadow), measured)
    reasons = tuple(_in_shadow_words(r) for r in decision.reasons)
    if figures.samples == 0:  # the gate's error rate of 0 of 0 would read as 100% failed
        reasons = ("no shadow samples yet",)
    if decision.outcome in (PROMOTED, REJECTED):
        return Verdict(decision.outcome, reasons)
    deadline = started + timedelta(seconds=shadow.max_duration_seconds)
    if now >= deadline:
        ended = f"the shadow stage reached maxDurationSeconds {shadow.max_duration_seconds}"
        return Verdict(INCONCLUSIVE, (ended, *reasons))
    return Verdict(SHADOWING, reasons)


# The offline gate's words, said of the shadow stage.
_WORDS = (
    ("minQuality", "minAgreement"),
    ("quality", "agreement"),
    ("items failed upstream or could not be graded", "shadow calls failed"),
    ("graded items", "samples"),
    ("minItems", "minSamples"),
    ("the gate needs", "the shadow stage needs"),
)


def _in_shadow_words(reason: str) -> str:
    for offline, shadow in _WORDS:
        reason = reason.replace(offline, shadow)
    return reason


def agreement_text(figures: Totals) -> str | None:
    interval = wilson_interval(figures.agreements, figures.samples)
    return None if interval is None else interval.format()


def shadow_status(
    candidate: str, started: str, sources: Sequence[Source], figures: Totals
) -> dict[str, Any]:
    """``status.shadow``: the stage's figures, and the sources they are summed from."""
    kept = list(sources)
    if len(kept) > MAX_SOURCES:  # very long stages over many restarts: fold the oldest
        old, kept = kept[: len(kept) - MAX_SOURCES + 1], kept[len(kept) - MAX_SOURCES + 1 :]
        folded = totals(old)
        kept.insert(
            0,
            Source(
                "folded", "folded", folded.samples, folded.agreements, folded.failed, folded.spend
            ),
        )
    status: dict[str, Any] = {
        "hash": candidate,
        "startedAt": started,
        "samples": figures.samples,
        "agreements": figures.agreements,
        "failed": figures.failed,
        "spendUSD": f"${figures.spend:.6f}",
        "sources": [s.to_status() for s in kept],
    }
    agreement = agreement_text(figures)
    if agreement is not None:
        status["agreement"] = agreement
    return status


def known_sources(status: Mapping[str, Any] | None, candidate: str) -> list[Source]:
    """The sources recorded for ``candidate`` (none when the status is for another)."""
    if not status or status.get("hash") != candidate:
        return []
    return [Source.from_status(s) for s in status.get("sources") or [] if isinstance(s, Mapping)]


def read_sources(
    pod_uid: str, samples: Iterable[tuple[str, Mapping[str, str], float]], candidate: str
) -> list[Source]:
    """A pod's shadow counters for ``candidate`` from its /metrics samples (name, labels,
    value): one Source per router start id (normally one)."""
    start = ""
    counts: dict[str, float] = {"agree": 0.0, "disagree": 0.0, "failed": 0.0}
    spend = Decimal(0)
    seen = False
    for name, labels, value in samples:
        if labels.get("candidate") != candidate:
            continue
        if name == "tierwise_shadow_info" and value == 1:
            start = labels.get("start", "")
            seen = True
        elif name == "tierwise_shadow_samples_total":
            counts[labels.get("result", "")] = counts.get(labels.get("result", ""), 0.0) + value
            seen = True
        elif name == "tierwise_shadow_cost_usd_total":
            spend += _decimal(repr(value))
    if not seen or not start:
        return []
    total = int(counts["agree"] + counts["disagree"] + counts["failed"])
    return [Source(pod_uid, start, total, int(counts["agree"]), int(counts["failed"]), spend)]


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def _decimal(value: Any) -> Decimal:
    try:
        number = Decimal(str(value).lstrip("$"))
    except (InvalidOperation, ValueError):
        return Decimal(0)
    return number if number.is_finite() and number >= 0 else Decimal(0)
