"""CascadePolicy handlers: every change re-renders the policy into its ConfigMap.

Event handlers, not create/update handlers: they need no bookkeeping annotations and no
finalizer on the policy, so GitOps sees no drift and deletion never waits for the operator.
The owner reference on the ConfigMap lets the garbage collector clean up.

A tier or cache profile change re-renders every policy of its namespace that uses it,
gathered per namespace for 0.2 s (``runtime.RerenderBatch``) and then concurrently
(``Reconciler.sync_policies``); one policy's failure does not hold up the rest.
"""

from __future__ import annotations

from typing import Any

import kopf

from tierwise import GROUP, VERSION
from tierwise.api import CASCADE_POLICY
from tierwise.controller.objects import observe
from tierwise.controller.runtime import reconciler_of, rerender_of, usage_of


@kopf.on.event(GROUP, VERSION, "cascadepolicies")
async def policy_changed(
    type: str | None,
    body: kopf.Body,
    namespace: str,
    memo: Any,
    policies_by_namespace: kopf.Index,
    tiers_by_namespace: kopf.Index,
    cache_profiles_by_namespace: kopf.Index,
    **_: Any,
) -> None:
    policy = observe(body, CASCADE_POLICY)
    reconciler = reconciler_of(memo)
    tiers = list(tiers_by_namespace.get(namespace, []))
    profiles = list(cache_profiles_by_namespace.get(namespace, []))
    if type == "DELETED":
        reconciler.forget(policy)
    elif not reconciler.up_to_date(policy, tiers, profiles):
        # (An event that changed only the status, e.g. our own write, needs no work: pod
        # counts are refreshed by the resync.)
        await reconciler.sync_policies([policy], tiers, profiles)
    # A policy's tiers and profile count it in `usedBy`: refresh them (coalesced).
    usage_of(memo).touch(
        namespace, policies_by_namespace, tiers_by_namespace, cache_profiles_by_namespace
    )


@kopf.on.event(GROUP, VERSION, "modeltiers")
async def tier_changed(
    name: str,
    namespace: str,
    memo: Any,
    policies_by_namespace: kopf.Index,
    tiers_by_namespace: kopf.Index,
    cache_profiles_by_namespace: kopf.Index,
    **_: Any,
) -> None:
    """A tier appeared, changed or went away: re-render every policy that uses it (batched
    per namespace over a fraction of a second, see ``runtime.RerenderBatch``)."""
    indexes = (policies_by_namespace, tiers_by_namespace, cache_profiles_by_namespace)
    rerender_of(memo).touch(namespace, indexes, tier=name)


@kopf.on.event(GROUP, VERSION, "cacheprofiles")
async def cache_profile_changed(
    name: str,
    namespace: str,
    memo: Any,
    policies_by_namespace: kopf.Index,
    tiers_by_namespace: kopf.Index,
    cache_profiles_by_namespace: kopf.Index,
    **_: Any,
) -> None:
    indexes = (policies_by_namespace, tiers_by_namespace, cache_profiles_by_namespace)
    rerender_of(memo).touch(namespace, indexes, profile=name)
