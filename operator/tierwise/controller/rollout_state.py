"""Eval-gated rollout decisions, as pure functions of what the operator observed.

``next_step`` reads the candidate hash (rendered now), the promoted hash (in the live
ConfigMap), the previous rollout status, this policy's eval Jobs, the digest of the eval
datasets and the break-glass annotations, and says what to do: promote, start a Job, delete
superseded Jobs, and the status and Event to write. ``controller/rollout.py`` does the I/O.

What was evaluated is the candidate *and* the datasets it was judged on: a decision records
the datasets' digest (``decidedDataset``; the live config's is ``promotedDataset``), and a
changed dataset re-opens it, a rejected or inconclusive candidate and the live config alike.

A decision is made once per candidate: it is recorded as ``status.rollout.decidedHash``
before the live ConfigMap is written (phase Promoting until that write is done), so a
restarted operator that finds a finished Job (or a decision whose promotion it did not
finish) completes it without deciding again.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tierwise.evals.gate import INCONCLUSIVE, PROMOTED, REJECTED, Decision

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
# On an eval Job: the digest of the datasets it evaluates (``dataset_digest``).
DATASET_ANNOTATION = "tierwise.dev/dataset-digest"
# How long an eval may wait for its dataset before the policy stops saying it progresses.
DATASET_GRACE_SECONDS = 300
# A decision's verb, in Events.
VERBS = {PROMOTED: "promoted", REJECTED: "rejected", INCONCLUSIVE: "inconclusive, not promoted"}
# No route has a dataset: no offline eval runs, the changed routes go to the shadow stage.
NO_DATASET = "NoDataset"
# Why an eval did not start: a dataset is missing (waited for), the eval cannot be planned
# (the spec must change), or the API server refused the Job.
DATASET_MISSING = "DatasetMissing"
EVAL_NOT_STARTED = "EvalNotStarted"
EVAL_JOB_NOT_CREATED = "EvalJobNotCreated"
# The status fields the rollout owns; the reconciler writes every other field.
ROLLOUT_FIELDS = (
    "candidateHash",
    "promotedHash",
    "rollout",
    "lastEval",
    "escalationRate",
    "estimatedSavings",
    "shadow",
)


@dataclass(frozen=True)
class JobView:
    """One eval Job of the policy, as the decision needs it."""

    name: str
    candidate_hash: str
    state: str  # running | succeeded | failed
    reason: str = ""  # the Failed condition's reason (DeadlineExceeded, BackoffLimitExceeded)
    message: str = ""  # the eval container's termination message
    dataset_digest: str = ""  # the datasets it evaluates ("" when it does not say)


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
    dataset_digest: str | None = None  # the eval datasets now; None while one is missing
    # The candidate's config hash (status.candidateHash), when the identity above also covers
    # key references: break-glass annotations may name either.
    config_hash: str | None = None
    # When no route has a dataset: the decision on the changed routes without one
    # (``shadow_state.without_offline_eval``), instead of an eval Job. None: a Job runs.
    without_eval: Decision | None = None


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
    progressing: bool | None = None  # None: while Evaluating


def key_refs_digest(key_refs: Iterable[tuple[str, str, str]]) -> str:
    """A digest of the Secret references (variable, Secret, key) a candidate reads tier keys
    from; "" when it names none."""
    refs = sorted(set(key_refs))
    if not refs:
        return ""
    return "sha256:" + hashlib.sha256(json.dumps(refs, separators=(",", ":")).encode()).hexdigest()


def candidate_identity(config_hash: str, keys_digest: str) -> str:
    """What a candidate is: its rendered config and the Secret references its sidecars and
    its eval read the tier keys from (``key_refs_digest``).

    The config document's own hash leaves the references out (a key's location is not router
    config), so a new ``apiKeySecretRef`` alone would look like the live candidate and reach
    pods unchecked. Without references the identity is the config hash itself; with them,
    a digest of both, so a change to either is a new candidate, evaluated before it is live.
    """
    if not keys_digest:
        return config_hash
    return "sha256:" + hashlib.sha256(f"{config_hash}\n{keys_digest}".encode()).hexdigest()


def _names_candidate(value: str | None, s: Situation) -> bool:
    return matches_hash(value, s.candidate_hash) or (
        s.config_hash is not None and matches_hash(value, s.config_hash)
    )


def matches_hash(value: str | None, config_hash: str) -> bool:
    """A break-glass value names this hash: in full, or by 8+ leading hex digits."""
    if not value:
        return False
    value = value.strip()
    digits = config_hash.split(":", 1)[-1]
    bare = value.split(":", 1)[-1]
    return value == config_hash or (len(bare) >= 8 and digits.startswith(bare))


def same_dataset(recorded: str | None, now: str | None) -> bool:
    """Whether something recorded for the ``recorded`` datasets holds for ``now``'s: an
    unknown digest on either side (an older record, a dataset missing now) changes nothing."""
    return not recorded or not now or recorded == now


def next_step(s: Situation, job_for_candidate: str) -> Step:
    candidate, digest, previous = s.candidate_hash, s.dataset_digest, s.previous
    others = tuple(j.name for j in s.jobs if j.candidate_hash != candidate and j.state == "running")
    superseded = _superseded_event(others)
    phase = previous.get("phase")
    recorded = previous.get("decidedHash") == candidate
    decided = recorded and same_dataset(previous.get("decidedDataset"), digest)
    live_failed = decided and phase in (REJECTED, INCONCLUSIVE)  # re-evaluated and failed
    reopened = ""  # why a decided candidate is evaluated again
    if s.promoted_hash == candidate and not live_failed:
        if same_dataset(previous.get("promotedDataset"), digest) or (
            recorded and phase in (PROMOTING, PROMOTED) and decided
        ):
            decided_here = recorded and phase in (PROMOTING, PROMOTED)
            return Step(
                PROMOTED,
                previous.get("reason", "UpToDate") if decided_here else "UpToDate",
                previous.get("message", "") if decided_here else f"config {candidate} is live",
                delete_jobs=others,
                event=superseded,
            )
        reopened = f"the eval dataset changed since live config {candidate} was evaluated"
    forced = (s.promote_hash or "").strip()
    if (
        s.promoted_hash != candidate
        and _names_candidate(forced, s)
        and previous.get("forcePromoted") != forced
    ):
        # Once per value: a stale annotation never promotes a config git returns to later.
        return Step(
            PROMOTED,
            "BreakGlass",
            f"promoted by the {PROMOTE_ANNOTATION} annotation without an eval decision",
            promote=True,
            decided=True,
            delete_jobs=tuple(j.name for j in s.jobs if j.state == "running"),
            event=("Warning", "BreakGlassPromotion", f"config {candidate} promoted by annotation"),
            extra=_dataset_record(digest, promoted=True, forcePromoted=forced),
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
            extra=_dataset_record(digest, promoted=True),
        )
    if recorded and phase in (PROMOTING, PROMOTED) and s.promoted_hash != candidate:
        # Decided; the ConfigMap write may not have happened.
        return Step(
            PROMOTED,
            previous.get("reason", "EvalPassed"),
            previous.get("message", ""),
            promote=True,
            delete_jobs=others,
        )
    if decided and phase in (REJECTED, INCONCLUSIVE):
        wanted = s.reevaluate
        if _names_candidate(wanted, s) and previous.get("reevaluated") != wanted:
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
        return Step(
            phase,
            previous.get("reason", phase),
            previous.get("message", ""),
            delete_jobs=others,
            event=superseded,
            job=previous.get("job"),
        )
    if recorded and phase in (REJECTED, INCONCLUSIVE):
        reopened = f"the eval dataset changed since candidate {candidate} was {phase.lower()}"
    if s.paused:
        return Step(
            PAUSED,
            "Paused",
            f"rollouts are paused by the {PAUSE_ANNOTATION}: {PAUSED_VALUE} annotation; "
            f"candidate {candidate} waits, the live config stays {s.promoted_hash or 'unset'}",
        )
    mine = [j for j in s.jobs if j.candidate_hash == candidate]
    outdated = [j for j in mine if not same_dataset(j.dataset_digest, digest)]
    if outdated:
        # Same Job name, other data: the old Job goes first, then a new eval starts.
        why = reopened or f"the eval dataset changed while candidate {candidate} was evaluated"
        doomed = tuple(j.name for j in outdated if j.state != "deleting")
        return Step(
            EVALUATING,
            "DatasetChanged",
            f"{why}: a new eval starts once eval Job {outdated[0].name} is deleted",
            delete_jobs=doomed + others,
            event=("Normal", "DatasetChanged", why) if doomed else None,
            job=outdated[0].name,
        )
    job = next(iter(mine), None)
    if job is None and s.without_eval is not None:
        return _without_eval(s.without_eval, candidate, digest)
    if job is None:
        started = f"eval Job {job_for_candidate} started for candidate {candidate}"
        if reopened:
            started = f"{reopened}: {started}"
        return Step(
            EVALUATING,
            "EvalStarted",
            started,
            start_job=True,
            delete_jobs=others,
            event=superseded or ("Normal", "EvalStarted", started),
            job=job_for_candidate,
        )
    if job.state == "deleting":
        return Step(
            EVALUATING,
            "EvalRestarting",
            f"waiting for the previous eval Job {job.name} to be deleted before a new one",
            job=job.name,
        )
    if job.state == "running":
        return Step(
            EVALUATING,
            "EvalRunning",
            f"eval Job {job.name} is running for candidate {candidate}",
            delete_jobs=others,
            event=superseded,
            job=job.name,
        )
    return _decide(job, others, s.timeout_seconds)


def _without_eval(decision: Decision, candidate: str, digest: str | None) -> Step:
    """No eval Job: no route has a dataset. Promoted here means the shadow stage takes the
    candidate (``controller.shadow``), or ``unevaluatedRoutes: Promote`` for routes it does
    not gate; otherwise the rollout ends as any eval would."""
    outcome = decision.outcome
    message = "no route has a dataset, so no offline eval runs: " + "; ".join(decision.reasons)
    return Step(
        outcome,
        NO_DATASET,
        message,
        promote=outcome == PROMOTED,
        decided=True,
        event=(
            "Normal" if outcome == PROMOTED else "Warning",
            outcome,
            f"candidate {candidate} {VERBS[outcome]}: {message}"[:1000],
        ),
        extra=_dataset_record(digest, promoted=outcome == PROMOTED),
    )


def _dataset_record(digest: str | None, promoted: bool = False, **extra: str) -> dict[str, str]:
    """The datasets a decision was made on (``""``: not known), and for a promotion the
    datasets the live config answers to."""
    record = {"decidedDataset": digest or "", **extra}
    if promoted:
        record["promotedDataset"] = digest or ""
    return record


def dataset_digest(contents: Iterable[tuple[str, str, str]]) -> str:
    """The digest of the eval's datasets: (ConfigMap, key, sha256 of the text) each."""
    body = json.dumps(sorted(contents), ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def not_started(reason: str, problem: str, previous: Mapping[str, Any], now: datetime) -> Step:
    """The candidate's eval cannot start. A dataset that does not exist (yet: GitOps may apply
    it after the policy) is waited for, as progress, for ``DATASET_GRACE_SECONDS``; after
    that, and for every other cause, the policy says it is stuck."""
    since = now
    if previous.get("reason") == reason and previous.get("waitingSince"):
        since = _parse_time(previous["waitingSince"]) or now
    waited = (now - since).total_seconds()
    progressing = reason == DATASET_MISSING and waited < DATASET_GRACE_SECONDS
    started = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    message = problem
    if reason == DATASET_MISSING and not progressing:
        message = f"{problem} (since {started}, over {DATASET_GRACE_SECONDS // 60} minutes)"
    return Step(
        EVALUATING,
        reason,
        message,
        event=("Warning", reason, problem),
        progressing=progressing,
        extra={"waitingSince": started},
    )


def _parse_time(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return None


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
    cause = failure_cause(summary)
    if cause is not None and outcome != PROMOTED:
        text = f"{cause}; {text}"
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
    verb = VERBS[outcome]
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
        extra=_dataset_record(job.dataset_digest, promoted=outcome == PROMOTED),
    )


# Upstream statuses that say who is at fault, as the operator's message names them.
_FAILED_BECAUSE = {401: "authentication failed", 403: "permission denied", 429: "rate limited"}


def failure_cause(summary: Mapping[str, Any]) -> str | None:
    """Why nothing could be graded, when the calls themselves failed: the most common error
    of each route whose every item failed, by tier (``evals.report.failures``)."""
    causes = []
    for figures in (summary.get("routes") or {}).values():
        items = int(figures.get("items") or 0)
        failures = figures.get("failures") or []
        if not items or figures.get("counted", figures.get("graded")) or not failures:
            continue
        top = failures[0]
        error, tier, count = str(top.get("error") or ""), top.get("tier") or "?", top["count"]
        found = re.search(r"\((\d{3})\)", error)
        status = int(found.group(1)) if found else None
        if status in _FAILED_BECAUSE:
            causes.append(
                f"{_FAILED_BECAUSE[status]} for tier {tier}: {count}/{items} calls {status}"
            )
        else:
            causes.append(f"calls to tier {tier} failed: {count}/{items} calls {error}")
    return "; ".join(causes) or None


def parse_summary(message: str) -> dict[str, Any] | None:
    try:
        value = json.loads(message)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) and "decision" in value else None


