"""Periodic full resync: the safety net behind the event handlers.

Event handlers are not retried when they fail, pod counts change without any event on the
policy, and someone may delete or hand-edit a ConfigMap. So every ``period`` seconds the
operator lists the three kinds and the rendered ConfigMaps (one call each per watched
scope, never one per object), counts each policy's pods from the pod index (a watch, not a
list), syncs everything, and refreshes the spend budgets' status from the routers;
a sync that finds nothing changed writes nothing. kopf timers would do this per object, but
they put a finalizer on every object; this loop does not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from tierwise.api import CACHE_PROFILE, CASCADE_POLICY, MODEL_TIER
from tierwise.controller import budgets, kube
from tierwise.controller.injection import selects
from tierwise.controller.objects import Observed, ParseCache, observe
from tierwise.controller.pods import IndexedPod, PodView, view_pods
from tierwise.controller.reconcile import POLICY_LABEL
from tierwise.controller.sync import Reconciler, config_maps_by_policy, selected_pods
from tierwise.memory import release_memory  # a pass frees many objects: give them back

log = logging.getLogger("tierwise.resync")

KINDS = {
    "cascadepolicies": CASCADE_POLICY,
    "modeltiers": MODEL_TIER,
    "cacheprofiles": CACHE_PROFILE,
}


def snapshot(
    namespaces: Sequence[str] | None, cache: ParseCache | None = None
) -> dict[str, defaultdict[str, list[Observed]]]:
    """Every Tierwise object in scope, observed, by plural and namespace."""
    scopes: Sequence[str | None] = namespaces or [None]
    by_kind: dict[str, defaultdict[str, list[Observed]]] = {}
    for plural, kind in KINDS.items():
        grouped: defaultdict[str, list[Observed]] = defaultdict(list)
        for scope in scopes:
            for body in kube.list_objects(plural, scope):
                grouped[body["metadata"]["namespace"]].append(observe(body, kind, cache))
        by_kind[plural] = grouped
    return by_kind


async def resync_once(reconciler: Reconciler, namespaces: Sequence[str] | None) -> int:
    """Sync every object in ``namespaces`` (None: all); returns how many policies it saw."""
    by_kind = await asyncio.to_thread(snapshot, namespaces, reconciler.parsed)
    policies, tiers, profiles = (
        by_kind["cascadepolicies"],
        by_kind["modeltiers"],
        by_kind["cacheprofiles"],
    )
    listed_at = time.monotonic()
    config_maps = await asyncio.to_thread(_config_maps, namespaces)
    for namespace in sorted(set(policies) | set(tiers) | set(profiles)):
        members = policies[namespace]
        index = reconciler.pods_index
        if index is not None:
            # Counted from the pod watch (kopf's index): no pod is listed.
            indexed = list(index.get(namespace, ())) if members else []

            def pods_of(policy: Observed, indexed: list[IndexedPod] = indexed) -> Any:
                return _indexed(policy, indexed)
        else:
            listed = await asyncio.to_thread(_pods, namespace) if members else []

            def pods_of(policy: Observed, listed: Any = listed) -> Any:
                return _selected(policy, listed)

        await reconciler.sync_policies(
            members,
            tiers[namespace],
            profiles[namespace],
            lambda policy, pods_of=pods_of: {
                "config_map": config_maps.get(policy.key),
                "pods": pods_of(policy),
                "listed_at": listed_at,
            },
        )
        for policy in members:
            if policy.spec is not None and policy.spec.budgets:
                # status.budgets from the routers' metrics (controller/budgets.py).
                pods = pods_of(policy)
                selected = pods if isinstance(pods, tuple) else ()
                await asyncio.to_thread(reconciler.guarded, budgets.refresh, policy, selected)
        for tier in tiers[namespace]:
            await asyncio.to_thread(reconciler.guarded, reconciler.sync_tier, tier, members)
        for profile in profiles[namespace]:
            await asyncio.to_thread(
                reconciler.guarded, reconciler.sync_cache_profile, profile, members
            )
    return sum(len(v) for v in policies.values())


def _config_maps(namespaces: Sequence[str] | None) -> dict[tuple[str, str], Any]:
    listed = []
    for scope in namespaces or [None]:
        listed.extend(kube.list_config_map_metadata(scope, POLICY_LABEL))
    return config_maps_by_policy(listed)


def _pods(namespace: str) -> list[dict[str, Any]] | None:
    try:
        return kube.list_pods(namespace, "")
    except Exception:
        log.exception("listing the pods of namespace %s failed; keeping the counts", namespace)
        return None


def _selected(
    policy: Observed, pods: list[dict[str, Any]] | None
) -> tuple[PodView, ...] | bool | None:
    """The pods ``policy`` selects, summarised (the sync counts them and checks their
    sidecars against the live config)."""
    selector = policy.pod_selector()
    if pods is None:
        return False  # keep the last counts
    if selector is None:
        return None
    return view_pods(
        p for p in pods if selects(selector, (p.get("metadata") or {}).get("labels") or {})
    )


def _indexed(policy: Observed, pods: list[IndexedPod]) -> tuple[PodView, ...] | None:
    selector = policy.pod_selector()
    return None if selector is None else selected_pods(selector, pods)


async def resync_forever(
    reconciler: Reconciler,
    namespaces: Sequence[str] | None,
    period: float,
    active: Callable[[], bool] = lambda: True,
) -> None:
    """Resync every ``period`` seconds while ``active()`` (see ``peering.is_active``)."""
    while True:
        await asyncio.sleep(period)
        try:
            if not await asyncio.to_thread(active):
                continue
            await resync_once(reconciler, namespaces)
        except Exception:
            log.exception("resync failed; retrying in %ss", period)
        finally:
            release_memory()
