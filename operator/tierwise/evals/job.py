"""The eval Job and its inputs ConfigMap, as plain manifests (pure: no API calls).

One Job per candidate config: ``<policy>-eval-<hash8>``, owned by the policy. It runs
``tierwise eval --plan ...`` under a ServiceAccount with no API permissions and no token,
reads tier keys through ``secretKeyRef``, mounts its inputs (plan, candidate and baseline
configs) from a ConfigMap owned by the Job and each dataset ConfigMap, and reports its
summary through the container's termination message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tierwise import __version__
from tierwise.evals.plan import EvalPlan
from tierwise.render import SecretKeyEnv

EVAL_SERVICE_ACCOUNT = "tierwise-eval"
COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT = "eval"
POLICY_LABEL = "tierwise.dev/policy"
# The candidate's config hash, first 16 hex digits (label limit): `kubectl get jobs -l` finds
# a config's eval by the hash `kubectl get cascadepolicy` shows. The key references are in
# the Job's name and its key-refs annotation, not here.
HASH_LABEL = "tierwise.dev/candidate-hash"
CANDIDATE_ANNOTATION = "tierwise.dev/candidate-hash"
BASELINE_ANNOTATION = "tierwise.dev/baseline-hash"
CONTAINER = "eval"
INPUTS_DIR = "/etc/tierwise-eval/inputs"
DATASETS_DIR = "/etc/tierwise-eval/datasets"
TERMINATION_LOG = "/dev/termination-log"
# Past the eval's own timeout, time to start the pod and report an inconclusive summary.
DEADLINE_SLACK_SECONDS = 120
_NAME_LIMIT = 63  # Job names end up in the job-name pod label
SCRATCH_SIZE = "1Gi"  # a batch eval's items and results (datasets are far smaller)


def hash_hex(config_hash: str) -> str:
    return config_hash.split(":", 1)[-1]


def job_name(policy: str, config_hash: str) -> str:
    """``<policy>-eval-<hash8>``, the policy part shortened to keep the name a label value."""
    suffix = f"-eval-{hash_hex(config_hash)[:8]}"
    return policy[: _NAME_LIMIT - len(suffix)].rstrip("-.") + suffix


@dataclass(frozen=True)
class JobSettings:
    """Operator settings for eval Jobs (``tierwise operator --eval-*``)."""

    image: str = f"ghcr.io/tierwise/tierwise:{__version__}"
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    ttl_seconds_after_finished: int = 3600
    backoff_limit: int = 1
    service_account: str = EVAL_SERVICE_ACCOUNT
    deadline_slack_seconds: int = DEADLINE_SLACK_SECONDS


def dataset_mount(config_map: str, key: str) -> str:
    """A dataset's path in the plan: relative to ``--datasets-dir`` (where they are mounted)."""
    return f"{config_map}/{key}"


def job_manifests(
    policy: Mapping[str, Any],
    plan: EvalPlan,
    candidate: Mapping[str, Any],
    baseline: Mapping[str, Any],
    baseline_kind: str,
    key_envs: Iterable[SecretKeyEnv],
    dataset_refs: Sequence[tuple[str, str]],
    settings: JobSettings,
    *,
    identity: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Job, inputs ConfigMap without its owner reference: the Job's uid comes later).

    ``identity``: the candidate's identity (its config hash and key references; the config
    hash by default), which names the Job; its candidate annotation is the config hash."""
    meta = policy["metadata"]
    identity = identity or candidate["hash"]
    name = job_name(meta["name"], identity)
    labels = {
        "app.kubernetes.io/managed-by": "tierwise",
        "app.kubernetes.io/version": __version__,
        COMPONENT_LABEL: COMPONENT,
        POLICY_LABEL: meta["name"],
        HASH_LABEL: hash_hex(candidate["hash"])[:16],
    }
    annotations = {
        CANDIDATE_ANNOTATION: candidate["hash"],
        BASELINE_ANNOTATION: baseline["hash"],
    }
    env = [
        {"name": k.env, "valueFrom": {"secretKeyRef": {"name": k.secret_name, "key": k.secret_key}}}
        for k in {k.env: k for k in key_envs}.values()
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "inputs", "configMap": {"name": name}},
        # The root filesystem is read-only; the batch cascade (useBatchAPI) keeps its
        # requests and results on disk, as the router does, in a temporary directory here.
        {"name": "scratch", "emptyDir": {"sizeLimit": SCRATCH_SIZE}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "inputs", "mountPath": INPUTS_DIR, "readOnly": True},
        {"name": "scratch", "mountPath": "/tmp"},
    ]
    # One projected volume holds every dataset as <configmap>/<key> under DATASETS_DIR.
    sources = [
        {"configMap": {"name": name, "items": [{"key": key, "path": f"{name}/{key}"}]}}
        for name, key in dict.fromkeys(dataset_refs)
    ]
    if sources:
        volumes.append({"name": "datasets", "projected": {"sources": sources}})
        mounts.append({"name": "datasets", "mountPath": DATASETS_DIR, "readOnly": True})
    container = {
        "name": CONTAINER,
        "image": settings.image,
        "command": ["tierwise", "eval"],
        "args": [
            "--plan",
            f"{INPUTS_DIR}/plan.json",
            "--candidate",
            f"{INPUTS_DIR}/candidate.json",
            "--baseline-config",
            f"{INPUTS_DIR}/baseline.json",
            "--baseline-kind",
            baseline_kind,
            "--datasets-dir",
            DATASETS_DIR,
            "--termination-log",
            TERMINATION_LOG,
            "--quiet",
        ],
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    owner = {
        "apiVersion": policy["apiVersion"],
        "kind": policy["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner],
        },
        "spec": {
            "backoffLimit": settings.backoff_limit,
            "activeDeadlineSeconds": plan.timeout_seconds + settings.deadline_slack_seconds,
            "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
            "template": {
                "metadata": {
                    "labels": {**labels, **settings.pod_labels},
                    "annotations": annotations,
                },
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": settings.service_account,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
    inputs = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels},
        "data": {
            "plan.json": json.dumps(plan.to_document(), sort_keys=True),
            "candidate.json": json.dumps(candidate, sort_keys=True),
            "baseline.json": json.dumps(baseline, sort_keys=True),
        },
    }
    return job, inputs


def owned_by(obj: dict[str, Any], job: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` with an owner reference to the created ``job`` (deleted with it)."""
    meta = job["metadata"]
    reference = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }
    return {**obj, "metadata": {**obj["metadata"], "ownerReferences": [reference]}}


def service_account(namespace: str, name: str = EVAL_SERVICE_ACCOUNT) -> dict[str, Any]:
    """The eval Jobs' ServiceAccount: bound to nothing, so it may do nothing."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "tierwise", COMPONENT_LABEL: COMPONENT},
        },
        "automountServiceAccountToken": False,
    }
