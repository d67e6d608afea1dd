"""Bring one object's world in line with its desired state: ConfigMap, status, Events.

kopf-free so the resync loop and the event handlers share it. Each policy is synced under
its own lock, because a policy's own event and a tier's event can both trigger it.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tierwise.api import SpecError
from tierwise.controller import kube, metrics, price_catalog
from tierwise.controller.reconcile import (
    MODEL_RETIRING,
    READY,
    cache_profile_status,
    config_map_up_to_date,
    count_pods,
    desired_config_map,
    label_selector_string,
    now_iso,
    policy_status,
    render_inputs,
    tier_names,
    tier_status,
    transitions,
)
from tierwise.render import render_policy

# emit(body, event_type, reason, message): posts a Kubernetes Event about ``body``.
Emit = Callable[[Mapping[str, Any], str, str, str], None]
Body = Mapping[str, Any]

_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)


def sync_policy(
    policy: Body, tiers: Iterable[Body], profiles: Iterable[Body], emit: Emit
) -> dict[str, Any]:
    meta = policy["metadata"]
    with _locks[(meta["namespace"], meta["name"])], metrics.timed("CascadePolicy"):
        result = spec_error = None
        try:
            parsed, tiers_by_name, profiles_by_name = render_inputs(policy, tiers, profiles)
            result = render_policy(
                parsed, tiers_by_name, profiles_by_name, catalog=price_catalog.current()
            )
        except SpecError as exc:
            spec_error = exc
        if result is not None and result.document is not None:
            _write_config_map(policy, result.document, emit)
        status = policy_status(policy, result, spec_error, _pod_counts(policy), now_iso())
        _write_status("cascadepolicies", policy, status, emit)
        ready = any(c["type"] == READY and c["status"] == "True" for c in status["conditions"])
        metrics.RECONCILES.labels("CascadePolicy", "ready" if ready else "not_ready").inc()
        return status


def sync_tier(tier: Body, policies: Iterable[Body], emit: Emit) -> None:
    with metrics.timed("ModelTier"):
        name = tier["metadata"]["name"]
        used_by = sum(1 for p in policies if name in tier_names(p.get("spec") or {}))
        status = tier_status(tier, used_by, now_iso(), price_catalog.current())
        _write_status("modeltiers", tier, status, emit)
        metrics.RECONCILES.labels("ModelTier", "ok").inc()


def sync_cache_profile(profile: Body, policies: Iterable[Body], emit: Emit) -> None:
    with metrics.timed("CacheProfile"):
        name = profile["metadata"]["name"]
        used_by = sum(
            1
            for p in policies
            if ((p.get("spec") or {}).get("cacheProfileRef") or {}).get("name") == name
        )
        _write_status(
            "cacheprofiles", profile, cache_profile_status(profile, used_by, now_iso()), emit
        )
        metrics.RECONCILES.labels("CacheProfile", "ok").inc()


def _write_config_map(policy: Body, document: Mapping[str, Any], emit: Emit) -> None:
    desired = desired_config_map(policy, document)
    meta = desired["metadata"]
    current = kube.read_config_map(meta["namespace"], meta["name"])
    if config_map_up_to_date(current, desired):
        return
    kube.create_or_replace_config_map(current, desired)
    metrics.CONFIG_WRITES.inc()
    emit(
        policy,
        "Normal",
        "ConfigRendered",
        f"router config {document['hash']} written to ConfigMap {meta['name']}",
    )


def _write_status(plural: str, body: Body, status: dict[str, Any], emit: Emit) -> None:
    previous = body.get("status") or {}
    if previous == status:
        return  # nothing changed: no write, so no event storm from our own updates
    meta = body["metadata"]
    kube.patch_status(plural, meta["namespace"], meta["name"], status)
    for condition in transitions(previous.get("conditions"), status["conditions"]):
        if condition["type"] == READY:
            event_type = "Normal" if condition["status"] == "True" else "Warning"
            emit(body, event_type, condition["reason"], condition["message"])
        elif condition["type"] == MODEL_RETIRING and condition["status"] == "True":
            emit(body, "Warning", condition["reason"], condition["message"])


def _pod_counts(policy: Body):
    selector = label_selector_string((policy.get("spec") or {}).get("podSelector"))
    if selector is None:
        return None
    return count_pods(kube.list_pods(policy["metadata"]["namespace"], selector))
