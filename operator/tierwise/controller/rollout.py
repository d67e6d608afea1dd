"""Eval-gated rollout: promote a policy's candidate config, or evaluate it in a Job first.

``reconcile`` is the hook ``sync_policy`` calls where it used to write the live ConfigMap:
without ``spec.evaluation`` it still does exactly that; with it, it reads the live ConfigMap
and the policy's eval Jobs, asks ``rollout_state.next_step`` what to do, and does it. The
kopf handler below re-syncs a policy when one of its eval Jobs changes, so a finished eval
is decided at once rather than at the next resync.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes.client import BatchV1Api
from kubernetes.client.rest import ApiException

from tierwise import GROUP, VERSION
from tierwise.api import Resource
from tierwise.controller import kube, metrics
from tierwise.controller.conditions import Condition, now_iso
from tierwise.controller.names import config_map_name, promoted_config_map_name
from tierwise.controller.objects import Observed, by_name
from tierwise.controller.ownership import (
    NotOwned,
    ensure_owned,
    ensure_policy_owns,
    managed_by_tierwise,
    owned_by_kind,
)
from tierwise.controller.pods import PodView
from tierwise.controller.reconcile import holds_config
from tierwise.controller.rollout_state import (
    CONFIG_ERROR,
    DATASET_ANNOTATION,
    DATASET_MISSING,
    EVAL_JOB_NOT_CREATED,
    EVAL_NOT_STARTED,
    EVALUATING,
    NO_DATASET,
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
    dataset_digest,
    key_refs_digest,
    last_eval_status,
    next_step,
    not_started,
)
from tierwise.controller.shadow import SHADOW_REASONS, SHADOW_STARTED, shadow_stage
from tierwise.controller.shadow_state import SHADOWING, without_offline_eval
from tierwise.evals.gate import INCONCLUSIVE, PROMOTED, REJECTED
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
from tierwise.render import RenderResult, SecretKeyEnv, api_key_env

log = logging.getLogger("tierwise.rollout")

PROMOTED_CONDITION = "Promoted"
# What status.rollout remembers from one sync to the next, whatever the phase.
KEPT_RECORDS = (
    "decidedHash",
    "decidedKeys",
    "promotedKeys",
    "decidedDataset",
    "promotedDataset",
    "job",
    "reevaluated",
    "forcePromoted",
)
PROGRESSING_CONDITION = "Progressing"

Emit = Callable[[Mapping[str, Any], str, str, str], None]


@dataclass(frozen=True)
class RolloutStatus:
    """What the rollout contributes to the policy's status: its own fields (written by the
    rollout itself), its conditions, and the live ConfigMap's state."""

    fields: dict[str, Any]
    conditions: list[Condition] = field(default_factory=list)
    has_config: bool = False
    live_hash: str | None = None  # the config the live ConfigMap holds after this sync
    no_live: str | None = None  # why no promoted config is live (Ready=False, NoLiveConfig)


class LiveWriter(Protocol):
    """The reconciler: it owns writing the live ConfigMap (and the copy of the promoted
    config), posting Events, and the eval Jobs' settings (the operator's options, handed
    over through kopf's memo)."""

    emit: Emit
    evals: JobSettings
    datasets: DatasetDigests

    def selected_pods(self, policy: Observed) -> Sequence[PodView]:
        """The pods the policy selects, from the operator's pod index."""

    def write_live_config(
        self,
        policy: Observed,
        document: Mapping[str, Any],
        config_map: Mapping[str, Any] | bool | None,
        *,
        restore: bool = False,
        shadow: str | None = None,
    ) -> bool: ...

    def live_holds(
        self,
        policy: Observed,
        config_hash: str,
        config_map: Mapping[str, Any] | bool | None,
        shadow: str | None = None,
    ) -> bool: ...

    def keep_promoted_copy(self, policy: Observed, document: Mapping[str, Any]) -> None: ...


# On an eval Job: the digest of the key references it reads (``keys_of``).
KEYS_ANNOTATION = "tierwise.dev/key-refs-digest"


