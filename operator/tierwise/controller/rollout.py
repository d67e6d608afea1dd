"""Eval-gated rollout: promote a policy's candidate config, or evaluate it in a Job first.

``reconcile`` is the hook ``sync_policy`` calls where it used to write the live ConfigMap:
without ``spec.evaluation`` it still does exactly that; with it, it reads the live ConfigMap
and the policy's eval Jobs, asks ``rollout_state.next_step`` what to do, and does it. The
kopf handler below re-syncs a policy when one of its eval Jobs changes, so a finished eval
is decided at once rather than at the next resync.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes.client import BatchV1Api
from kubernetes.client.rest import ApiException

from tierwise import GROUP, VERSION
from tierwise.api import Resource
from tierwise.controller import kube, metrics
from tierwise.controller.conditions import Condition, now_iso
from tierwise.controller.names import (
    CANDIDATE_HASH_ANNOTATION,
    CONFIG_HASH_ANNOTATION,
    config_map_name,
)
from tierwise.controller.objects import Observed, by_name
from tierwise.controller.ownership import (
    NotOwned,
    ensure_owned,
    ensure_policy_owns,
    managed_by_tierwise,
    owned_by_kind,
)
from tierwise.controller.rollout_state import (
    CONFIG_ERROR,
    EVALUATING,
    PAUSE_ANNOTATION,
    PAUSED_VALUE,
    PROMOTE_ANNOTATION,
    PROMOTING,
    REEVALUATE_ANNOTATION,
    ROLLOUT_FIELDS,
    UNGATED,
    JobView,
    Situation,
    Step,
    candidate_identity,
    last_eval_status,
    next_step,
)
from tierwise.evals.gate import PROMOTED
from tierwise.evals.job import (
    CANDIDATE_ANNOTATION,
    COMPONENT,
    COMPONENT_LABEL,
    CONTAINER,
    EVAL_SERVICE_ACCOUNT,
    POLICY_LABEL,
    JobSettings,
    dataset_mount,
    job_manifests,
    job_name,
    owned_by,
    service_account,
)
from tierwise.evals.plan import plan_for_policy, strongest_tier_config
from tierwise.render import CONFIG_KEY, RenderResult, SecretKeyEnv, api_key_env

log = logging.getLogger("tierwise.rollout")

PROMOTED_CONDITION = "Promoted"
PROGRESSING_CONDITION = "Progressing"

Emit = Callable[[Mapping[str, Any], str, str, str], None]


@dataclass(frozen=True)
class RolloutStatus:
    """What the rollout contributes to the policy's status: its own fields (written by the
    rollout itself), its conditions, and the live ConfigMap's state."""

    fields: dict[str, Any]
    conditions: list[Condition] = field(default_factory=list)
    has_config: bool = False
    # The config hash in the live ConfigMap (status.configHash): the promoted candidate's
    # config, without its key references.
    config_hash: str | None = None


class LiveWriter(Protocol):
    """The reconciler: it owns writing the live ConfigMap, posting Events, and the eval Jobs'
    settings (the operator's options, handed over through kopf's memo)."""

    emit: Emit
    evals: JobSettings

    def write_live_config(
        self, policy: Observed, result: RenderResult, config_map: Mapping[str, Any] | bool | None
    ) -> bool: ...


def identity(result: RenderResult) -> str:
    """The candidate's identity: its config hash and the Secret references it reads keys
    from (``rollout_state.candidate_identity``)."""
    assert result.document is not None
    refs = ((k.env, k.secret_name, k.secret_key) for k in result.key_envs)
    return candidate_identity(result.document["hash"], refs)


