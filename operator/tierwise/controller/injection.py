"""Which pods get the router sidecar, what the injected pod looks like, and how the webhook
is registered.

Pure functions over plain pod dicts and observed (parsed) policies and tiers (no kopf, no
Kubernetes client), so every rule is unit-tested; ``webhook.py`` adapts them to kopf's
admission handler.

Injection converges rather than appends: each piece (the sidecar, its volume, the base URL
of each app container) is added only when missing. A webhook re-invoked after another
webhook changed the pod (reinvocationPolicy IfNeeded) therefore never adds a second sidecar
or a duplicate env var, but does point a container added in between at the router.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tierwise.api.capture import Capture
from tierwise.api.models import LabelSelector, LabelSelectorRequirement
from tierwise.controller.names import (
    BASE_URL_ENV,
    BATCH_STATE_DIR,
    BATCH_STATE_VOLUME,
    CAPTURE_DIR,
    CAPTURE_VOLUME,
    CONFIG_DIR,
    CONFIG_HASH_ANNOTATION,
    CONFIG_VOLUME,
    INJECT_ANNOTATION,
    INJECTED_BY_ANNOTATION,
    INJECTION_ENABLED,
    INJECTION_LABEL,
    METRICS_PORT,
    METRICS_PORT_NAME,
    REDIS_TLS_VOLUME,
    ROUTER_PORT,
    SIDECAR_NAME,
    WEBHOOK_NAME,
    WEBHOOK_PATH,
    config_map_name,
)
from tierwise.controller.objects import Observed, cache_profile_spec, tier_spec
from tierwise.controller.ownership import CONFIG_MAP_CONFLICT, STALLED
from tierwise.render import (
    CONFIG_KEY,
    SecretKeyEnv,
    api_key_env,
    key_env_conflicts,
    redis_secrets,
    secret_key_env,
)
from tierwise.routerconfig import REDIS_TLS_DIR, sidecar

__all__ = [
    "BASE_URL_ENV",
    "DEFAULT_RESOURCES",
    "InjectionPlan",
    "choose_policy",
    "config_map_conflict",
    "inject",
    "matching_policies",
    "opted_out",
    "plan_for",
    "router_container",
    "selects",
    "webhook_configuration",
]

BASE_URL = f"http://127.0.0.1:{ROUTER_PORT}"
# Small, and with a CPU limit: a namespace whose ResourceQuota covers limits.cpu rejects
# pods with a container that has none, and injection must not make a pod unschedulable.
# Memory fits the largest body the router accepts (routerconfig.sidecar, measured in
# docs/benchmarks.md).
DEFAULT_RESOURCES: Mapping[str, Any] = {
    "requests": {"cpu": "50m", "memory": sidecar.MEMORY_REQUEST},
    "limits": {"cpu": "500m", "memory": sidecar.MEMORY_LIMIT},
}


@dataclass(frozen=True)
class InjectionPlan:
    """Everything the mutation needs, resolved from the indexes before touching the pod."""

    policy: str
    image: str
    keys: tuple[SecretKeyEnv, ...] = ()
    config_hash: str | None = None
    resources: Mapping[str, Any] = field(default_factory=lambda: copy.deepcopy(DEFAULT_RESOURCES))
    # A Redis client certificate Secret, mounted at REDIS_TLS_DIR.
    redis_tls_secret: str | None = None
    # spec.capture: the router's --capture-* flags and the claim mounted at CAPTURE_DIR.
    capture: Capture | None = None


# -- selection ----------------------------------------------------------------------------


def selects(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics; a missing selector selects nothing, an empty one
    selects everything (as for a NetworkPolicy's podSelector)."""
    if selector is None:
        return False
    labels = labels or {}
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    return all(_requirement_holds(expr, labels) for expr in selector.match_expressions or ())


