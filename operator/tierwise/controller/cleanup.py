"""What the operator made that no owner removes: run once when Tierwise is uninstalled.

Eval Jobs are owned by their policy, and policies (like the CRDs) outlive an uninstall: an
eval Job still running would go on calling the upstream until its deadline. The eval
ServiceAccount has no owner at all. ``tierwise operator --cleanup`` (the chart's pre-delete
hook) deletes both, found by the labels Tierwise puts on them; the Jobs' pods and inputs
ConfigMaps go with their Job. Policies, tiers, profiles and the policies' ConfigMaps stay:
they are the user's (the ConfigMaps are deleted with their policy).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kubernetes.client import BatchV1Api
from kubernetes.client.rest import ApiException

from tierwise.controller import kube
from tierwise.controller.ownership import MANAGED_BY, MANAGED_BY_LABEL
from tierwise.evals.job import COMPONENT, COMPONENT_LABEL

log = logging.getLogger("tierwise.cleanup")

EVAL_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL}={COMPONENT}"


def cleanup(namespaces: Iterable[str] = ()) -> int:
    """Delete Tierwise's eval Jobs and eval ServiceAccounts in ``namespaces`` (all when
    empty); returns how many objects were deleted."""
    batch, core = BatchV1Api(kube.client()), kube.core()
    scopes = list(namespaces) or [None]
    deleted = 0
    for namespace in scopes:
        if namespace is None:
            jobs = batch.list_job_for_all_namespaces(label_selector=EVAL_SELECTOR).items
            accounts = core.list_service_account_for_all_namespaces(
                label_selector=EVAL_SELECTOR
            ).items
        else:
            jobs = batch.list_namespaced_job(namespace, label_selector=EVAL_SELECTOR).items
            accounts = core.list_namespaced_service_account(
                namespace, label_selector=EVAL_SELECTOR
            ).items
        for job in jobs:
            meta = job.metadata
            deleted += _gone(
                lambda m=meta: batch.delete_namespaced_job(
                    m.name, m.namespace, propagation_policy="Background"
                ),
                f"eval Job {meta.namespace}/{meta.name}",
            )
        for account in accounts:
            meta = account.metadata
            deleted += _gone(
                lambda m=meta: core.delete_namespaced_service_account(m.name, m.namespace),
                f"eval ServiceAccount {meta.namespace}/{meta.name}",
            )
    return deleted


def _gone(delete: object, what: str) -> int:
    try:
        delete()  # type: ignore[operator]
    except ApiException as exc:
        if exc.status == 404:
            return 0
        raise
    log.info("deleted %s", what)
    return 1
