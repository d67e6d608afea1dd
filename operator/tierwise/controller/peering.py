"""Whether this replica is the active one, by the rule kopf's peering applies.

kopf pauses a replica's watchers while a live peer with a higher priority exists. The resync
loop runs outside kopf's watchers, so it checks the same rule itself: otherwise a standby
replica would keep writing ConfigMaps and status next to the active one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.rest import ApiException

from tierwise.controller import kube

PEERING_GROUP, PEERING_VERSION = "kopf.dev", "v1"


def outranked(peers: Mapping[str, Mapping[str, Any]], own_priority: int, now: datetime) -> bool:
    """True when a live peer has a higher priority (this replica is then paused by kopf)."""
    for info in peers.values():
        lastseen = datetime.fromisoformat(str(info.get("lastseen")))
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=UTC)
        alive = lastseen + timedelta(seconds=int(info.get("lifetime", 60))) > now
        if alive and int(info.get("priority", 0)) > own_priority:
            return True
    return False


def is_active(peering: str | None, own_priority: int, namespace: str | None) -> bool:
    """Standalone replicas, and a missing peering object, count as active."""
    if peering is None:
        return True
    api = kube.custom()
    try:
        if namespace is None:
            obj = api.get_cluster_custom_object(
                PEERING_GROUP, PEERING_VERSION, "clusterkopfpeerings", peering
            )
        else:
            obj = api.get_namespaced_custom_object(
                PEERING_GROUP, PEERING_VERSION, namespace, "kopfpeerings", peering
            )
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return not outranked(obj.get("status") or {}, own_priority, datetime.now(UTC))