def reconcile(
    policy: Observed,
    result: RenderResult,
    tiers: Iterable[Observed],
    writer: LiveWriter,
    config_map: Mapping[str, Any] | bool | None = True,
) -> RolloutStatus:
    """Promote ``result`` (the candidate) to the live ConfigMap, or evaluate it first.

    ``config_map``: the live ConfigMap as listed by the caller (None: it does not exist), or
    True to read it. ``writer``: the reconciler, which owns writing the live ConfigMap.
    """
    document = result.document
    assert document is not None and policy.resource is not None
    evaluation = policy.spec.evaluation
    previous = dict(policy.status.get("rollout") or {})
    if evaluation is None:
        writer.write_live_config(policy, result, config_map)
        message = "no spec.evaluation: every rendered config goes live at once"
        fields = {
            "candidateHash": identity(result),
            "promotedHash": identity(result),
            "rollout": _rollout(previous, UNGATED, "NoEvaluation", message),
        }
        # No separate write: the reconciler's one status patch carries these fields
        # (adjust_status), so a changed policy costs one ConfigMap and one status write.
        return RolloutStatus(
            fields,
            [
                Condition(PROMOTED_CONDITION, True, "NoEvaluation", message),
                Condition(PROGRESSING_CONDITION, False, "NoEvaluation", message),
            ],
            has_config=True,
            config_hash=document["hash"],
        )
    namespace, name = policy.namespace, policy.name
    # The observed status may predate our own last write (the watch lags): the rollout's
    # record (what was decided for which hash) is read from the API server itself, so a
    # decision is taken once and never overwritten by a stale copy.
    current, generation = _current_status(namespace, name)
    previous = dict(current.get("rollout") or {})
    if policy.generation is not None and generation is not None and policy.generation < generation:
        # This body predates a newer spec (an index or a listing that lags): acting on it
        # would start or delete Jobs for a stale candidate. The newer spec's event follows.
        return _unchanged(current)
    if config_map is True:
        live = kube.read_config_map(namespace, config_map_name(name))
    else:
        live = dict(config_map) if isinstance(config_map, Mapping) else None
    ensure_policy_owns(policy, live)  # someone else's config is no baseline, and not ours to write
    candidate = identity(result)
    promoted_hash = _live_identity(live, candidate, document["hash"])
    jobs = _eval_jobs(namespace, name)
    annotations = policy.annotations
    situation = Situation(
        candidate_hash=candidate,
        promoted_hash=promoted_hash,
        previous=previous,
        jobs=[_view(job, candidate) for job in jobs],
        on_new_policy=evaluation.on_new_policy,
        paused=annotations.get(PAUSE_ANNOTATION, "").strip().lower() == PAUSED_VALUE,
        promote_hash=annotations.get(PROMOTE_ANNOTATION),
        timeout_seconds=evaluation.timeout_seconds,
        reevaluate=annotations.get(REEVALUATE_ANNOTATION),
    )
    step = next_step(situation, job_name(name, candidate))
    by_tier = by_name(tiers)
    for job in step.delete_jobs:
        _delete_job(namespace, job)
    if step.reason == "EvalRunning" and step.job is not None:
        running = next(j for j in jobs if j["metadata"]["name"] == step.job)
        _adopt(policy, result, by_tier, live, running, writer.evals)
    if step.start_job:
        made = _manifests(policy, result, by_tier, live, writer.evals)
        problem = _start_job(namespace, made, writer.evals.service_account, policy.uid)
        if problem is not None:
            step = Step(
                EVALUATING, "EvalNotStarted", problem, event=("Warning", "EvalNotStarted", problem)
            )
    fields = _fields(step, previous, candidate, promoted_hash, current)
    if step.decided and step.reason not in ("BreakGlass", "FirstConfig"):
        metrics.EVAL_OUTCOMES.labels(namespace, name, step.phase).inc()
    if step.decided:
        # Record the decision before acting on it: a restart then finishes it, never redoes it.
        # A promotion is recorded as Promoting: Promoted is written only once the live
        # ConfigMap holds the config, so no reader sees Promoted next to the old hash.
        record = fields
        if step.promote:
            record = {**fields, "rollout": {**fields["rollout"], "phase": PROMOTING}}
        kube.patch_status("cascadepolicies", namespace, name, record)
    if step.promote or (promoted_hash == candidate and not _has_identity(live)):
        # (A live ConfigMap written before key references were part of the candidate gets
        # the candidate's identity once, so a later change to them is seen.)
        writer.write_live_config(policy, result, live)
        fields["promotedHash"] = candidate
    _write_fields(policy, fields, current)
    if step.event is not None and (step.decided or _changed(previous, step)):
        writer.emit(policy.reference(), *step.event)
    has_config = live is not None or step.promote
    live_config = document["hash"] if step.promote else _live_hash(live)
    return RolloutStatus(fields, _conditions(step, fields), has_config, live_config)


