"""Periodic full resync: the safety net behind the event handlers.

Event handlers are not retried when they fail, pod counts change without any event on the
policy, and a tier's ``usedBy`` changes when a policy does. So every ``period`` seconds the
operator lists the three kinds (one call each) and syncs everything. kopf timers would do
this per object, but they put a finalizer on every object; this loop does not.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from tierwise.controller import kube
from tierwise.controller.events import emit
from tierwise.controller.sync import sync_cache_profile, sync_policy, sync_tier

log = logging.getLogger("tierwise.resync")


def resync_once(namespaces: Sequence[str] | None) -> int:
    """Sync every object in ``namespaces`` (None: all); returns how many policies it saw."""
    scopes: Sequence[str | None] = namespaces or [None]
    by_kind: dict[str, defaultdict[str, list[dict[str, Any]]]] = {}
    for plural in ("cascadepolicies", "modeltiers", "cacheprofiles"):
        grouped: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        for scope in scopes:
            for obj in kube.list_objects(plural, scope):
                grouped[obj["metadata"]["namespace"]].append(obj)
        by_kind[plural] = grouped
    policies, tiers, profiles = (
        by_kind["cascadepolicies"],
        by_kind["modeltiers"],
        by_kind["cacheprofiles"],
    )
    for namespace in set(policies) | set(tiers) | set(profiles):
        for policy in policies[namespace]:
            _guarded(sync_policy, policy, tiers[namespace], profiles[namespace], emit)
        for tier in tiers[namespace]:
            _guarded(sync_tier, tier, policies[namespace], emit)
        for profile in profiles[namespace]:
            _guarded(sync_cache_profile, profile, policies[namespace], emit)
    return sum(len(v) for v in policies.values())


def _guarded(sync: Any, body: dict[str, Any], *args: Any) -> None:
    try:
        sync(body, *args)
    except Exception:  # one bad object must not stop the others
        log.exception(
            "resync of %s/%s failed", body["metadata"]["namespace"], body["metadata"]["name"]
        )


async def resync_forever(
    namespaces: Sequence[str] | None, period: float, active: Callable[[], bool] = lambda: True
) -> None:
    """Resync every ``period`` seconds while ``active()`` (see ``peering.is_active``)."""
    while True:
        await asyncio.sleep(period)
        try:
            if not await asyncio.to_thread(active):
                continue
            # to_thread copies the context, so kopf's event posting works from the thread.
            await asyncio.to_thread(resync_once, namespaces)
        except Exception:
            log.exception("resync failed; retrying in %ss", period)
