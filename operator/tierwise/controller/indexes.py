"""kopf indexes of the three kinds by namespace, so no handler lists objects per event.

Each entry is an ``Observed``: the object parsed once, when kopf indexes it. Pods are
indexed too, each reduced to its labels and the few facts the pod counts need
(``pods.IndexedPod``): a policy's pods are counted from the watch, never from a full list.
"""

from __future__ import annotations

from typing import Any

import kopf

from tierwise import GROUP, VERSION
from tierwise.api import CACHE_PROFILE, CASCADE_POLICY, MODEL_TIER
from tierwise.controller.objects import Observed, observe
from tierwise.controller.pods import IndexedPod, indexed_pod


@kopf.index(GROUP, VERSION, "modeltiers")
def tiers_by_namespace(namespace: str, body: kopf.Body, **_: Any) -> dict[str, Observed]:
    return {namespace: observe(body, MODEL_TIER)}


@kopf.index(GROUP, VERSION, "cacheprofiles")
def cache_profiles_by_namespace(namespace: str, body: kopf.Body, **_: Any) -> dict[str, Observed]:
    return {namespace: observe(body, CACHE_PROFILE)}


@kopf.index(GROUP, VERSION, "cascadepolicies")
def policies_by_namespace(namespace: str, body: kopf.Body, **_: Any) -> dict[str, Observed]:
    return {namespace: observe(body, CASCADE_POLICY)}


@kopf.index("", "v1", "pods")
def pods_by_namespace(namespace: str, body: kopf.Body, **_: Any) -> dict[str, IndexedPod]:
    return {namespace: indexed_pod(body)}
