"""The Kubernetes API as the handlers use it: a few calls, 404 as None, merge patches.

Every write names the field manager ``tierwise-operator``, so ``managedFields`` and audit
logs say who wrote what.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from tierwise import GROUP, VERSION

FIELD_MANAGER = "tierwise-operator"
# Policies are re-rendered concurrently (see sync.py): one connection per worker.
CONNECTION_POOL_SIZE = 16

log = logging.getLogger("tierwise.kube")
_client: kubernetes.client.ApiClient | None = None
_lock = threading.Lock()


def connect() -> None:
    """In-cluster credentials when running in a pod, else KUBECONFIG / ~/.kube/config."""
    global _client
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = CONNECTION_POOL_SIZE
    _client = kubernetes.client.ApiClient(configuration)


def client() -> kubernetes.client.ApiClient:
    with _lock:
        if _client is None:
            connect()
    assert _client is not None
    return _client


def core() -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(client())


def custom() -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(client())


def read_config_map(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return client().sanitize_for_serialization(
            core().read_namespaced_config_map(name, namespace)
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


# Ask for metadata only (PartialObjectMetadataList): names, labels, annotations and
# resourceVersions, without the data.
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
ONE_METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


def read_config_map_metadata(namespace: str, name: str) -> dict[str, Any] | None:
    """One ConfigMap's metadata (resourceVersion, labels...) without its data."""
    try:
        response = core().read_namespaced_config_map(
            name, namespace, _headers={"Accept": ONE_METADATA_ONLY}, _preload_content=False
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return dict(json.loads(response.data))


def list_config_map_metadata(namespace: str | None, label_selector: str) -> list[dict[str, Any]]:
    """The metadata of the ConfigMaps matching ``label_selector`` (no data: listing a
    thousand rendered configs in full each resync would cost megabytes and CPU)."""
    options: dict[str, Any] = {
        "label_selector": label_selector,
        "_headers": {"Accept": METADATA_ONLY},
        "_preload_content": False,
    }
    if namespace is None:
        response = core().list_config_map_for_all_namespaces(**options)
    else:
        response = core().list_namespaced_config_map(namespace, **options)
    return list(json.loads(response.data).get("items") or [])


def create_or_replace_config_map(current: Mapping[str, Any] | None, desired: dict[str, Any]) -> str:
    """Create or replace; returns the resourceVersion written."""
    meta = desired["metadata"]
    if current is None:
        written = core().create_namespaced_config_map(
            meta["namespace"], desired, field_manager=FIELD_MANAGER
        )
    else:
        # Replace with the read resourceVersion: a concurrent writer gets a 409 and retries.
        body = {
            **desired,
            "metadata": {**meta, "resourceVersion": current["metadata"]["resourceVersion"]},
        }
        written = core().replace_namespaced_config_map(
            meta["name"], meta["namespace"], body, field_manager=FIELD_MANAGER
        )
    return str(written.metadata.resource_version)


def api_message(exc: ApiException) -> str:
    """The API server's own message, else the HTTP status."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or f"HTTP {exc.status} {exc.reason}")


def patch_status(plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
    """Merge-patch ``status``; False when the object is gone."""
    try:
        custom().patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            {"status": dict(status)},
            field_manager=FIELD_MANAGER,
        )
    except ApiException as exc:
        if exc.status == 404:  # deleted meanwhile: nothing to report on
            return False
        raise
    return True


def list_objects(plural: str, namespace: str | None) -> list[dict[str, Any]]:
    if namespace is None:
        result = custom().list_cluster_custom_object(GROUP, VERSION, plural)
    else:
        result = custom().list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
    return list(result.get("items", []))


def list_pods(namespace: str, label_selector: str) -> list[dict[str, Any]]:
    pods = core().list_namespaced_pod(namespace, label_selector=label_selector)
    return [client().sanitize_for_serialization(p) for p in pods.items]


def post_event(involved: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
    """A core/v1 Event about ``involved`` ({apiVersion, kind, metadata{name,namespace,uid}}).

    Posted directly, not through kopf's event queue, so it works from any thread (the
    resync loop) and is never lost outside a handler's context. Failing to post an Event
    is logged, never raised: it must not fail the reconcile it reports on.
    """
    meta = involved["metadata"]
    now = dt.datetime.now(dt.UTC)
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": involved["apiVersion"],
            "kind": involved["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid") or None,
        },
        "type": event_type,
        "reason": reason,
        "message": message[:1024],
        "firstTimestamp": now.isoformat(),
        "lastTimestamp": now.isoformat(),
        "count": 1,
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
        "reportingInstance": FIELD_MANAGER,
    }
    try:
        core().create_namespaced_event(meta["namespace"], body, field_manager=FIELD_MANAGER)
    except ApiException as exc:
        log.warning(
            "could not post event %s on %s/%s: %s",
            reason,
            meta["namespace"],
            meta["name"],
            exc.status,
        )
