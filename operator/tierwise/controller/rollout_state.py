"""Eval-gated rollout decisions, as pure functions of what the operator observed.

``next_step`` reads the candidate hash (rendered now), the promoted hash (in the live
ConfigMap), the previous rollout status, this policy's eval Jobs and the break-glass
annotations, and says what to do: promote, start a Job, delete superseded Jobs, and the
status and Event to write. ``controller/rollout.py`` does the I/O.

A decision is made once per candidate: it is recorded as ``status.rollout.decidedHash``
before the live ConfigMap is written (phase Promoting until that write is done), so a
restarted operator that finds a finished Job (or a decision whose promotion it did not
finish) completes it without deciding again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tierwise.evals.gate import INCONCLUSIVE, PROMOTED, REJECTED

EVALUATING = "Evaluating"
# A promotion decided and recorded, its live ConfigMap write not yet confirmed: the status
# never says Promoted before the live ConfigMap holds the config.
PROMOTING = "Promoting"
PAUSED = "Paused"
UNGATED = "Ungated"
# Break-glass annotations on the CascadePolicy.
PROMOTE_ANNOTATION = "tierwise.dev/promote"  # a candidate hash (or its first 8+ hex digits)
PAUSE_ANNOTATION = "tierwise.dev/rollout"  # "paused"
PAUSED_VALUE = "paused"
REEVALUATE_ANNOTATION = "tierwise.dev/reevaluate"  # a candidate hash: run its eval again
# The kubelet's waiting reason for a container whose Secret (or key) does not exist.
CONFIG_ERROR = "CreateContainerConfigError"
# The status fields the rollout owns; the reconciler writes every other field.
ROLLOUT_FIELDS = (
    "candidateHash",
    "promotedHash",
    "rollout",
    "lastEval",
    "escalationRate",
    "estimatedSavings",
)


@dataclass(frozen=True)
class JobView:
    """One eval Job of the policy, as the decision needs it."""

    name: str
    candidate_hash: str
    state: str  # running | succeeded | failed
    reason: str = ""  # the Failed condition's reason (DeadlineExceeded, BackoffLimitExceeded)
    message: str = ""  # the eval container's termination message


@dataclass(frozen=True)
class Situation:
    candidate_hash: str
    promoted_hash: str | None
    previous: Mapping[str, Any]  # status.rollout
    jobs: Sequence[JobView]
    on_new_policy: str = "Evaluate"
    paused: bool = False
    promote_hash: str | None = None
    timeout_seconds: int = 1800
    reevaluate: str | None = None


@dataclass(frozen=True)
class Step:
    phase: str
    reason: str
    message: str
    promote: bool = False
    start_job: bool = False
    delete_jobs: tuple[str, ...] = ()
    decided: bool = False  # a decision for the candidate is made now
    summary: Mapping[str, Any] | None = None
    event: tuple[str, str, str] | None = None  # (type, reason, message)
    job: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    clear_decision: bool = False  # forget the candidate's decision (a requested re-run)


def candidate_identity(config_hash: str, key_refs: Iterable[tuple[str, str, str]]) -> str:
    """What a candidate is: its rendered config and the Secret references (variable, Secret,
    key) that its sidecars and its eval read the tier keys from.

    The config document's own hash leaves the references out (a key's location is not router
    config), so a new ``apiKeySecretRef`` alone would look like the live candidate and reach
    pods unchecked. Without references the identity is the config hash itself; with them,
    a digest of both, so a change to either is a new candidate, evaluated before it is live.
    """
    refs = sorted(set(key_refs))
    if not refs:
        return config_hash
    text = json.dumps([config_hash, refs], separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def matches_hash(value: str | None, config_hash: str) -> bool:
    """A break-glass value names this hash: in full, or by 8+ leading hex digits."""
    if not value:
        return False
    value = value.strip()
    digits = config_hash.split(":", 1)[-1]
    bare = value.split(":", 1)[-1]
    return value == config_hash or (len(bare) >= 8 and digits.startswith(bare))


def next_step(s: Situation, job_for_candidate: str) -> Step:
    candidate = s.candidate_hash
    others = tuple(j.name for j in s.jobs if j.candidate_hash != candidate and j.state == "running")
    superseded = _superseded_event(others)
    if s.promoted_hash == candidate:
        previous_phase = s.previous.get("phase")
        decided_here = s.previous.get("decidedHash") == candidate and previous_phase in (
            PROMOTING,
            PROMOTED,
        )
        return Step(
            PROMOTED,
            s.previous.get("reason", "UpToDate") if decided_here else "UpToDate",
            s.previous.get("message", "") if decided_here else f"config {candidate} is live",
            delete_jobs=others,
            event=superseded,
        )
    if matches_hash(s.promote_hash, candidate):
        return Step(
            PROMOTED,
            "BreakGlass",
            f"promoted by the {PROMOTE_ANNOTATION} annotation without an eval decision",
            promote=True,
            decided=True,
            delete_jobs=tuple(j.name for j in s.jobs if j.state == "running"),
            event=("Warning", "BreakGlassPromotion", f"config {candidate} promoted by annotation"),
        )
    if s.promoted_hash is None and s.on_new_policy == "Promote":
        return Step(
            PROMOTED,
            "FirstConfig",
            "a new policy's first config goes live at once (onNewPolicy: Promote); later "
            "changes are evaluated against it",
            promote=True,
            decided=True,
            event=(
                "Normal",
                "Promoted",
                f"first config {candidate} promoted (onNewPolicy: Promote)",
            ),
        )
    if s.previous.get("decidedHash") == candidate:
        phase = s.previous.get("phase")
        if phase in (PROMOTING, PROMOTED):  # decided; the ConfigMap write may not have happened
            return Step(
                PROMOTED,
                s.previous.get("reason", "EvalPassed"),
                s.previous.get("message", ""),
                promote=True,
                delete_jobs=others,
            )
        wanted = s.reevaluate
        if (
            phase in (REJECTED, INCONCLUSIVE)
            and matches_hash(wanted, candidate)
            and s.previous.get("reevaluated") != wanted
        ):
            return Step(
                EVALUATING,
                "ReEvaluating",
                f"the {REEVALUATE_ANNOTATION} annotation asks for a new eval of {candidate}",
                delete_jobs=tuple(j.name for j in s.jobs if j.candidate_hash == candidate),
                clear_decision=True,
                extra={"reevaluated": wanted},
                event=(
                    "Normal",
                    "ReEvaluating",
                    f"a new eval of candidate {candidate} was requested",
                ),
            )
        if phase in (REJECTED, INCONCLUSIVE):
            return Step(
                phase,
                s.previous.get("reason", phase),
                s.previous.get("message", ""),
                delete_jobs=others,
                event=superseded,
                job=s.previous.get("job"),
            )
    if s.paused:
        return Step(
            PAUSED,
            "Paused",
            f"rollouts are paused by the {PAUSE_ANNOTATION}: {PAUSED_VALUE} annotation; "
            f"candidate {candidate} waits, the live config stays {s.promoted_hash or 'unset'}",
        )
    mine = next((j for j in s.jobs if j.candidate_hash == candidate), None)
    if mine is None:
        return Step(
            EVALUATING,
            "EvalStarted",
            f"eval Job {job_for_candidate} started for candidate {candidate}",
            start_job=True,
            delete_jobs=others,
            event=superseded
            or (
                "Normal",
                "EvalStarted",
                f"eval Job {job_for_candidate} started for candidate {candidate}",
            ),
            job=job_for_candidate,
        )
    if mine.state == "deleting":
        return Step(
            EVALUATING,
            "EvalRestarting",
            f"waiting for the previous eval Job {mine.name} to be deleted before a new one",
            job=mine.name,
        )
    if mine.state == "running":
        return Step(
            EVALUATING,
            "EvalRunning",
            f"eval Job {mine.name} is running for candidate {candidate}",
            delete_jobs=others,
            event=superseded,
            job=mine.name,
        )
    return _decide(mine, others, s.timeout_seconds)


def _superseded_event(jobs: Sequence[str]) -> tuple[str, str, str] | None:
    if not jobs:
        return None
    return (
        "Normal",
        "EvalSuperseded",
        f"a newer candidate supersedes eval Job(s) {', '.join(jobs)}",
    )


def _decide(job: JobView, others: tuple[str, ...], timeout: int) -> Step:
    if job.state == "failed":
        if job.reason == CONFIG_ERROR:
            # A Secret or key the candidate names is missing: the pod never starts (the
            # kubelet would retry until the deadline). Not promoted, and the pending Job goes.
            why = (
                f"eval Job {job.name} cannot start: {job.message.strip()[:300]}; the candidate's"
                f" key references must exist before it can be evaluated (fix them, or set"
                f" {REEVALUATE_ANNOTATION} once the Secret exists)"
            )
            return _decision(
                INCONCLUSIVE, "KeyReferenceMissing", why, job, (*others, job.name), None
            )
        if job.reason == "DeadlineExceeded":
            why = f"eval Job {job.name} ran past its deadline (timeoutSeconds {timeout})"
        elif (reported := parse_summary(job.message)) is not None and reported.get("error"):
            why = f"eval Job {job.name} failed: {str(reported['error'])[:500]}"
        else:
            tail = job.message.strip().splitlines()[-1:] if job.message.strip() else []
            why = f"eval Job {job.name} failed ({job.reason or 'Failed'})" + (
                f": {tail[0][:300]}" if tail else ""
            )
        return _decision(INCONCLUSIVE, "EvalFailed", why, job, others, None)
    summary = parse_summary(job.message)
    if summary is None:
        return _decision(
            INCONCLUSIVE,
            "NoSummary",
            f"eval Job {job.name} finished without a readable summary",
            job,
            others,
            None,
        )
    outcome = summary.get("decision")
    if outcome not in (PROMOTED, REJECTED, INCONCLUSIVE):
        outcome = INCONCLUSIVE
    reasons = summary.get("reasons") or ([summary["error"]] if summary.get("error") else [])
    text = "; ".join(str(r) for r in reasons) or outcome
    reason = {PROMOTED: "EvalPassed", REJECTED: "EvalFailedGate", INCONCLUSIVE: "EvalInconclusive"}[
        outcome
    ]
    return _decision(outcome, reason, text, job, others, summary)


def _decision(
    outcome: str,
    reason: str,
    message: str,
    job: JobView,
    others: tuple[str, ...],
    summary: Mapping[str, Any] | None,
) -> Step:
    event_type = "Normal" if outcome == PROMOTED else "Warning"
    verb = {PROMOTED: "promoted", REJECTED: "rejected", INCONCLUSIVE: "inconclusive, not promoted"}[
        outcome
    ]
    return Step(
        outcome,
        reason,
        message,
        promote=outcome == PROMOTED,
        decided=True,
        delete_jobs=others,
        summary=summary,
        event=(event_type, outcome, f"candidate {job.candidate_hash} {verb}: {message}"[:1000]),
        job=job.name,
    )


def parse_summary(message: str) -> dict[str, Any] | None:
    try:
        value = json.loads(message)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) and "decision" in value else None


def last_eval_status(
    summary: Mapping[str, Any] | None, outcome: str, message: str, job: str, hash_: str, now: str
) -> dict[str, Any]:
    """``status.lastEval``: the figures of the first evaluated route, as readable strings."""
    status: dict[str, Any] = {
        "hash": hash_,
        "decision": outcome,
        "reasons": [message][:1]
        if not summary
        else [str(r) for r in summary.get("reasons") or []][:10],
        "job": job,
        "finishedAt": now,
    }
    routes = (summary or {}).get("routes") or {}
    if routes:
        figures = next(iter(routes.values()))
        status.update(
            {
                "quality": _interval(figures.get("quality")),
                "baselineQuality": _interval(figures.get("baselineQuality")),
                "costPerItem": _usd(figures.get("costPerItem")),
                "baselineCostPerItem": _usd(figures.get("baselineCostPerItem")),
                "saving": _pct(figures.get("saving")),
                "escalationRate": _pct(figures.get("escalationRate")),
                "latencyP50": _ms(figures.get("p50Seconds")),
                "latencyP95": _ms(figures.get("p95Seconds")),
                "items": int(figures.get("items") or 0),
                "graded": int(figures.get("graded") or 0),
            }
        )
    return {k: v for k, v in status.items() if v is not None}


def _interval(value: Any) -> str | None:
    if not isinstance(value, list) or len(value) != 3:
        return None
    return f"{value[0]:.3f} [{value[1]:.3f}, {value[2]:.3f}]"


def _usd(value: Any) -> str | None:
    return None if value is None else f"${float(value):.6f}"


def _pct(value: Any) -> str | None:
    return None if value is None else f"{float(value) * 100:.1f}%"


def _ms(value: Any) -> str | None:
    return None if value is None else f"{float(value) * 1000:.0f}ms"
