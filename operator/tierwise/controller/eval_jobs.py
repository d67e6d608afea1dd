"""kopf handler: an eval Job's life re-syncs its policy, so the rollout decides at once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from tierwise.controller.runtime import reconciler_of
from tierwise.evals.job import COMPONENT, COMPONENT_LABEL, POLICY_LABEL


@kopf.on.event("batch", "v1", "jobs", labels={COMPONENT_LABEL: COMPONENT})
async def eval_job_changed(
    namespace: str,
    labels: Mapping[str, str],
    memo: Any,
    policies_by_namespace: kopf.Index,
    tiers_by_namespace: kopf.Index,
    cache_profiles_by_namespace: kopf.Index,
    **_: Any,
) -> None:
    """An eval Job started, finished or went away: re-sync its policy to decide at once
    (the policy's own inputs did not change, so its handler would see nothing to do)."""
    policy_name = labels.get(POLICY_LABEL)
    policies = [p for p in policies_by_namespace.get(namespace, []) if p.name == policy_name]
    await reconciler_of(memo).sync_policies(
        policies,
        list(tiers_by_namespace.get(namespace, [])),
        list(cache_profiles_by_namespace.get(namespace, [])),
        pods=False,
    )
