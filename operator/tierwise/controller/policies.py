"""CascadePolicy handlers: every change re-renders the policy into its ConfigMap.

Event handlers, not create/update handlers: they need no bookkeeping annotations and no
finalizer on the policy, so GitOps sees no drift and deletion never waits for the operator.
The owner reference on the ConfigMap lets the garbage collector clean up.
"""

from __future__ import annotations

from typing import Any

import kopf

from tierwise import GROUP, VERSION
from tierwise.controller.events import emit
from tierwise.controller.indexes import plain
from tierwise.controller.reconcile import policies_using
from tierwise.controller.sync import sync_policy


@kopf.on.event(GROUP, VERSION, "cascadepolicies")
def policy_changed(
    type: str | None,
    body: kopf.Body,
    namespace: str,
    tiers_by_namespace: kopf.Index,
    cache_profiles_by_namespace: kopf.Index,
    **_: Any,
) -> None:
    if type == "DELETED":
        return
    sync_policy(
        plain(body),
        tiers_by_namespace.get(namespace, []),
        cache_profiles_by_namespace.get(namespace, []),
        emit,
    )


@kopf.on.event(GROUP, VERSION, "modeltiers")
def tier_changed(
    name: str,
    namespace: str,
    policies_by_namespace: kopf.Index,
    tiers_by_namespace: kopf.Index,
    cache_profiles_by_namespace: kopf.Index,
    **_: Any,
) -> None:
    """A tier appeared, changed or went away: re-render every policy that uses it."""
    tiers = list(tiers_by_namespace.get(namespace, []))
    profiles = list(cache_profiles_by_namespace.get(namespace, []))
    for policy in policies_using(policies_by_namespace.get(namespace, []), tier=name):
        sync_policy(policy, tiers, profiles, emit)


@kopf.on.event(GROUP, VERSION, "cacheprofiles")
def cache_profile_changed(
    name: str,
    namespace: str,
    policies_by_namespace: kopf.Index,
    tiers_by_namespace: kopf.Index,
    cache_profiles_by_namespace: kopf.Index,
    **_: Any,
) -> None:
    tiers = list(tiers_by_namespace.get(namespace, []))
    profiles = list(cache_profiles_by_namespace.get(namespace, []))
    for policy in policies_using(policies_by_namespace.get(namespace, []), profile=name):
        sync_policy(policy, tiers, profiles, emit)