def _write_fields(
    policy: Observed, fields: Mapping[str, Any], current: Mapping[str, Any] | None = None
) -> None:
    """Patch the rollout's own status fields where they differ from the current ones (the
    reconciler writes only its own fields, and leaves these to the rollout)."""
    status = policy.status if current is None else current
    changed = {k: v for k, v in fields.items() if k in ROLLOUT_FIELDS and status.get(k) != v}
    if changed:
        kube.patch_status("cascadepolicies", policy.namespace, policy.name, changed)


def adjust_status(status: dict[str, Any], gated: RolloutStatus) -> None:
    """The reconciler's status, corrected for a gated policy: ``configHash`` names what the
    live ConfigMap holds (nothing yet for a new, unpromoted policy), and Ready says so."""
    status.update({k: v for k, v in gated.fields.items() if k in ROLLOUT_FIELDS})
    if gated.config_hash is None:
        status.pop("configHash", None)
    else:
        status["configHash"] = gated.config_hash
    explain_ready(status)


def explain_ready(status: dict[str, Any]) -> None:
    """Ready says the config was rendered; while a candidate is not live, say what is."""
    candidate, live = status.get("candidateHash"), status.get("promotedHash")
    if candidate is None or candidate == live:
        return
    for condition in status.get("conditions") or []:
        if condition["type"] == "Ready" and condition["status"] == "True":
            condition["message"] = (
                f"router config {candidate} rendered; the live ConfigMap holds "
                f"{live or 'no config yet'} (see the Promoted condition)"
            )


def _rollout(
    previous: Mapping[str, Any], phase: str, reason: str, message: str, **extra: Any
) -> dict[str, Any]:
    changed = previous.get("phase") != phase or not previous.get("lastTransitionTime")
    rollout = {
        **{k: v for k, v in previous.items() if k in ("decidedHash", "job", "reevaluated")},
        "phase": phase,
        "reason": reason,
        "message": message[:2000],
        "lastTransitionTime": now_iso() if changed else previous["lastTransitionTime"],
    }
    rollout.update({k: v for k, v in extra.items() if v is not None})
    return rollout


def _changed(previous: Mapping[str, Any], step: Step) -> bool:
    return (previous.get("phase"), previous.get("reason"), previous.get("job")) != (
        step.phase,
        step.reason,
        step.job or previous.get("job"),
    )


def _fields(
    step: Step,
    previous: Mapping[str, Any],
    candidate: str,
    promoted: str | None,
    status: Mapping[str, Any],
) -> dict[str, Any]:
    extra: dict[str, Any] = {"job": step.job, **step.extra}
    if step.decided:
        extra["decidedHash"] = candidate
    rollout = _rollout(previous, step.phase, step.reason, step.message, **extra)
    if step.clear_decision:
        rollout["decidedHash"] = None  # null deletes it in the status merge patch
    fields: dict[str, Any] = {"candidateHash": candidate, "rollout": rollout}
    # configHash is what the live ConfigMap holds: nothing yet for a new, unpromoted policy
    # (left out, never null: a null would be written, dropped, and differ again next time).
    if promoted is not None:
        fields["promotedHash"] = promoted
    if step.decided and step.reason not in ("BreakGlass", "FirstConfig"):
        last = last_eval_status(
            step.summary, step.phase, step.message, step.job or "", candidate, now_iso()
        )
        fields["lastEval"] = last
        if "escalationRate" in last:
            fields["escalationRate"] = last["escalationRate"]
        if "saving" in last:
            fields["estimatedSavings"] = last["saving"]
    elif status.get("lastEval"):
        fields["lastEval"] = status["lastEval"]
    return fields


