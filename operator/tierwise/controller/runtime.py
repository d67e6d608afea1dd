"""The operator's long-lived helpers, kept in kopf's memo next to the options.

- ``memo.reconciler``: the ``Reconciler`` (what was written, per-policy locks, workers);
- ``memo.usage``: refreshes ``usedBy`` of tiers and cache profiles when policies change,
  coalesced per namespace, so applying 50 policies at once writes each tier's status about
  once instead of 50 times, without waiting for the resync.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tierwise.controller.events import emit
from tierwise.controller.objects import policies_using
from tierwise.controller.settings import options_of
from tierwise.controller.sync import Reconciler

log = logging.getLogger("tierwise.operator")

# How long policy events of a namespace are gathered before usedBy is recomputed.
USAGE_DELAY_SECONDS = 0.5


def reconciler_of(memo: Any) -> Reconciler:
    reconciler = getattr(memo, "reconciler", None)
    if reconciler is None:
        reconciler = Reconciler(emit, evals=options_of(memo).evals)
        memo.reconciler = reconciler
    return reconciler


def usage_of(memo: Any) -> UsageRefresher:
    usage = getattr(memo, "usage", None)
    if usage is None:
        usage = UsageRefresher(reconciler_of(memo))
        memo.usage = usage
    return usage


class UsageRefresher:
    def __init__(self, reconciler: Reconciler, delay: float = USAGE_DELAY_SECONDS) -> None:
        self.reconciler = reconciler
        self.delay = delay
        self._pending: dict[str, tuple[Any, Any, Any]] = {}
        self._task: asyncio.Task[None] | None = None

    def touch(self, namespace: str, policies: Any, tiers: Any, profiles: Any) -> None:
        """Recompute usedBy in ``namespace`` soon (the indexes are live views)."""
        self._pending[namespace] = (policies, tiers, profiles)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        while self._pending:
            await asyncio.sleep(self.delay)
            pending, self._pending = self._pending, {}
            await self._flush(pending)

    async def _flush(self, pending: dict[str, tuple[Any, Any, Any]]) -> None:
        for namespace, (policies, tiers, profiles) in pending.items():
            members = list(policies.get(namespace, []))
            for tier in list(tiers.get(namespace, [])):
                await asyncio.to_thread(
                    self.reconciler.guarded, self.reconciler.sync_tier, tier, members
                )
            for profile in list(profiles.get(namespace, [])):
                await asyncio.to_thread(
                    self.reconciler.guarded, self.reconciler.sync_cache_profile, profile, members
                )


# How long tier and cache-profile events of a namespace are gathered before the policies
# using them are re-rendered: applying a namespace's tiers one after another then renders
# each policy once or twice, not once per tier.
RERENDER_DELAY_SECONDS = 0.2


def rerender_of(memo: Any) -> RerenderBatch:
    batch = getattr(memo, "rerender", None)
    if batch is None:
        batch = RerenderBatch(reconciler_of(memo))
        memo.rerender = batch
    return batch


class RerenderBatch:
    """Re-renders the policies that use changed tiers and cache profiles, per namespace,
    once per short window (``RERENDER_DELAY_SECONDS``)."""

    def __init__(self, reconciler: Reconciler, delay: float = RERENDER_DELAY_SECONDS) -> None:
        self.reconciler = reconciler
        self.delay = delay
        self._tiers: dict[str, set[str]] = {}
        self._profiles: dict[str, set[str]] = {}
        self._indexes: dict[str, tuple[Any, Any, Any]] = {}
        self._task: asyncio.Task[None] | None = None

    def touch(
        self,
        namespace: str,
        indexes: tuple[Any, Any, Any],
        *,
        tier: str | None = None,
        profile: str | None = None,
    ) -> None:
        """``indexes``: kopf's live (policies, tiers, profiles) indexes."""
        if tier is not None:
            self._tiers.setdefault(namespace, set()).add(tier)
        if profile is not None:
            self._profiles.setdefault(namespace, set()).add(profile)
        self._indexes[namespace] = indexes
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        while self._indexes:
            await asyncio.sleep(self.delay)
            tiers, self._tiers = self._tiers, {}
            profiles, self._profiles = self._profiles, {}
            indexes, self._indexes = self._indexes, {}
            await asyncio.gather(
                *(
                    self._rerender(ns, tiers.get(ns, set()), profiles.get(ns, set()), idx)
                    for ns, idx in indexes.items()
                )
            )

    async def _rerender(
        self, namespace: str, tiers: set[str], profiles: set[str], indexes: tuple[Any, Any, Any]
    ) -> None:
        policies_index, tiers_index, profiles_index = indexes
        policies = policies_using(policies_index.get(namespace, []), tiers=tiers, profiles=profiles)
        try:
            await self.reconciler.sync_policies(
                policies,
                list(tiers_index.get(namespace, [])),
                list(profiles_index.get(namespace, [])),
                pods=False,  # a tier or profile change moves no pods: keep the counts
            )
        except Exception:
            log.exception("re-rendering the policies of namespace %s failed", namespace)
