"""The Kubernetes API as the handlers use it: a few calls, 404 as None, merge patches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from tierwise import GROUP, VERSION

_client: kubernetes.client.ApiClient | None = None


def connect() -> None:
    """In-cluster credentials when running in a pod, else KUBECONFIG / ~/.kube/config."""
    global _client
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    _client = kubernetes.client.ApiClient()


def client() -> kubernetes.client.ApiClient:
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


def create_or_replace_config_map(
    current: Mapping[str, Any] | None, desired: dict[str, Any]
) -> None:
    meta = desired["metadata"]
    if current is None:
        core().create_namespaced_config_map(meta["namespace"], desired)
    else:
        # Replace with the read resourceVersion: a concurrent writer gets a 409 and retries.
        body = {
            **desired,
            "metadata": {**meta, "resourceVersion": current["metadata"]["resourceVersion"]},
        }
        core().replace_namespaced_config_map(meta["name"], meta["namespace"], body)


def patch_status(plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
    try:
        custom().patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural, name, {"status": dict(status)}
        )
    except ApiException as exc:
        if exc.status != 404:  # deleted meanwhile: nothing to report on
            raise


def list_objects(plural: str, namespace: str | None) -> list[dict[str, Any]]:
    if namespace is None:
        result = custom().list_cluster_custom_object(GROUP, VERSION, plural)
    else:
        result = custom().list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
    return list(result.get("items", []))


def list_pods(namespace: str, label_selector: str) -> list[dict[str, Any]]:
    pods = core().list_namespaced_pod(namespace, label_selector=label_selector)
    return [client().sanitize_for_serialization(p) for p in pods.items]