def _conditions(step: Step, fields: Mapping[str, Any]) -> list[Condition]:
    live = fields.get("promotedHash")
    if step.phase == PROMOTED:
        promoted = Condition(PROMOTED_CONDITION, True, step.reason, f"config {live} is live")
    else:
        promoted = Condition(
            PROMOTED_CONDITION,
            False,
            step.reason,
            f"candidate {fields['candidateHash']} is not live ({step.phase.lower()}): {step.message}"
            + (f"; live config {live}" if live else "; no config is live yet"),
        )
    progressing = Condition(
        PROGRESSING_CONDITION,
        step.phase == EVALUATING,
        step.reason,
        step.message,
    )
    return [promoted, progressing]


def _live_hash(live: Mapping[str, Any] | None) -> str | None:
    if live is None:
        return None
    return ((live.get("metadata") or {}).get("annotations") or {}).get(CONFIG_HASH_ANNOTATION)


def _live_identity(live: Mapping[str, Any] | None, candidate: str, config: str) -> str | None:
    """The identity of the live candidate, from its ConfigMap. One written before key
    references were part of the identity has only the config hash: its references are taken
    to be the candidate's when the configs agree (an upgrade re-evaluates nothing), and a
    config that differs is a new candidate either way."""
    annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
    if CANDIDATE_HASH_ANNOTATION in annotations:
        return str(annotations[CANDIDATE_HASH_ANNOTATION])
    live_config = _live_hash(live)
    return candidate if live_config is not None and live_config == config else live_config


def _has_identity(live: Mapping[str, Any] | None) -> bool:
    annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
    return live is None or CANDIDATE_HASH_ANNOTATION in annotations


def _current_status(namespace: str, name: str) -> tuple[dict[str, Any], int | None]:
    """The policy's status and generation as the API server has them now."""
    try:
        current = kube.custom().get_namespaced_custom_object(
            GROUP, VERSION, namespace, "cascadepolicies", name
        )
    except ApiException as exc:
        if exc.status != 404:
            raise
        return {}, None
    return dict(current.get("status") or {}), (current.get("metadata") or {}).get("generation")


def _unchanged(current: Mapping[str, Any]) -> RolloutStatus:
    """The rollout's status as it stands, for a sync that must not act."""
    fields = {k: current[k] for k in ROLLOUT_FIELDS if k in current}
    conditions = [
        Condition(c["type"], c.get("status") == "True", c.get("reason", ""), c.get("message", ""))
        for c in current.get("conditions") or []
        if c.get("type") in (PROMOTED_CONDITION, PROGRESSING_CONDITION)
    ]
    return RolloutStatus(
        fields,
        conditions,
        has_config="promotedHash" in current,
        config_hash=current.get("configHash"),
    )


# --- Jobs -------------------------------------------------------------------------------------


def _batch() -> BatchV1Api:
    return BatchV1Api(kube.client())


def _eval_jobs(namespace: str, policy: str) -> list[dict[str, Any]]:
    selector = f"{COMPONENT_LABEL}={COMPONENT},{POLICY_LABEL}={policy}"
    jobs = _batch().list_namespaced_job(namespace, label_selector=selector)
    return [kube.client().sanitize_for_serialization(j) for j in jobs.items]