def last_eval_status(
    summary: Mapping[str, Any] | None, outcome: str, message: str, job: str, hash_: str, now: str
) -> dict[str, Any]:
    """``status.lastEval``: the route that decided (its figures at the top level) and every
    route's figures, as readable strings."""
    status: dict[str, Any] = {
        "hash": hash_,
        "decision": outcome,
        "reasons": [message][:1]
        if not summary
        else [str(r) for r in summary.get("reasons") or []][:10],
        "job": job,
        "finishedAt": now,
    }
    summary = summary or {}
    routes = summary.get("routes") or {}
    deciding = [str(r) for r in summary.get("decidingRoutes") or [] if r in routes]
    if summary.get("badInput"):
        status["badInput"] = True
    if routes:
        name = (deciding or list(routes))[0]
        status["decidingRoute"] = ", ".join(summary.get("decidingRoutes") or [name])
        status.update(_route_status(routes[name]))
        status["routes"] = [
            {"name": str(n), **_route_status(f), "decision": str(f.get("decision", ""))}
            for n, f in routes.items()
        ]
        changes = summary.get("changes") or {}
        status["routes"] += [
            {"name": str(n), "change": str(c)} for n, c in changes.items() if n not in routes
        ]
        for entry in status["routes"]:
            if entry["name"] in changes:
                entry["change"] = str(changes[entry["name"]])
    return {k: v for k, v in status.items() if v is not None}


def _route_status(figures: Mapping[str, Any]) -> dict[str, Any]:
    """One route's figures of the eval summary as status strings."""
    found = {
        "quality": _interval(figures.get("quality")),
        "baselineQuality": _interval(figures.get("baselineQuality")),
        "qualityDrop": _interval(figures.get("qualityDrop")),
        "costPerItem": _usd(figures.get("costPerItem")),
        "baselineCostPerItem": _usd(figures.get("baselineCostPerItem")),
        "saving": _pct(figures.get("saving")),
        "escalationRate": _pct(figures.get("escalationRate")),
        "latencyP50": _ms(figures.get("p50Seconds")),
        "latencyP95": _ms(figures.get("p95Seconds")),
        "items": int(figures.get("items") or 0),
        # The item set every figure is over (pairs with a baseline); "graded" in older evals.
        "graded": int(figures.get("counted", figures.get("graded")) or 0),
        "duplicates": int(figures.get("duplicates") or 0),
    }
    return {k: v for k, v in found.items() if v is not None}


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
