"""The operator's view of the pods a CascadePolicy selects: which carry the router sidecar,
and which of those cannot serve the policy's live config.

A sidecar gets one environment variable per tier key when its pod is created (from the
tiers' Secrets, see ``injection.plan_for``); a config that names a key variable the sidecar
lacks (the policy gained a tier) is refused by the router's hot reload, which keeps its
last good config. The operator has no access to Secrets and does not call pods for this
(the sidecars' metrics are read only for the shadow stage and spend budgets:
``router_metrics``), so it reads this from each pod's spec: the env var names the sidecar sets against the ones the live
config names. Pure functions over plain pod dicts, summarised once per listing, so the
check costs no API call beyond the pod list the operator makes anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tierwise.controller.conditions import Condition
from tierwise.controller.names import CONFIG_VOLUME, METRICS_PORT_NAME, SIDECAR_NAME

PODS_CURRENT = "PodsCurrent"
# How many pod names a condition message lists before "and N more".
NAMED_PODS = 3


@dataclass(frozen=True)
class PodView:
    """What the operator needs of one selected pod, kept instead of the whole pod."""

    name: str
    injected: bool  # carries the router sidecar
    active: bool  # neither finished nor being deleted
    config_map: str | None = None  # the ConfigMap the sidecar's config volume mounts
    # Env var names the sidecar sets; None when they cannot be known from the spec
    # (envFrom a Secret or ConfigMap may set any name).
    env_names: frozenset[str] | None = frozenset()
    uid: str = ""
    # The sidecar's /metrics while the pod runs (``router_metrics_url``): the shadow stage
    # and spend budgets read their figures there.
    metrics_url: str | None = None


@dataclass(frozen=True)
class LiveConfig:
    """The config in a policy's live ConfigMap: its hash and the key variables it names."""

    hash: str
    config_map: str
    key_envs: frozenset[str]


@dataclass(frozen=True)
class PodCounts:
    matching: int
    injected: int
    # pod name -> key variables of the live config its sidecar lacks; None: not checked
    # (the live config is not known, e.g. right after a restart while a candidate is
    # evaluated).
    unable: Mapping[str, tuple[str, ...]] | None = None

    def to_dict(self) -> dict[str, int]:
        counts = {
            "matching": self.matching,
            "injected": self.injected,
            "withoutSidecar": self.matching - self.injected,
        }
        if self.unable is not None:
            counts["cannotServe"] = len(self.unable)
        return counts


def _sidecar(spec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if container.get("name") == SIDECAR_NAME:
            return container
    return None


def router_metrics_url(pod: Mapping[str, Any]) -> str | None:
    """``http://<pod IP>:<router-metrics port>/metrics`` of a running pod's router sidecar;
    None for a pod without one, not running, or going away."""
    status = pod.get("status") or {}
    ip = status.get("podIP")
    if (
        not ip
        or status.get("phase") != "Running"
        or (pod.get("metadata") or {}).get("deletionTimestamp")
    ):
        return None
    sidecar = _sidecar(pod.get("spec") or {})
    for port in (sidecar or {}).get("ports") or []:
        if port.get("name") == METRICS_PORT_NAME and port.get("containerPort"):
            host = f"[{ip}]" if ":" in ip else ip
            return f"http://{host}:{int(port['containerPort'])}/metrics"
    return None


def view_pod(pod: Mapping[str, Any]) -> PodView:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    phase = (pod.get("status") or {}).get("phase")
    active = not meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed")
    sidecar = _sidecar(spec)
    if sidecar is None:
        return PodView(str(meta.get("name", "")), False, active)
    mounted = {m.get("name") for m in sidecar.get("volumeMounts") or []}
    config_map = next(
        (
            (v.get("configMap") or {}).get("name")
            for v in spec.get("volumes") or []
            if v.get("name") == CONFIG_VOLUME and v.get("name") in mounted
        ),
        None,
    )
    # A variable set to "" counts as unset, as the router reads it.
    env_names = frozenset(
        e["name"]
        for e in sidecar.get("env") or []
        if e.get("name") and (e.get("value") or e.get("valueFrom"))
    )
    return PodView(
        str(meta.get("name", "")),
        True,
        active,
        config_map,
        None if sidecar.get("envFrom") else env_names,
        str(meta.get("uid") or ""),
        router_metrics_url(pod),
    )


@dataclass(frozen=True)
class IndexedPod:
    """A pod as the operator's pod index keeps it: its labels (for policies' selectors) and
    its view, instead of the whole pod."""

    labels: Mapping[str, str]
    view: PodView


def indexed_pod(pod: Mapping[str, Any]) -> IndexedPod:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return IndexedPod(dict(labels), view_pod(pod))


def view_pods(pods: Iterable[Mapping[str, Any]]) -> tuple[PodView, ...]:
    return tuple(view_pod(p) for p in pods)


def count_pods(pods: Iterable[PodView], live: LiveConfig | None = None) -> PodCounts:
    """Counts of the selected pods and, when the live config is known, the pods whose
    sidecar reads that config's ConfigMap but lacks one of its key variables.

    Pods whose sidecar mounts another ConfigMap serve another policy's config (the oldest
    policy injects a pod two policies select) and are not judged against this one; nor
    are pods that finished or are going away, or whose env cannot be known (envFrom).
    """
    matching = injected = 0
    unable: dict[str, tuple[str, ...]] = {}
    for pod in pods:
        matching += 1
        injected += pod.injected
        if live is None or not (pod.injected and pod.active) or pod.env_names is None:
            continue
        if pod.config_map != live.config_map:
            continue
        missing = tuple(sorted(live.key_envs - pod.env_names))
        if missing:
            unable[pod.name] = missing
    return PodCounts(matching, injected, None if live is None else dict(sorted(unable.items())))


def pods_condition(counts: PodCounts, live: LiveConfig) -> Condition:
    """``PodsCurrent``: False names the pods to recreate, and why."""
    unable = counts.unable or {}
    if not unable:
        return Condition(
            PODS_CURRENT,
            True,
            "AllPodsCurrent",
            f"every running pod with the router sidecar can serve live config {live.hash}",
        )
    names = list(unable)
    shown = ", ".join(names[:NAMED_PODS])
    if len(names) > NAMED_PODS:
        shown += f" and {len(names) - NAMED_PODS} more"
    missing = sorted({env for envs in unable.values() for env in envs})
    return Condition(
        PODS_CURRENT,
        False,
        "MissingKeyEnv",
        f"{len(names)} of {counts.injected} pods with the router sidecar cannot serve live "
        f"config {live.hash}: their sidecar lacks {', '.join(missing)}, so they keep serving "
        f"an older config; recreate them (e.g. kubectl rollout restart of their workload) to "
        f"pick up the new tiers' keys: {shown}",
    )


def previous_condition(conditions: Sequence[Mapping[str, Any]] | None) -> Condition | None:
    """The ``PodsCurrent`` condition as last written, to keep while the pods are not
    looked at again."""
    for c in conditions or ():
        if c.get("type") == PODS_CURRENT:
            return Condition(
                PODS_CURRENT, c.get("status") == "True", c.get("reason", ""), c.get("message", "")
            )
    return None