def _view(job: Mapping[str, Any], candidate: str) -> JobView:
    meta = job["metadata"]
    config_hash = (meta.get("annotations") or {}).get(CANDIDATE_ANNOTATION, "")
    conditions = {
        c["type"]: c
        for c in (job.get("status") or {}).get("conditions") or []
        if c.get("status") == "True"
    }
    if meta.get("deletionTimestamp"):
        return JobView(meta["name"], config_hash, "deleting")
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        state, reason = "succeeded", ""
    elif "Failed" in conditions or "FailureTarget" in conditions:
        failed = conditions.get("Failed") or conditions["FailureTarget"]
        state, reason = "failed", failed.get("reason", "")
    elif config_hash == candidate and (waiting := _config_error(meta["namespace"], meta["name"])):
        # Its pod cannot start (a Secret or key it names is missing): decided now, not at
        # the deadline. Only the candidate's running Job is looked at.
        return JobView(meta["name"], config_hash, "failed", CONFIG_ERROR, waiting)
    else:
        return JobView(meta["name"], config_hash, "running")
    # Only the candidate's finished Job is read: its pod's termination message.
    message = (
        _termination_message(meta["namespace"], meta["name"]) if config_hash == candidate else ""
    )
    return JobView(meta["name"], config_hash, state, reason, message)


def _termination_message(namespace: str, job: str) -> str:
    pods = kube.list_pods(namespace, f"job-name={job}")
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
    for pod in reversed(pods):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated")
            if status.get("name") == CONTAINER and terminated:
                return str(terminated.get("message") or "")
    return ""


def _config_error(namespace: str, job: str) -> str:
    """The kubelet's message when the Job's eval container cannot be created for want of a
    Secret or key (waiting reason CreateContainerConfigError), else ''."""
    for pod in kube.list_pods(namespace, f"job-name={job}"):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            if status.get("name") == CONTAINER and waiting.get("reason") == CONFIG_ERROR:
                return str(waiting.get("message") or CONFIG_ERROR)
    return ""


