"""The local control plane is a real one: version, garbage collection, RBAC, tokens."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import LocalControlPlane
from harness.kubectl import Kubectl

pytestmark = pytest.mark.controlplane


def test_kubectl_version_reports_a_real_server(kubectl: Kubectl) -> None:
    versions = json.loads(kubectl("version", "-o", "json").stdout)
    server = versions["serverVersion"]
    assert re.fullmatch(r"v1\.3\d\.\d+", server["gitVersion"]), server
    assert server["major"] == "1"
    assert int(server["minor"]) >= 30


def test_readyz_and_controllers_are_up(controlplane: LocalControlPlane) -> None:
    status, body = controlplane.request("GET", "/readyz?verbose")
    assert status == 200, body
    assert "readyz check passed" in body
    controlplane.wait_ready(timeout=5)
    assert controlplane.is_running()
    assert set(controlplane.rss_bytes()) == {"etcd", "kube-apiserver", "kube-controller-manager"}


def _wait_gone(kubectl: Kubectl, kind: str, name: str, namespace: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while kubectl("get", kind, name, namespace=namespace, check=False).returncode == 0:
        assert time.monotonic() < deadline, f"{kind}/{name} still exists after {timeout}s"
        time.sleep(0.2)


def test_garbage_collector_deletes_dependents(kubectl: Kubectl, namespace: str) -> None:
    kubectl("create", "configmap", "owner", "--from-literal=a=b", namespace=namespace)
    owner = kubectl.get_json("configmap", "owner", namespace=namespace)
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "owner",
                    "uid": owner["metadata"]["uid"],
                }
            ],
        },
        "data": {"x": "y"},
    }
    kubectl.apply(json.dumps(dependent), namespace=namespace)
    kubectl("get", "configmap", "dependent", namespace=namespace)
    kubectl("delete", "configmap", "owner", namespace=namespace)
    _wait_gone(kubectl, "configmap", "dependent", namespace, timeout=60)


def test_orphan_deletion_keeps_dependents(kubectl: Kubectl, namespace: str) -> None:
    """The control case: the dependent disappears above because of its owner reference."""
    kubectl("create", "configmap", "owner", namespace=namespace)
    uid = kubectl.get_json("configmap", "owner", namespace=namespace)["metadata"]["uid"]
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "dependent", "ownerReferences": [ref]},
    }
    kubectl.apply(json.dumps(dependent), namespace=namespace)
    kubectl("delete", "configmap", "owner", "--cascade=orphan", namespace=namespace)
    _wait_gone(kubectl, "configmap", "owner", namespace, timeout=30)
    time.sleep(2)
    after = kubectl.get_json("configmap", "dependent", namespace=namespace)
    assert not after["metadata"].get("ownerReferences")


READER_ROLE = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: configmap-reader}
rules:
  - apiGroups: [""]
    resources: [configmaps]
    verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: configmap-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: Group, name: readers}
"""


def test_least_privilege_user_gets_only_what_rbac_grants(
    kubectl: Kubectl, namespace: str, user_kubeconfig: Callable[..., Path]
) -> None:
    kubectl.apply(READER_ROLE, namespace=namespace)
    kubectl("create", "configmap", "visible", "--from-literal=k=v", namespace=namespace)
    reader = kubectl.as_kubeconfig(user_kubeconfig("carol", ["readers"]))
    reader.wait_until_allowed("list", "configmaps", namespace=namespace)

    whoami = json.loads(reader("auth", "whoami", "-o", "json").stdout)
    assert whoami["status"]["userInfo"]["username"] == "carol"
    assert "readers" in whoami["status"]["userInfo"]["groups"]

    listed = reader("get", "configmaps", "-o", "name", namespace=namespace)
    assert "configmap/visible" in listed.stdout.split()

    denied = {
        "list secrets": ("get", "secrets"),
        "create configmap": ("create", "configmap", "mine"),
        "delete configmap": ("delete", "configmap", "visible"),
        "list configmaps elsewhere": ("get", "configmaps", "-n", "kube-system"),
    }
    for what, args in denied.items():
        result = reader(*args, namespace=None if "-n" in args else namespace, check=False)
        assert result.returncode != 0, what
        assert "forbidden" in result.stderr.lower(), (what, result.stderr)
        assert 'User "carol" cannot' in result.stderr, (what, result.stderr)
    kubectl("get", "configmap", "visible", namespace=namespace)


def test_refusal_is_http_403_through_the_python_client(
    kubectl: Kubectl, namespace: str, user_api_client: Callable[..., object]
) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    kubectl.apply(READER_ROLE, namespace=namespace)
    kubectl.wait_until_allowed(
        "list", "configmaps", "--as=dave", "--as-group=readers", namespace=namespace
    )
    core = client.CoreV1Api(user_api_client("dave", ["readers"]))
    assert core.list_namespaced_config_map(namespace).items is not None
    with pytest.raises(ApiException) as refused:
        core.list_namespaced_secret(namespace)
    assert refused.value.status == 403
    body = {"metadata": {"name": "nope"}, "data": {"a": "b"}}
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_config_map(namespace, body)
    assert refused.value.status == 403


def test_user_without_bindings_is_refused_everything(
    kubectl: Kubectl, namespace: str, user_kubeconfig: Callable[..., Path]
) -> None:
    nobody = kubectl.as_kubeconfig(user_kubeconfig("nobody"))
    result = nobody("get", "configmaps", namespace=namespace, check=False)
    assert result.returncode != 0
    assert 'User "nobody" cannot list resource "configmaps"' in result.stderr


def test_service_account_token_authenticates_as_the_service_account(
    kubectl: Kubectl, namespace: str, service_account_kubeconfig: Callable[[str, str], Path]
) -> None:
    kubectl("create", "serviceaccount", "robot", namespace=namespace)
    robot = kubectl.as_kubeconfig(service_account_kubeconfig(namespace, "robot"))
    info = json.loads(robot("auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]
    assert info["username"] == f"system:serviceaccount:{namespace}:robot"
    assert f"system:serviceaccounts:{namespace}" in info["groups"]
    # Authenticated, but not authorised for anything yet.
    assert robot("get", "pods", namespace=namespace, check=False).returncode != 0
    kubectl(
        "create",
        "rolebinding",
        "robot-view",
        "--clusterrole=view",
        f"--serviceaccount={namespace}:robot",
        namespace=namespace,
    )
    # `view` is an aggregated ClusterRole: this also proves the aggregation controller runs.
    robot.wait_until_allowed("list", "pods", namespace=namespace)
    assert robot("get", "pods", namespace=namespace).returncode == 0
