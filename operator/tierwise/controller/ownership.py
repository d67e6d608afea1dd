"""Whether an object the operator is about to write is its own.

The operator derives the names of what it creates (``tierwise-<policy>``, ``<policy>-eval-
<hash>``, ``tierwise-eval``); a team's object may already carry one of them. Writing it
would overwrite the team's data, and adding an owner reference would hand it to the garbage
collector with the policy. So every write path checks here first, and an object that is not
ours is left exactly as it is: the caller reports a conflict instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tierwise.controller.objects import Observed

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "tierwise"
CONFIG_MAP_CONFLICT = "ConfigMapConflict"
STALLED = "Stalled"


class NotOwned(Exception):
    """An object with the name the operator needs exists and belongs to someone else."""

    def __init__(self, kind: str, namespace: str, name: str, owner: str) -> None:
        self.kind, self.namespace, self.name = kind, namespace, name
        super().__init__(
            f"{kind} {name} exists in namespace {namespace} and is not owned by {owner};"
            f" Tierwise leaves it unchanged: rename or delete it"
        )


def owned_by(obj: Mapping[str, Any] | None, owner_uid: str) -> bool:
    """``obj`` is absent, or names ``owner_uid`` among its owner references."""
    if obj is None:
        return True
    references = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return any(r.get("uid") == owner_uid for r in references)


def owned_by_kind(obj: Mapping[str, Any] | None, kind: str, name: str) -> bool:
    """``obj`` is absent, or owned by a ``kind`` called ``name`` (whatever its uid: e.g. a
    Job's inputs, made by an earlier attempt to start it)."""
    if obj is None:
        return True
    references = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return any(r.get("kind") == kind and r.get("name") == name for r in references)


def managed_by_tierwise(obj: Mapping[str, Any] | None) -> bool:
    """``obj`` is absent, or labelled as made by Tierwise (an object without an owner, such
    as the eval ServiceAccount shared by a namespace's policies)."""
    if obj is None:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY_LABEL) == MANAGED_BY


def ensure_owned(obj: Mapping[str, Any] | None, kind: str, owner_uid: str, owner: str) -> None:
    """Raise ``NotOwned`` unless ``obj`` (a ``kind``) is absent or owned by ``owner_uid``."""
    if not owned_by(obj, owner_uid):
        assert obj is not None
        meta = obj.get("metadata") or {}
        raise NotOwned(kind, str(meta.get("namespace")), str(meta.get("name")), owner)


def ensure_policy_owns(policy: Observed, config_map: Mapping[str, Any] | None) -> None:
    """Raise ``NotOwned`` when the policy's ConfigMap name is taken by someone else's
    ConfigMap: it is never replaced, relabelled or adopted."""
    owner = f"CascadePolicy {policy.name} (uid {policy.uid})"
    ensure_owned(config_map, "ConfigMap", policy.uid, owner)