def _requirement_holds(expr: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    key, operator, values = expr.key, expr.operator, expr.values or ()
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    return False  # an unknown operator selects nothing rather than everything


def _labels(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return (pod.get("metadata") or {}).get("labels") or {}


def _age_key(policy: Observed) -> tuple[str, str]:
    # creationTimestamp is RFC 3339 in UTC with second precision ("2026-01-01T00:00:00Z"),
    # so string order is time order; the name breaks ties between policies created together.
    return (policy.created, policy.name)


def matching_policies(pod: Mapping[str, Any], policies: Iterable[Observed]) -> list[Observed]:
    """The policies whose podSelector selects the pod, oldest first (then by name).

    A policy being deleted no longer claims pods: its ConfigMap is about to go away. A
    policy whose spec is invalid selects nothing (its status says why).
    """
    labels = _labels(pod)
    candidates = [p for p in policies if not p.deleting and selects(p.pod_selector(), labels)]
    return sorted(candidates, key=_age_key)


def choose_policy(pod: Mapping[str, Any], policies: Iterable[Observed]) -> Observed | None:
    """The policy that injects the pod: the oldest matching one, so adding a policy never
    changes the choice for pods an existing one already selects."""
    matching = matching_policies(pod, policies)
    return matching[0] if matching else None


def config_map_conflict(policy: Observed) -> str | None:
    """Why the policy's ConfigMap name is held by an object it does not own (its status says
    Stalled: ConfigMapConflict), else None: its pods are then not pointed at that object."""
    for condition in policy.status.get("conditions") or ():
        if (
            condition.get("type") == STALLED
            and condition.get("status") == "True"
            and condition.get("reason") == CONFIG_MAP_CONFLICT
        ):
            return str(condition.get("message") or CONFIG_MAP_CONFLICT)
    return None


def plan_for(
    policy: Observed,
    tiers: Iterable[Observed],
    image: str,
    resources: Mapping[str, Any] | None = None,
    *,
    profiles: Iterable[Observed] = (),
) -> InjectionPlan:
    """Keys of the tiers the policy uses (steps and fallback, as the renderer counts them),
    from each tier's apiKeySecretRef, and the Redis credentials of its cache profile: the
    Secrets' names, never their content."""
    used = set(policy.tier_names())
    judge = policy.shadow_judge_tier()
    if judge is not None:  # the shadow stage's judge is called from the sidecar too
        used.add(judge)
    keyed: dict[str, SecretKeyEnv] = {}
    for tier in sorted(tiers, key=lambda t: t.name):
        spec = tier_spec(tier)
        key_env = secret_key_env(tier.name, spec) if spec and tier.name in used else None
        if key_env is not None:
            keyed[tier.name] = key_env
    # Tiers whose keys would share a variable get none (the policy's status names them):
    # one tier's key must never reach another tier's endpoint.
    clashing = {api_key_env(p.ref) for p in key_env_conflicts(keyed)}
    keys = [k for k in keyed.values() if k.env not in clashing]
    wanted = policy.cache_profile_name()
    profile = next((p for p in profiles if p.name == wanted), None) if wanted else None
    redis_envs, redis_tls = redis_secrets(cache_profile_spec(profile) if profile else None)
    return InjectionPlan(
        policy=policy.name,
        image=image,
        keys=(*keys, *redis_envs),
        redis_tls_secret=redis_tls,
        config_hash=policy.config_hash,
        resources=copy.deepcopy(dict(resources or DEFAULT_RESOURCES)),
        capture=policy.capture(),
    )


# -- mutation -----------------------------------------------------------------------------


def opted_out(pod: Mapping[str, Any]) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(INJECT_ANNOTATION, "")).strip().lower() == "false"


def has_sidecar(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    return any(c.get("name") == SIDECAR_NAME for c in containers)


def injected_by_webhook(pod: Mapping[str, Any]) -> bool:
    return INJECTED_BY_ANNOTATION in ((pod.get("metadata") or {}).get("annotations") or {})


def inject(pod: Mapping[str, Any], plan: InjectionPlan) -> dict[str, Any] | None:
    """The pod with the router sidecar, or None when there is nothing to change.

    A pod that brings its own ``tierwise-router`` (no injected-by annotation) is left as it
    is: whoever wrote it manages it. A pod this webhook already injected (re-invocation)
    only gets the base URL on containers added since.
    """
    if opted_out(pod):
        return None
    if has_sidecar(pod) and not injected_by_webhook(pod):
        return None
    mutated = copy.deepcopy(dict(pod))
    spec = mutated.setdefault("spec", {})
    if not has_sidecar(pod):
        _add_sidecar(mutated, plan)
    for container in app_containers(spec):
        _set_base_url(container)
    return None if mutated == pod else mutated


def _add_sidecar(pod: dict[str, Any], plan: InjectionPlan) -> None:
    spec = pod["spec"]
    # First init container: a native sidecar starts before the init containers after it, so
    # the router serves the app's (and its init containers') first call.
    spec["initContainers"] = [router_container(plan), *(spec.get("initContainers") or [])]
    # The name is ours: a volume already called so would not hold the policy's config.
    ours = (CONFIG_VOLUME, BATCH_STATE_VOLUME, REDIS_TLS_VOLUME, CAPTURE_VOLUME)
    volumes = [v for v in spec.get("volumes") or [] if v.get("name") not in ours]
    spec["volumes"] = [
        *volumes,
        {"name": CONFIG_VOLUME, "configMap": {"name": config_map_name(plan.policy)}},
        # Batch cascades keep their state here: it survives a restart of the router
        # container (not the pod's deletion), and the root filesystem stays read-only.
        {"name": BATCH_STATE_VOLUME, "emptyDir": {"sizeLimit": "2Gi"}},
        *(
            [{"name": REDIS_TLS_VOLUME, "secret": {"secretName": plan.redis_tls_secret}}]
            if plan.redis_tls_secret
            else []
        ),
        *(
            [
                {
                    "name": CAPTURE_VOLUME,
                    "persistentVolumeClaim": {"claimName": plan.capture.claim_name},
                }
            ]
            if plan.capture
            else []
        ),
    ]
    annotations = pod.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[INJECTED_BY_ANNOTATION] = plan.policy
    if plan.config_hash:
        annotations[CONFIG_HASH_ANNOTATION] = plan.config_hash


def app_containers(spec: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Containers that run app code: regular containers and ordinary init containers, not
    the router and not other native sidecars (restartPolicy Always, e.g. a mesh proxy)."""
    for container in spec.get("initContainers") or []:
        if container.get("name") != SIDECAR_NAME and container.get("restartPolicy") != "Always":
            yield container
    yield from spec.get("containers") or []


def _set_base_url(container: dict[str, Any]) -> None:
    """Point the app's Anthropic SDK at the sidecar, unless the container chose otherwise."""
    env = container.get("env") or []
    if any(e.get("name") == BASE_URL_ENV for e in env):
        return
    container["env"] = [*env, {"name": BASE_URL_ENV, "value": BASE_URL}]


def router_container(plan: InjectionPlan) -> dict[str, Any]:
    ready = {
        "httpGet": {"path": "/readyz", "port": METRICS_PORT},
        "periodSeconds": 2,
        "timeoutSeconds": sidecar.PROBE_TIMEOUT_SECONDS,
    }
    return {
        "name": SIDECAR_NAME,
        "image": plan.image,
        # Native sidecar (Kubernetes >= 1.29): keeps running beside the app, is stopped
        # after it, and does not keep a Job's pod alive.
        "restartPolicy": "Always",
        # `command`, not `args`: the sidecar must not depend on the image's entrypoint.
        "command": [
            "tierwise",
            "router",
            "--config",
            f"{CONFIG_DIR}/{CONFIG_KEY}",
            "--host",
            "127.0.0.1",
            "--port",
            str(ROUTER_PORT),
            "--metrics-host",
            "0.0.0.0",
            "--metrics-port",
            str(METRICS_PORT),
            "--max-body-bytes",
            str(sidecar.MAX_BODY_BYTES),
            "--batch-state-dir",
            BATCH_STATE_DIR,
            *capture_flags(plan.capture),
        ],
        "ports": [{"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "env": [
            {
                "name": key.env,
                "valueFrom": {"secretKeyRef": {"name": key.secret_name, "key": key.secret_key}},
            }
            for key in plan.keys
        ],
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": BATCH_STATE_VOLUME, "mountPath": BATCH_STATE_DIR},
            *(
                [{"name": REDIS_TLS_VOLUME, "mountPath": REDIS_TLS_DIR, "readOnly": True}]
                if plan.redis_tls_secret
                else []
            ),
            *([{"name": CAPTURE_VOLUME, "mountPath": CAPTURE_DIR}] if plan.capture else []),
        ],
        # The kubelet starts the app containers once the startup probe passes, i.e. once the
        # router has a valid config; a minute of grace covers a ConfigMap that is mounted late.
        "startupProbe": {**ready, "failureThreshold": 30},
        "readinessProbe": {**ready, "failureThreshold": 3},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": METRICS_PORT},
            "periodSeconds": 10,
            "timeoutSeconds": sidecar.PROBE_TIMEOUT_SECONDS,
            "failureThreshold": 3,
        },
        "resources": copy.deepcopy(dict(plan.resources)),
        # Restricted Pod Security Standard, so injection never makes a pod inadmissible.
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def capture_flags(capture: Capture | None) -> list[str]:
    """The router's ``--capture-*`` flags for ``spec.capture`` (none: capture stays off).
    Each flag's value is its own argument, so a pattern is passed as written, never parsed
    by a shell."""
    if capture is None:
        return []
    flags = [
        "--capture-dir",
        CAPTURE_DIR,
        "--capture-rate",
        str(capture.rate),
        "--capture-max-bytes-per-day",
        str(capture.max_bytes_per_day),
    ]
    for rule in capture.redact or ():
        flags += ["--capture-redact", f"{rule.name}={rule.pattern}"]
    return flags


# -- registration -------------------------------------------------------------------------


def webhook_configuration(
    client_config: Mapping[str, Any], *, name: str, timeout_seconds: int = 5
) -> dict[str, Any]:
    """The MutatingWebhookConfiguration for ``client_config`` ({url} or {service}, plus
    caBundle), as the operator registers it and as a static registration should read.

    - namespaceSelector: the API server does not even call for namespaces that did not opt
      in, and sees a namespace's label the moment it is set;
    - failurePolicy Ignore with a short timeout: pods are created, without the sidecar, when
      the operator is down or slow (the policy's status counts them);
    - reinvocationPolicy IfNeeded: a webhook that runs after this one and adds a container
      gets that container pointed at the router too.
    """
    client = copy.deepcopy(dict(client_config))
    if "url" in client:
        client["url"] = client["url"].rstrip("/") + WEBHOOK_PATH
    if "service" in client:
        client["service"]["path"] = WEBHOOK_PATH
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "tierwise"}},
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "clientConfig": client,
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                        "operations": ["CREATE"],
                        "scope": "Namespaced",
                    }
                ],
                "namespaceSelector": {"matchLabels": {INJECTION_LABEL: INJECTION_ENABLED}},
                "failurePolicy": "Ignore",
                "matchPolicy": "Equivalent",
                "reinvocationPolicy": "IfNeeded",
                "sideEffects": "None",
                "timeoutSeconds": timeout_seconds,
                "admissionReviewVersions": ["v1"],
            }
        ],
    }
