"""The shadow stage's I/O: the shadow document it writes, and the figures it reads from pods.

**Where the figures come from: the sidecars' own metrics port.** Each sidecar serves its
``tierwise_shadow_*`` counters on its metrics port (``router-metrics``, 9787), the endpoint
Prometheus scrapes; ``controller/router_metrics.py`` reads it (and says why not through the
API server). The policy's pods come from the operator's pod index, never from a list. A pod
that does not answer is skipped for this sync; its last figures stay counted
(``shadow_state``).

The decisions are ``controller/shadow_state.py``'s; ``controller/rollout.py`` calls this.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tierwise.api import Resource
from tierwise.api.models import Evaluation
from tierwise.controller.conditions import now_iso
from tierwise.controller.objects import Observed
from tierwise.controller.pods import PodView
from tierwise.controller.rollout_state import NO_DATASET, PAUSED, VERBS, Step
from tierwise.controller.router_metrics import read_all, samples
from tierwise.controller.shadow_state import (
    HOLD,
    SHADOW_PAUSED,
    SHADOWING,
    START,
    Source,
    Totals,
    agreement_text,
    judge,
    known_sources,
    merge,
    read_sources,
    shadow_status,
    stage_move,
    totals,
)
from tierwise.evals.gate import INCONCLUSIVE, PROMOTED, REJECTED
from tierwise.evals.plan import UNCHANGED, judge_config, route_changes
from tierwise.render import Problem, render_tier
from tierwise.routerconfig import parse
from tierwise.routerconfig.shadow import ShadowRoute, ShadowSettings

log = logging.getLogger("tierwise.shadow")

SHADOW_STARTED = "ShadowStarted"
SHADOW_RUNNING = "ShadowRunning"
_DECIDED = {
    PROMOTED: "ShadowPassed",
    REJECTED: "ShadowFailedGate",
    INCONCLUSIVE: "ShadowInconclusive",
}
SHADOW_REASONS = tuple(_DECIDED.values())


@dataclass(frozen=True)
class Stage:
    """The rollout's step after the shadow stage had its say, the shadow document the live
    ConfigMap holds beside the promoted config (None: none), and ``status.shadow`` to write
    (None: leave it as it is)."""

    step: Step
    document: str | None = None
    status: dict[str, Any] | None = None


def shadow_stage(
    policy: Observed,
    evaluation: Evaluation,
    candidate: Mapping[str, Any],
    promoted: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    step: Step,
    datasets: Any,
    pods: Callable[[], Iterable[PodView]],
    tiers: Mapping[str, Resource] | None = None,
) -> Stage:
    """Start, continue or end the shadow stage of ``candidate``; ``step`` is the offline
    rollout's (``rollout_state.next_step``). A candidate enters the stage when its offline
    eval passed and a config is live to compare with (a new policy's first config has no
    production answers: its offline eval decides alone). ``pods``: the policy's pods, asked
    for only while the stage reads figures."""
    shadow = evaluation.shadow
    if shadow is None or promoted is None or promoted.get("hash") == candidate["hash"]:
        return Stage(step)
    config_hash = candidate["hash"]
    previous = current.get("rollout") or {}
    record = current.get("shadow") or {}
    move = stage_move(previous, record, config_hash, step)
    if move is None:
        return Stage(step)
    continuing = move != START
    judging = None
    if shadow.judge_tier is not None:
        judging = render_tier(shadow.judge_tier, tiers or {}, policy.namespace)
        if isinstance(judging, Problem):  # no judge, no comparison: never promoted unjudged
            return Stage(_judge_missing(config_hash, judging.message, previous, step))
    document = shadow_document(evaluation, candidate, promoted, judging)
    if document is None:
        return Stage(step)  # every changed route opted out: the offline decision stands
    if not continuing:
        before = "offline eval passed" if step.reason != NO_DATASET else "no route has a dataset"
        message = (
            f"{before}; shadowing candidate {config_hash} on live requests "
            f"(sample rate {shadow.sample_rate}, at least {shadow.min_samples} samples, "
            f"minAgreement {shadow.min_agreement}, at most {shadow.max_duration_seconds}s)"
        )
        started = Step(
            SHADOWING,
            SHADOW_STARTED,
            message,
            summary=step.summary,
            job=step.job,
            delete_jobs=step.delete_jobs,
            event=("Normal", SHADOW_STARTED, message),
            progressing=True,
        )
        # What the routers already counted for this candidate (an earlier stage of it) is
        # recorded as before this one: only what comes after counts.
        before = [source.as_stage_start() for source in read_figures(pods(), config_hash)]
        return Stage(started, document, shadow_status(config_hash, now_iso(), before, Totals()))
    if move == HOLD:
        # Paused: the sidecars go on sampling (their counters are cumulative), but no
        # decision is made from the figures, nor are they read, until the pause ends.
        held = Step(
            PAUSED,
            SHADOW_PAUSED,
            f"{step.message}; the shadow stage of candidate {config_hash} holds: no decision "
            f"is made from its figures until the annotation is removed",
            job=previous.get("job"),
            progressing=False,
        )
        return Stage(held, document, None)
    read = read_figures(pods(), config_hash)
    sources = merge(known_sources(record, config_hash), read)
    figures = totals(sources)
    since = str(record.get("startedAt") or now_iso())
    verdict = judge(shadow, figures, _time(since), datetime.now(UTC))
    status = shadow_status(config_hash, since, sources, figures)
    said = (
        f"{figures.samples} samples, agreement {agreement_text(figures) or 'not measured yet'}, "
        f"{figures.failed} failed, shadow spend ${figures.spend:.6f}"
    )
    why = "; ".join(verdict.reasons)
    if not verdict.final:
        going = Step(
            SHADOWING,
            SHADOW_RUNNING,
            f"shadowing candidate {config_hash}: {said}; {why}",
            job=previous.get("job"),
            delete_jobs=step.delete_jobs,
            progressing=True,
        )
        return Stage(going, document, status)
    outcome = verdict.outcome
    message = (
        f"shadow stage over {figures.samples} samples ({figures.failed} failed, shadow spend "
        f"${figures.spend:.6f}): {why}"
    )
    digest = getattr(datasets, "digest", None) or ""
    extra = {"decidedDataset": digest}
    if outcome == PROMOTED:
        extra["promotedDataset"] = digest
    decided = Step(
        outcome,
        _DECIDED[outcome],
        message,
        promote=outcome == PROMOTED,
        decided=True,
        delete_jobs=step.delete_jobs,
        event=(
            "Normal" if outcome == PROMOTED else "Warning",
            outcome,
            f"candidate {config_hash} {VERBS[outcome]} by the shadow stage: {message}"[:1000],
        ),
        job=previous.get("job"),
        extra=extra,
    )
    return Stage(decided, None, status)


def _judge_missing(candidate: str, problem: str, previous: Mapping[str, Any], step: Step) -> Step:
    message = f"the shadow stage's judge cannot be used: {problem}"
    return Step(
        INCONCLUSIVE,
        _DECIDED[INCONCLUSIVE],
        message,
        decided=True,
        delete_jobs=step.delete_jobs,
        event=("Warning", INCONCLUSIVE, f"candidate {candidate} {VERBS[INCONCLUSIVE]}: {message}"),
        job=previous.get("job"),
    )


def _time(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return datetime.now(UTC)


def changed_routes(candidate: Mapping[str, Any], promoted: Mapping[str, Any]) -> list[str]:
    """Routes of the candidate that changed against the promoted config, as the offline
    eval sees them (``evals.plan.route_changes``; a new route is changed too)."""
    changes = route_changes(candidate, promoted, ())
    return [r["name"] for r in candidate.get("routes") or [] if changes[r["name"]] != UNCHANGED]


def shadow_document(
    evaluation: Evaluation,
    candidate: Mapping[str, Any],
    promoted: Mapping[str, Any],
    judge_tier: Mapping[str, Any] | None = None,
) -> str | None:
    """The shadow document for the live ConfigMap (``routerconfig.shadow``), or None when no
    changed route may be shadowed (every changed one opted out). ``judge_tier``: the judge
    tier as rendered, for a judge comparison."""
    shadow = evaluation.shadow
    assert shadow is not None
    routes = {}
    for name in changed_routes(candidate, promoted):
        if not shadow.shadowed(name):
            continue
        comparison = shadow.comparison
        kind = comparison.type if comparison else "graderField"
        field = comparison.field if comparison and comparison.field else None
        if field is None:
            grader = evaluation.grader_for(name)
            field = grader.field if grader.type in ("jsonField", "allowedSet") else "label"
        tier = shadow.judge_tier if kind == "judge" else None
        criteria = comparison.criteria if comparison and tier else None
        routes[name] = ShadowRoute(name, kind, tuple(field.split(".")), tier, criteria)
    if not routes:
        return None
    judges = None
    if shadow.judge_tier is not None:
        assert judge_tier is not None, "rendered by shadow_stage"
        judges = parse(judge_config(candidate, {shadow.judge_tier: judge_tier}) or {})
    settings = ShadowSettings(
        candidate=parse(dict(candidate)),
        routes=routes,
        sample_rate=float(shadow.sample_rate),
        max_concurrency=shadow.max_concurrency,
        timeout_seconds=float(shadow.timeout_seconds),
        spend_limit_per_hour_usd=shadow.spend_limit_per_hour_usd,
        judge_config=judges,
    )
    return json.dumps(settings.to_document(), sort_keys=True, separators=(",", ":"))


def read_figures(pods: Iterable[PodView], candidate: str) -> list[Source]:
    """The shadow counters of ``candidate`` from every running router among ``pods``."""
    readable = [p for p in pods if p.metrics_url and p.uid]
    texts = read_all(p.metrics_url or "" for p in readable)
    found: list[Source] = []
    for pod, text in zip(readable, texts, strict=True):
        if text is not None:
            found.extend(read_sources(pod.uid, samples(text, "tierwise_shadow"), candidate))
    return found
