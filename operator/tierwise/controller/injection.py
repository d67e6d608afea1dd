"""Which pods get the router sidecar, and what the injected pod looks like.

Pure functions over plain pod and policy dicts; ``webhook.py`` adapts them to kopf's
admission handler. Injection is idempotent: a pod that already carries the sidecar is left
as it is, so a re-invoked webhook never injects twice.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tierwise.controller.names import (
    CONFIG_DIR,
    CONFIG_HASH_ANNOTATION,
    CONFIG_VOLUME,
    INJECT_ANNOTATION,
    INJECTED_BY_ANNOTATION,
    METRICS_PORT,
    ROUTER_PORT,
    SIDECAR_NAME,
    config_map_name,
)
from tierwise.render import CONFIG_KEY, api_key_env

BASE_URL_ENV = "ANTHROPIC_BASE_URL"


@dataclass(frozen=True)
class KeyRef:
    env: str
    secret: str
    key: str


@dataclass(frozen=True)
class InjectionPlan:
    policy: str
    image: str
    keys: tuple[KeyRef, ...] = ()
    config_hash: str | None = None
    resources: Mapping[str, Any] = field(
        default_factory=lambda: {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"memory": "192Mi"},
        }
    )


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics; a missing selector selects nothing."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if (
            (op == "In" and (not present or labels[key] not in values))
            or (op == "NotIn" and present and labels[key] in values)
            or (op == "Exists" and not present)
            or (op == "DoesNotExist" and present)
        ):
            return False
    return True


def choose_policy(
    labels: Mapping[str, str], policies: Iterable[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The policy whose podSelector selects the pod; the oldest wins when several do."""
    matching = [p for p in policies if selects((p.get("spec") or {}).get("podSelector"), labels)]
    if not matching:
        return None
    return min(
        matching,
        key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]),
    )


def plan_for(
    policy: Mapping[str, Any], tiers: Iterable[Mapping[str, Any]], image: str
) -> InjectionPlan:
    """Keys of the tiers the policy uses, from their apiKeySecretRef (never the key itself)."""
    spec = policy.get("spec") or {}
    used = {s.get("tier") for r in spec.get("routes") or [] for s in r.get("steps") or []}
    if spec.get("fallback"):
        used.add(spec["fallback"].get("tier"))
    keys = []
    for tier in sorted(tiers, key=lambda t: t["metadata"]["name"]):
        name = tier["metadata"]["name"]
        ref = (tier.get("spec") or {}).get("apiKeySecretRef")
        if name in used and ref:
            keys.append(KeyRef(api_key_env(name), ref["name"], ref.get("key", "api-key")))
    return InjectionPlan(
        policy=policy["metadata"]["name"],
        image=image,
        keys=tuple(keys),
        config_hash=(policy.get("status") or {}).get("configHash"),
    )


def opted_out(pod: Mapping[str, Any]) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(INJECT_ANNOTATION, "")).lower() == "false"


def already_injected(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return any(
        c.get("name") == SIDECAR_NAME
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
    )


def inject(pod: Mapping[str, Any], plan: InjectionPlan) -> dict[str, Any] | None:
    """The pod with the router sidecar, or None when there is nothing to do."""
    if opted_out(pod) or already_injected(pod):
        return None
    mutated = copy.deepcopy(dict(pod))
    spec = mutated.setdefault("spec", {})
    # A native sidecar: an init container that keeps running (Kubernetes >= 1.29), started
    # before the app containers so the router is there when the app makes its first call.
    spec["initContainers"] = [router_container(plan), *(spec.get("initContainers") or [])]
    for container in [*spec["initContainers"][1:], *(spec.get("containers") or [])]:
        _set_base_url(container)
    volumes = [v for v in spec.get("volumes") or [] if v.get("name") != CONFIG_VOLUME]
    spec["volumes"] = [
        *volumes,
        {"name": CONFIG_VOLUME, "configMap": {"name": config_map_name(plan.policy)}},
    ]
    annotations = mutated.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[INJECTED_BY_ANNOTATION] = plan.policy
    if plan.config_hash:
        annotations[CONFIG_HASH_ANNOTATION] = plan.config_hash
    return mutated


def router_container(plan: InjectionPlan) -> dict[str, Any]:
    probe = {
        "httpGet": {"path": "/readyz", "port": METRICS_PORT},
        "periodSeconds": 2,
        "failureThreshold": 3,
    }
    return {
        "name": SIDECAR_NAME,
        "image": plan.image,
        "restartPolicy": "Always",
        "args": [
            "router",
            f"--config={CONFIG_DIR}/{CONFIG_KEY}",
            "--host=127.0.0.1",
            f"--port={ROUTER_PORT}",
            "--metrics-host=0.0.0.0",
            f"--metrics-port={METRICS_PORT}",
        ],
        "ports": [
            {"name": "router-metrics", "containerPort": METRICS_PORT}
        ],  # IANA_SVC_NAME: <= 15 chars
        "env": [
            {"name": key.env, "valueFrom": {"secretKeyRef": {"name": key.secret, "key": key.key}}}
            for key in plan.keys
        ],
        "volumeMounts": [{"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True}],
        "readinessProbe": probe,
        "startupProbe": {**probe, "failureThreshold": 30},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": METRICS_PORT},
            "periodSeconds": 10,
        },
        "resources": dict(plan.resources),
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def _set_base_url(container: dict[str, Any]) -> None:
    """Point the app's Anthropic SDK at the sidecar, unless the container chose otherwise."""
    env: Sequence[Mapping[str, Any]] = container.get("env") or []
    if any(e.get("name") == BASE_URL_ENV for e in env):
        return
    container["env"] = [*env, {"name": BASE_URL_ENV, "value": f"http://127.0.0.1:{ROUTER_PORT}"}]
