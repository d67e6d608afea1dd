"""kopf indexes of the three kinds by namespace, so no handler lists objects per event."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from tierwise import GROUP, VERSION


def plain(value: Any) -> Any:
    """A deep copy as plain dicts and lists (kopf bodies are live mapping views)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


@kopf.index(GROUP, VERSION, "modeltiers")
def tiers_by_namespace(namespace: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
    return {namespace: plain(body)}


@kopf.index(GROUP, VERSION, "cacheprofiles")
def cache_profiles_by_namespace(namespace: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
    return {namespace: plain(body)}


@kopf.index(GROUP, VERSION, "cascadepolicies")
def policies_by_namespace(namespace: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
    return {namespace: plain(body)}
