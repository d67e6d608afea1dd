"""ModelTier and CacheProfile status: Ready, resolved prices, and how many policies use them."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from tierwise import GROUP, VERSION
from tierwise.api import CACHE_PROFILE, MODEL_TIER
from tierwise.controller.objects import observe
from tierwise.controller.runtime import reconciler_of


@kopf.on.event(GROUP, VERSION, "modeltiers")
async def tier_status(
    type: str | None,
    body: kopf.Body,
    namespace: str,
    memo: Any,
    policies_by_namespace: kopf.Index,
    **_: Any,
) -> None:
    tier = observe(body, MODEL_TIER)
    reconciler = reconciler_of(memo)
    if type == "DELETED":
        reconciler.forget(tier)
        return
    policies = list(policies_by_namespace.get(namespace, []))
    await asyncio.to_thread(reconciler.guarded, reconciler.sync_tier, tier, policies)


@kopf.on.event(GROUP, VERSION, "cacheprofiles")
async def cache_profile_status(
    type: str | None,
    body: kopf.Body,
    namespace: str,
    memo: Any,
    policies_by_namespace: kopf.Index,
    **_: Any,
) -> None:
    profile = observe(body, CACHE_PROFILE)
    reconciler = reconciler_of(memo)
    if type == "DELETED":
        reconciler.forget(profile)
        return
    policies = list(policies_by_namespace.get(namespace, []))
    await asyncio.to_thread(reconciler.guarded, reconciler.sync_cache_profile, profile, policies)
