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
from tierwise.controller.sync import Reconciler

log = logging.getLogger("tierwise.operator")

# How long policy events of a namespace are gathered before usedBy is recomputed.
USAGE_DELAY_SECONDS = 0.5


def reconciler_of(memo: Any) -> Reconciler:
    reconciler = getattr(memo, "reconciler", None)
    if reconciler is None:
        reconciler = Reconciler(emit)
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