def keys_of(result: RenderResult) -> str:
    """The digest of the Secret references the candidate reads keys from ("" for none)."""
    return key_refs_digest((k.env, k.secret_name, k.secret_key) for k in result.key_envs)


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
        writer.write_live_config(policy, document, config_map)
        message = "no spec.evaluation: every rendered config goes live at once"
        fields = {
            "candidateHash": document["hash"],
            "promotedHash": document["hash"],
            "rollout": _rollout(
                previous, UNGATED, "NoEvaluation", message, promotedKeys=keys_of(result)
            ),
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
            live_hash=document["hash"],
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
    full = config_map is True
    if full:
        live = kube.read_config_map(namespace, config_map_name(name))
    else:
        live = dict(config_map) if isinstance(config_map, Mapping) else None
    ensure_policy_owns(policy, live)  # someone else's config is no baseline, and not ours to write
    # What was promoted is the status's record, never the live ConfigMap's word: a deleted
    # or hand-edited live ConfigMap is not "a new policy", nor an approval.
    recorded: str | None = current.get("promotedHash")
    # The candidate is its config and the Secret references it reads keys from: a new
    # apiKeySecretRef alone is a new candidate. The status records config hashes, and the
    # references beside them (rollout.decidedKeys, promotedKeys); a status from before those
    # records takes the candidate's, so an upgrade evaluates nothing new.
    keys = keys_of(result)
    candidate = candidate_identity(document["hash"], keys)
    live_keys = previous.get("promotedKeys", keys)
    promoted_identity = None if recorded is None else candidate_identity(recorded, live_keys)
    decided_view = dict(previous)
    if previous.get("decidedHash"):
        decided_view["decidedHash"] = candidate_identity(
            previous["decidedHash"], previous.get("decidedKeys", keys)
        )
    datasets = _datasets(namespace, evaluation, writer.datasets)
    jobs = _eval_jobs(namespace, name)
    annotations = policy.annotations
    situation = Situation(
        candidate_hash=candidate,
        promoted_hash=promoted_identity,
        config_hash=document["hash"],
        previous=decided_view,
        jobs=[_view(job, candidate) for job in jobs],
        on_new_policy=evaluation.on_new_policy,
        paused=annotations.get(PAUSE_ANNOTATION, "").strip().lower() == PAUSED_VALUE,
        promote_hash=annotations.get(PROMOTE_ANNOTATION),
        timeout_seconds=evaluation.timeout_seconds,
        reevaluate=annotations.get(REEVALUATE_ANNOTATION),
        dataset_digest=datasets.digest,
    )
    promoted = _PromotedConfig(policy, recorded, document, live if full else None)
    if not evaluation.offline_routes():  # no eval Job: the shadow stage alone gates
        without = without_offline_eval(evaluation, document, promoted.baseline())
        situation = dataclasses.replace(situation, without_eval=without)
    step = _naming_config(next_step(situation, job_name(name, candidate)), candidate, document)
    by_tier = by_name(tiers)
    stage = shadow_stage(
        policy,
        evaluation,
        document,
        promoted.baseline(),
        current,
        step,
        datasets,
        pods=lambda: writer.selected_pods(policy),
        tiers=by_tier,
    )
    step = stage.step
    for job in step.delete_jobs:
        _delete_job(namespace, job)
    if step.reason == "EvalRunning" and step.job is not None:
        running = next(j for j in jobs if j["metadata"]["name"] == step.job)
        _adopt(policy, result, by_tier, promoted.baseline(), running, writer.evals, datasets)
    if step.start_job:
        made = _manifests(policy, result, by_tier, promoted.baseline(), writer.evals, datasets)
        problem = _start_job(namespace, made, writer.evals.service_account, policy.uid)
        if problem is not None:
            step = not_started(*problem, previous, datetime.now(UTC))
    live_hash: str | None = document["hash"]
    if not step.promote:
        if recorded == document["hash"]:
            writer.keep_promoted_copy(policy, document)  # e.g. promoted by an older operator
        live_hash = _keep_live(writer, promoted, live, config_map, stage.document)
    fields = _fields(step, previous, document["hash"], recorded, current)
    if stage.status is not None:
        fields["shadow"] = stage.status
    if step.decided:
        fields["rollout"]["decidedKeys"] = keys
    if step.promote:
        fields["rollout"]["promotedKeys"] = keys
    no_live = None
    if live_hash is None:
        no_live = _no_live_message(recorded, step, live is not None)
        # The figures describe a candidate that is not serving: nothing is saved yet.
        fields.update(estimatedSavings=None, escalationRate=None)
    if step.decided and step.reason not in ("BreakGlass", "FirstConfig", NO_DATASET):
        metrics.EVAL_OUTCOMES.labels(namespace, name, step.phase).inc()
    if step.decided:
        # Record the decision before acting on it: a restart then finishes it, never redoes it.
        # A promotion is recorded as Promoting: Promoted is written only once the live
        # ConfigMap holds the config, so no reader sees Promoted next to the old hash.
        record = fields
        if step.promote:
            record = {**fields, "rollout": {**fields["rollout"], "phase": PROMOTING}}
        kube.patch_status("cascadepolicies", namespace, name, record)
        current = {**current, **record}
    if step.promote:
        # The operator's own copy first: the live ConfigMap can always be rebuilt from it.
        writer.keep_promoted_copy(policy, document)
        writer.write_live_config(policy, document, live)
        fields["promotedHash"] = document["hash"]
    _write_fields(policy, fields, current)
    if step.event is not None and (step.decided or _changed(previous, step)):
        writer.emit(policy.reference(), *step.event)
    return RolloutStatus(
        fields,
        _conditions(step, fields),
        has_config=live_hash is not None,
        live_hash=live_hash,
        no_live=no_live,
    )


def _naming_config(step: Step, candidate: str, document: Mapping[str, Any]) -> Step:
    """The step's words name the config hash, as status.candidateHash does, not the
    candidate's identity (config and key references) that the decision compares."""
    if candidate == document["hash"]:
        return step
    event = step.event
    if event is not None:
        event = (event[0], event[1], event[2].replace(candidate, document["hash"]))
    return dataclasses.replace(
        step, message=step.message.replace(candidate, document["hash"]), event=event
    )


def _no_live_message(recorded: str | None, step: Step, exists: bool) -> str:
    waiting = f"the candidate is {step.phase.lower()}: {step.message}"
    if recorded is None:
        return f"no config has passed its eval yet; {waiting}"
    lost = "holds a config that is not the promoted one" if exists else "was deleted"
    return (
        f"the live ConfigMap {lost}, and promoted config {recorded} cannot be rebuilt (its "
        f"copy is gone and the spec no longer renders it); nothing is live until an eval "
        f"passes; {waiting}"
    )


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
    for key, value in gated.fields.items():
        if key not in ROLLOUT_FIELDS:
            continue
        if value is None:
            status.pop(key, None)
        else:
            status[key] = value
    if gated.live_hash is None:
        status.pop("configHash", None)
    else:
        status["configHash"] = gated.live_hash
    explain_ready(status)


def explain_ready(status: dict[str, Any]) -> None:
    """Ready says the config was rendered; while a candidate is not live, say what is."""
    candidate, live = status.get("candidateHash"), status.get("configHash")
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
        **{k: v for k, v in previous.items() if k in KEPT_RECORDS},
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
    offline = step.decided and step.reason not in (
        "BreakGlass",
        "FirstConfig",
        NO_DATASET,
        *SHADOW_REASONS,
    )
    if offline or (step.reason == SHADOW_STARTED and step.summary is not None):
        # the offline eval's figures
        outcome = PROMOTED if step.reason == SHADOW_STARTED else step.phase
        last = last_eval_status(
            step.summary, outcome, step.message, step.job or "", candidate, now_iso()
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
    live, candidate = fields.get("promotedHash"), fields["candidateHash"]
    if step.phase == PROMOTED:
        promoted = Condition(PROMOTED_CONDITION, True, step.reason, f"config {live} is live")
    elif live == candidate and step.phase not in (REJECTED, INCONCLUSIVE):
        promoted = Condition(
            PROMOTED_CONDITION, True, step.reason, f"config {live} is live; {step.message}"
        )
    elif live == candidate:
        promoted = Condition(
            PROMOTED_CONDITION,
            False,
            step.reason,
            f"live config {live} was evaluated again on a changed dataset "
            f"({step.phase.lower()}): {step.message}; it stays live until a change passes",
        )
    else:
        promoted = Condition(
            PROMOTED_CONDITION,
            False,
            step.reason,
            f"candidate {candidate} is not live ({step.phase.lower()}): {step.message}"
            + (f"; live config {live}" if live else "; no config is live yet"),
        )
    moving = step.phase in (EVALUATING, SHADOWING) if step.progressing is None else step.progressing
    progressing = Condition(PROGRESSING_CONDITION, moving, step.reason, step.message)
    return [promoted, progressing]


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
    live_hash = current.get("configHash")
    return RolloutStatus(fields, conditions, has_config=live_hash is not None, live_hash=live_hash)


# --- Jobs -------------------------------------------------------------------------------------


def _batch() -> BatchV1Api:
    return BatchV1Api(kube.client())


def _eval_jobs(namespace: str, policy: str) -> list[dict[str, Any]]:
    selector = f"{COMPONENT_LABEL}={COMPONENT},{POLICY_LABEL}={policy}"
    jobs = _batch().list_namespaced_job(namespace, label_selector=selector)
    return [kube.client().sanitize_for_serialization(j) for j in jobs.items]


def _view(job: Mapping[str, Any], candidate: str) -> JobView:
    meta = job["metadata"]
    annotations = meta.get("annotations") or {}
    # The Job's candidate: its config hash and key references (KEYS_ANNOTATION).
    config_hash = candidate_identity(
        annotations.get(CANDIDATE_ANNOTATION, ""), annotations.get(KEYS_ANNOTATION, "")
    )
    digest = annotations.get(DATASET_ANNOTATION, "")
    conditions = {
        c["type"]: c
        for c in (job.get("status") or {}).get("conditions") or []
        if c.get("status") == "True"
    }
    if meta.get("deletionTimestamp"):
        return JobView(meta["name"], config_hash, "deleting", dataset_digest=digest)
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        state, reason = "succeeded", ""
    elif "Failed" in conditions or "FailureTarget" in conditions:
        failed = conditions.get("Failed") or conditions["FailureTarget"]
        state, reason = "failed", failed.get("reason", "")
    elif config_hash == candidate and (waiting := _config_error(meta["namespace"], meta["name"])):
        # Its pod cannot start (a Secret or key it names is missing): decided now, not at
        # the deadline. Only the candidate's running Job is looked at.
        return JobView(meta["name"], config_hash, "failed", CONFIG_ERROR, waiting, digest)
    else:
        return JobView(meta["name"], config_hash, "running", dataset_digest=digest)
    # Only the candidate's finished Job is read: its pod's termination message.
    message = (
        _termination_message(meta["namespace"], meta["name"]) if config_hash == candidate else ""
    )
    return JobView(meta["name"], config_hash, state, reason, message, digest)


def _config_error(namespace: str, job: str) -> str:
    """The kubelet's message when the Job's eval container cannot be created for want of a
    Secret or key (waiting reason CreateContainerConfigError), else ''."""
    for pod in kube.list_pods(namespace, f"job-name={job}"):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            if status.get("name") == CONTAINER and waiting.get("reason") == CONFIG_ERROR:
                return str(waiting.get("message") or CONFIG_ERROR)
    return ""


def _termination_message(namespace: str, job: str) -> str:
    pods = kube.list_pods(namespace, f"job-name={job}")
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
    for pod in reversed(pods):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated")
            if status.get("name") == CONTAINER and terminated:
                return str(terminated.get("message") or "")
    return ""


def _delete_job(namespace: str, name: str) -> None:
    try:
        _batch().delete_namespaced_job(name, namespace, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise
    log.info("deleted superseded eval Job %s/%s", namespace, name)


# --- What was evaluated: the datasets and the promoted config ---------------------------------


@dataclass(frozen=True)
class _Datasets:
    refs: list[tuple[str, str]]  # (ConfigMap, key) per evaluated route
    digest: str | None  # of their content; None while one is missing
    problem: str | None = None


class DatasetDigests:
    """The content digests of dataset ConfigMaps, by resourceVersion: a sync asks the API
    server for a dataset's metadata only, and reads its data (megabytes, perhaps) again only
    when it changed. Kept by the reconciler, shared by its threads."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], tuple[str, dict[str, str]]] = {}
        self._lock = threading.Lock()

    def of(self, namespace: str, name: str) -> dict[str, str] | None:
        """sha256 of each key's text; None when the ConfigMap does not exist."""
        meta = kube.read_config_map_metadata(namespace, name)
        if meta is None:
            return None
        version = str((meta.get("metadata") or {}).get("resourceVersion") or "")
        with self._lock:
            known = self._known.get((namespace, name))
        if known is not None and version and known[0] == version:
            return known[1]
        found = kube.read_config_map(namespace, name)
        if found is None:
            return None
        version = str((found.get("metadata") or {}).get("resourceVersion") or "")
        digests = {
            key: hashlib.sha256(text.encode()).hexdigest()
            for key, text in (found.get("data") or {}).items()
        }
        with self._lock:
            self._known[(namespace, name)] = (version, digests)
        return digests


def _datasets(namespace: str, evaluation: Any, digests: DatasetDigests) -> _Datasets:
    """The eval's datasets as they are now: their digest is part of what a decision is for.
    GitOps may apply a dataset after the policy: a missing one is waited for."""
    refs = [
        (ref.name, ref.key)
        for ref in (
            evaluation.dataset_for(r.name).config_map_ref for r in evaluation.offline_routes()
        )
    ]
    contents = []
    for name, key in dict.fromkeys(refs):
        found = digests.of(namespace, name)
        if found is None:
            problem = f"dataset ConfigMap {name!r} not found in namespace {namespace!r}"
            return _Datasets(refs, None, f"{problem}; waiting for it")
        if key not in found:
            return _Datasets(refs, None, f"dataset ConfigMap {name!r} has no key {key!r}")
        contents.append((name, key, found[key]))
    return _Datasets(refs, dataset_digest(contents))


class _PromotedConfig:
    """The promoted config's document, looked for only when needed, and always checked
    against the hash the status recorded (a document's hash is its content's sha256, so
    nothing but the promoted config can pass): the candidate's own when it is the promoted
    one, else the live ConfigMap's while intact, else the operator's copy."""

    def __init__(
        self,
        policy: Observed,
        recorded: str | None,
        candidate: Mapping[str, Any],
        live: Mapping[str, Any] | None,
    ) -> None:
        self.policy, self.recorded, self.candidate = policy, recorded, candidate
        self.live = live  # the live ConfigMap as read in full (None: not read, or absent)
        self._document: Mapping[str, Any] | None = None
        self._looked = False

    def use_live(self, live: Mapping[str, Any] | None) -> None:
        """The live ConfigMap as read in full now: looked at again if nothing was found."""
        self.live = live
        if self._document is None:
            self._looked = False

    def document(self) -> Mapping[str, Any] | None:
        if not self._looked:
            self._looked = True
            self._document = self._find()
        return self._document

    def _find(self) -> Mapping[str, Any] | None:
        if self.recorded is None:
            return None
        if self.candidate["hash"] == self.recorded:
            return self.candidate
        intact = holds_config(self.live, self.recorded)
        if intact is not None:
            return intact
        policy = self.policy
        copy = kube.read_config_map(policy.namespace, promoted_config_map_name(policy.name))
        return holds_config(copy, self.recorded)

    def baseline(self) -> Mapping[str, Any] | None:
        """What the candidate is judged against: the promoted config, or None (each route's
        strongest tier) for a new policy, and when the live config itself is re-evaluated."""
        if self.recorded is None or self.recorded == self.candidate["hash"]:
            return None
        return self.document()


def _keep_live(
    writer: LiveWriter,
    promoted: _PromotedConfig,
    live: Mapping[str, Any] | None,
    config_map: Mapping[str, Any] | bool | None,
    shadow: str | None = None,
) -> str | None:
    """Make the live ConfigMap hold the promoted config again when it was deleted, edited
    or made invalid (its content is compared, not its annotation), with the shadow document
    ``shadow`` beside it while a candidate is shadowed (and without one otherwise). Returns
    the hash it holds now; None when nothing was promoted or the promoted config cannot be
    rebuilt."""
    policy, recorded = promoted.policy, promoted.recorded
    if recorded is None:
        return None
    if config_map is not True and live is not None:
        if writer.live_holds(policy, recorded, live, shadow):
            return recorded  # as the operator last wrote or read it: unchanged since
        live = kube.read_config_map(policy.namespace, config_map_name(policy.name))
        promoted.use_live(live)
    elif config_map is True and writer.live_holds(policy, recorded, True, shadow):
        return recorded
    document = promoted.document()
    if document is None:
        return None  # the status says so (Ready=False, NoLiveConfig)
    writer.write_live_config(policy, document, live, restore=True, shadow=shadow)
    return recorded


def _manifests(
    policy: Observed,
    result: RenderResult,
    tiers: Mapping[str, Resource],
    baseline_document: Mapping[str, Any] | None,
    settings: JobSettings,
    datasets: _Datasets,
) -> tuple[dict[str, Any], dict[str, Any]] | tuple[str, str]:
    """The candidate's Job and inputs ConfigMap, or (reason, message) why they cannot be
    made yet."""
    document = result.document
    assert document is not None and policy.resource is not None
    planned = plan_for_policy(policy.resource, tiers, lambda ref: dataset_mount(ref.name, ref.key))
    if planned.plan is None:
        problems = "; ".join(p.message for p in planned.problems)
        return EVAL_NOT_STARTED, f"cannot start the eval: {problems}"
    if datasets.problem is not None or datasets.digest is None:
        return DATASET_MISSING, datasets.problem or "the eval datasets cannot be read"
    if baseline_document is None:
        baseline, kind = strongest_tier_config(document), "strongest"
    else:
        baseline, kind = dict(baseline_document), "promoted"
    # One variable per tier: where the baseline and the candidate name the same tier, the
    # candidate's reference wins (the last one kept), as production will read it from there.
    key_envs = [*_baseline_keys(baseline, tiers), *planned.key_envs, *result.key_envs]
    job, inputs = job_manifests(
        policy.reference(),
        planned.plan,
        document,
        baseline,
        kind,
        key_envs,
        datasets.refs,
        settings,
        identity=candidate_identity(document["hash"], keys_of(result)),
    )
    # The Job says which datasets it evaluates, and with which key references: a decision
    # holds for those only.
    job["metadata"]["annotations"] = {
        **job["metadata"]["annotations"],
        DATASET_ANNOTATION: datasets.digest,
        KEYS_ANNOTATION: keys_of(result),
    }
    return job, inputs


def _start_job(
    namespace: str,
    made: tuple[dict[str, Any], dict[str, Any]] | tuple[str, str],
    service_account: str,
    policy_uid: str,
) -> tuple[str, str] | None:
    """Create the candidate's Job and its inputs (``_manifests``); (reason, message) when it
    cannot be started (also when a Job, ConfigMap or ServiceAccount of that name is not
    ours)."""
    first, second = made
    if isinstance(first, str):
        assert isinstance(second, str)
        return first, second
    assert isinstance(second, dict)
    job, inputs = first, second
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
    except NotOwned as exc:  # someone else's object has the name: a person must act
        return EVAL_NOT_STARTED, f"cannot start the eval: {exc}"
    except ApiException as exc:
        # Not the live ConfigMap's failure: the policy says the eval could not start, and why.
        return (
            EVAL_JOB_NOT_CREATED,
            f"eval Job {name} could not be created: {kube.api_message(exc)}",
        )
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
    baseline: Mapping[str, Any] | None,
    job: Mapping[str, Any],
    settings: JobSettings,
    datasets: _Datasets,
) -> None:
    """A running Job found (e.g. after a restart): make sure its inputs exist, since an
    operator stopped between creating the Job and its ConfigMap leaves the pod waiting."""
    meta = job["metadata"]
    if kube.read_config_map(meta["namespace"], meta["name"]) is not None:
        return
    made = _manifests(policy, result, tiers, baseline, settings, datasets)
    if not isinstance(made[0], str):
        assert isinstance(made[1], dict)
        _create_inputs(made[1], job)
        log.info("created the missing inputs of eval Job %s/%s", meta["namespace"], meta["name"])


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
