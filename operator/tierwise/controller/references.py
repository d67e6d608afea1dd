"""ModelTier and CacheProfile status: Ready, resolved prices, and how many policies use them."""

from __future__ import annotations

from typing import Any

import kopf

from tierwise import GROUP, VERSION
from tierwise.controller.events import emit
from tierwise.controller.indexes import plain
from tierwise.controller.sync import sync_cache_profile, sync_tier


@kopf.on.event(GROUP, VERSION, "modeltiers")
def tier_status(
    type: str | None, body: kopf.Body, namespace: str, policies_by_namespace: kopf.Index, **_: Any
) -> None:
    if type != "DELETED":
        sync_tier(plain(body), policies_by_namespace.get(namespace, []), emit)


@kopf.on.event(GROUP, VERSION, "cacheprofiles")
def cache_profile_status(
    type: str | None, body: kopf.Body, namespace: str, policies_by_namespace: kopf.Index, **_: Any
) -> None:
    if type != "DELETED":
        sync_cache_profile(plain(body), policies_by_namespace.get(namespace, []), emit)
