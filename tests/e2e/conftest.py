"""End-to-end fixtures: a real node (``hack/node.sh``) with the chart installed from the real image.

Everything here goes through the API server (kubectl, helm, logs, exec, port-forward) or
``hack/node.sh exec`` into the node's namespaces; nothing dials a pod or node IP from the
host's network, where those addresses do not exist.

- ``node`` -> :class:`Node`: the running node, its kubeconfig and ``exec`` into it
- ``kubectl`` / ``helm`` -> bound to the node's control plane (admin)
- ``tierwise`` -> the chart installed (both operator replicas Ready), release facts
- ``emulator`` -> the model emulator as a Deployment + Service, and its in-cluster URL
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_cluster import (
    API_KEY,
    CHART,
    CONFIG_MAP,
    EMULATOR_IP,
    EMULATOR_PORT,
    EXAMPLES,
    OPERATOR_NS,
    RELEASE,
    STATE,
    Emulator,
    Node,
    Release,
    Triage,
    eventually,
    new_namespace,
    pods,
    ready,
    restricted_container_security,
    restricted_pod_security,
)

from harness.kubectl import Kubectl, find_tool
from tierwise.routerconfig.defaults import CONFIG_KEY


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is ``e2e``; the host check stops the node, so it runs last."""
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda i: Path(str(i.fspath)).name == "test_host_unchanged.py")


@pytest.fixture(scope="session")
def node() -> Iterator[Node]:
    """The node, started once for the session and stopped after it (also after a failure)."""
    env = {**os.environ, "TIERWISE_NODE_DIR": str(STATE)}
    node = Node(STATE, env)
    node.sh("down", check=False)  # what a killed earlier run left behind
    node.host_before = node.snapshot()
    try:
        node.sh("up")
        yield node
    finally:
        node.sh("down", check=False)


@pytest.fixture(scope="session")
def kubectl(node: Node) -> Kubectl:
    return Kubectl(node.kubeconfig, find_tool("kubectl"))


@pytest.fixture(scope="session")
def helm(node: Node) -> Callable[..., subprocess.CompletedProcess[str]]:
    executable = find_tool("helm")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [executable, "--kubeconfig", str(node.kubeconfig), *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}{result.stdout}")
        return result

    return run


def project_image() -> tuple[str, str]:
    """(repository, tag) of the image `make image` built and the node imported."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    image = (cache / "tierwise" / "node" / "images" / "project-image").read_text().strip()
    repository, _, tag = image.rpartition(":")
    return repository, tag


@pytest.fixture(scope="session")
def tierwise(node: Node, kubectl: Kubectl, helm: Callable[..., Any]) -> Release:
    """``helm install`` of the chart with the real image; both operator replicas Ready."""
    repository, tag = project_image()
    helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        OPERATOR_NS,
        "--create-namespace",
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        # The image exists only in the node's runtime: there is no registry to pull from.
        "--set",
        "image.pullPolicy=Never",
        "--wait",
        "--timeout",
        "240s",
    )
    selector = "app.kubernetes.io/name=tierwise"
    eventually(
        lambda: len([p for p in pods(kubectl, OPERATOR_NS, selector) if ready(p)]) == 2,
        "both operator replicas Ready",
        timeout=180,
    )
    return Release(OPERATOR_NS, f"{repository}:{tag}", selector)


@pytest.fixture(scope="session")
def emulator(tierwise: Release, kubectl: Kubectl) -> Emulator:
    """`tierwise emulator` as a Deployment behind a Service, answering the triage dataset."""
    namespace = new_namespace(kubectl, "emulator", {})
    kubectl.apply(EXAMPLES / "dataset-configmap.yaml", namespace=namespace)
    labels = {"app": "emulator"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "emulator"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": restricted_pod_security(),
                    "containers": [
                        {
                            "name": "emulator",
                            "image": tierwise.image,
                            "imagePullPolicy": "Never",
                            "command": [
                                "tierwise",
                                "emulator",
                                "--host=0.0.0.0",
                                f"--port={EMULATOR_PORT}",
                                "--dataset=/data/dataset.jsonl",
                                f"--api-key={API_KEY}",
                            ],
                            "readinessProbe": {
                                "httpGet": {"path": "/_emulator/health", "port": EMULATOR_PORT},
                                "periodSeconds": 1,
                            },
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            "securityContext": restricted_container_security(),
                        }
                    ],
                    "volumes": [{"name": "data", "configMap": {"name": "triage-eval-dataset"}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "emulator"},
        "spec": {
            "clusterIP": EMULATOR_IP,
            "selector": labels,
            "ports": [{"port": EMULATOR_PORT, "targetPort": EMULATOR_PORT}],
        },
    }
    kubectl.apply(json.dumps(deployment), namespace=namespace)
    kubectl.apply(json.dumps(service), namespace=namespace)
    kubectl("rollout", "status", "deployment/emulator", "--timeout=120s", namespace=namespace)
    return Emulator(namespace, f"http://{EMULATOR_IP}:{EMULATOR_PORT}")


@pytest.fixture(scope="module")
def triage(tierwise: Release, emulator: Emulator, kubectl: Kubectl) -> Triage:
    """An opted-in namespace under restricted pod security with the example policy, whose
    tiers all point at the emulator's Service."""
    namespace = new_namespace(
        kubectl,
        "triage",
        {
            "tierwise.dev/injection": "enabled",
            "pod-security.kubernetes.io/enforce": "restricted",
        },
    )
    kubectl(
        "create", "secret", "generic", "anthropic-api-key", f"--from-literal=api-key={API_KEY}",
        namespace=namespace,
    )  # fmt: skip
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "ModelTier":
                doc["spec"]["endpoint"] = emulator.url
            if doc:
                kubectl.apply(json.dumps(doc), namespace=namespace)

    def rendered() -> bool:
        cm = kubectl("get", "configmap", CONFIG_MAP, "-o", "json", namespace=namespace, check=False)
        if cm.returncode != 0:
            return False
        document = json.loads(json.loads(cm.stdout)["data"][CONFIG_KEY])
        return all(t["endpoint"] == emulator.url for t in document["tiers"].values())

    eventually(rendered, "the policy's router config, pointing at the emulator", timeout=120)
    return Triage(namespace, tierwise.image)