def _delete_job(namespace: str, name: str) -> None:
    try:
        _batch().delete_namespaced_job(name, namespace, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise
    log.info("deleted superseded eval Job %s/%s", namespace, name)


def _manifests(
    policy: Observed,
    result: RenderResult,
    tiers: Mapping[str, Resource],
    live: Mapping[str, Any] | None,
    settings: JobSettings,
) -> tuple[dict[str, Any], dict[str, Any]] | str:
    """The candidate's Job and inputs ConfigMap, or why they cannot be made yet."""
    document = result.document
    assert document is not None
    namespace = policy.namespace
    assert policy.resource is not None
    planned = plan_for_policy(policy.resource, tiers, lambda ref: dataset_mount(ref.name, ref.key))
    if planned.plan is None:
        return "cannot start the eval: " + "; ".join(p.message for p in planned.problems)
    baseline, kind = _baseline(live, document)
    # One variable per tier: where the baseline and the candidate name the same tier, the
    # candidate's reference wins (the last one kept), as production will read it from there.
    key_envs = [*_baseline_keys(baseline, tiers), *planned.key_envs, *result.key_envs]
    evaluation = policy.spec.evaluation
    refs = [evaluation.dataset_for(r.name).config_map_ref for r in evaluation.routes]
    datasets = [(ref.name, ref.key) for ref in refs]
    for name, key in dict.fromkeys(datasets):
        # GitOps may apply the dataset after the policy: wait for it rather than start a Job
        # that would sit until its deadline.
        found = kube.read_config_map(namespace, name)
        if found is None:
            return (
                f"dataset ConfigMap {name!r} not found in namespace {namespace!r}; waiting for it"
            )
        if key not in (found.get("data") or {}):
            return f"dataset ConfigMap {name!r} has no key {key!r}; waiting for it"
    return job_manifests(
        policy.reference(),
        planned.plan,
        document,
        baseline,
        kind,
        key_envs,
        datasets,
        settings,
        identity=identity(result),
    )


def _start_job(
    namespace: str,
    made: tuple[dict[str, Any], dict[str, Any]] | str,
    service_account: str,
    policy_uid: str,
) -> str | None:
    """Create the candidate's Job and its inputs (``_manifests``); a message when it cannot
    be started (also when a Job, ConfigMap or ServiceAccount of that name is not ours)."""
    if isinstance(made, str):
        return made
    job, inputs = made
    name = job["metadata"]["name"]
    try:
        _ensure_service_account(namespace, service_account)
        # The inputs ConfigMap is made after the Job (it is owned by it): a team's ConfigMap
        # of that name would be mounted as the eval's inputs, so look before starting.
        found = kube.read_config_map(namespace, name)
        if not owned_by_kind(found, "Job", name):
            raise NotOwned("ConfigMap", namespace, name, f"eval Job {name}")
        try:
            created = _batch().create_namespaced_job(namespace, job)
            created_job = kube.client().sanitize_for_serialization(created)
        except ApiException as exc:
            if exc.status != 409:
                raise
            created_job = kube.client().sanitize_for_serialization(
                _batch().read_namespaced_job(name, namespace)
            )
            ensure_owned(created_job, "Job", policy_uid, "this CascadePolicy")
        _create_inputs(inputs, created_job)
    except NotOwned as exc:
        return f"cannot start the eval: {exc}"
    log.info("started eval Job %s/%s", namespace, name)
    return None


def _create_inputs(inputs: dict[str, Any], job: Mapping[str, Any]) -> None:
    meta = inputs["metadata"]
    try:
        kube.core().create_namespaced_config_map(meta["namespace"], owned_by(inputs, job))
    except ApiException as exc:
        if exc.status != 409:
            raise
        found = kube.read_config_map(meta["namespace"], meta["name"])
        ensure_owned(found, "ConfigMap", job["metadata"]["uid"], f"eval Job {meta['name']}")


def _adopt(
    policy: Observed,
    result: RenderResult,
    tiers: Mapping[str, Resource],
    live: Mapping[str, Any] | None,
    job: Mapping[str, Any],
    settings: JobSettings,
) -> None:
    """A running Job found (e.g. after a restart): make sure its inputs exist, since an
    operator stopped between creating the Job and its ConfigMap leaves the pod waiting."""
    meta = job["metadata"]
    if kube.read_config_map(meta["namespace"], meta["name"]) is not None:
        return
    made = _manifests(policy, result, tiers, live, settings)
    if not isinstance(made, str):
        _create_inputs(made[1], job)
        log.info("created the missing inputs of eval Job %s/%s", meta["namespace"], meta["name"])


def _baseline(
    live: Mapping[str, Any] | None, candidate: Mapping[str, Any]
) -> tuple[dict[str, Any], str]:
    data = (live or {}).get("data") or {}
    if CONFIG_KEY in data:
        try:
            return json.loads(data[CONFIG_KEY]), "promoted"
        except ValueError:
            log.warning("the live config is not valid JSON; evaluating against the strongest tiers")
    return strongest_tier_config(candidate), "strongest"


def _baseline_keys(
    baseline: Mapping[str, Any], tiers: Mapping[str, Resource]
) -> list[SecretKeyEnv]:
    """Keys of the baseline's tiers, from the ModelTiers of the same name today."""
    keys = []
    for name, tier in (baseline.get("tiers") or {}).items():
        resource = tiers.get(name)
        ref = resource.spec.api_key_secret_ref if resource is not None else None
        if tier.get("apiKeyEnv") and ref is not None:
            keys.append(SecretKeyEnv(api_key_env(name), ref.name, ref.key))
    return keys


def _ensure_service_account(namespace: str, name: str) -> None:
    """Create the eval ServiceAccount. One of the default name that Tierwise did not make is
    someone else's (it may be bound to roles): never used. A custom name
    (``--eval-service-account``) is the installer's choice and used as it is."""
    account = service_account(namespace, name)
    try:
        kube.core().create_namespaced_service_account(namespace, account)
    except ApiException as exc:
        if exc.status != 409:
            raise
        if name == EVAL_SERVICE_ACCOUNT:
            found = kube.client().sanitize_for_serialization(
                kube.core().read_namespaced_service_account(name, namespace)
            )
            if not managed_by_tierwise(found):
                raise NotOwned("ServiceAccount", namespace, name, "Tierwise") from None
