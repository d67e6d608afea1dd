"""Two operator replicas with kopf peering, as the Helm chart runs them.

Both replicas serve the injection webhook (self-signed, each with its own CA, merged into
the caBundle of a statically registered configuration); only the higher-priority one
reconciles. SIGKILL of the active replica: the standby takes over once the dead one's
peering lease runs out, and a change made meanwhile lands. Every ConfigMap moves forward
only (no content written, replaced and written again).
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from operator_process import (
    HAIKU_PRICE_CHANGE,
    OperatorProcess,
    apply_ungated,
    bind_operator_identity,
    eventually,
    free_port,
)

from harness.kubectl import Kubectl

pytestmark = pytest.mark.controlplane

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "support-triage"
CONFIGURATION = "tierwise-ha-test"
LIFETIME = 10


@pytest.fixture(scope="module")
def ha_kubeconfig(controlplane, kubectl: Kubectl, user_kubeconfig) -> Path:
    kubectl.apply(ROOT / "config/peering/crds.yaml")
    kubectl("wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev")
    kubectl.apply(ROOT / "config/peering/tierwise-peering.yaml")
    return bind_operator_identity(
        kubectl,
        user_kubeconfig,
        "tierwise-ha",
        ["tierwise-operator", "tierwise-operator-webhook-manager"],
    )


@pytest.fixture(scope="module")
def static_registration(kubectl: Kubectl) -> Iterator[str]:
    """A configuration as the chart registers it: no caBundle yet, selecting no namespace
    (the API server never calls it here; the test calls the replicas itself)."""
    configuration = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION},
        "webhooks": [
            {
                "name": "inject-router.tierwise.dev",
                "clientConfig": {"url": "https://127.0.0.1:1/inject-router"},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                        "operations": ["CREATE"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"tierwise-ha-test": "never"}},
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
            }
        ],
    }
    kubectl.apply(json.dumps(configuration))
    yield CONFIGURATION
    kubectl("delete", "mutatingwebhookconfiguration", CONFIGURATION, check=False)


def replica(kubeconfig: Path, log: Path, priority: int, webhook_port: int) -> OperatorProcess:
    return OperatorProcess(
        kubeconfig,
        log,
        [
            "--peering=tierwise",
            f"--priority={priority}",
            f"--peering-lifetime-seconds={LIFETIME}",
            "--webhook-address=127.0.0.1",
            "--webhook-host=127.0.0.1",
            f"--webhook-port={webhook_port}",
            f"--webhook-ca-bundle-configuration={CONFIGURATION}",
        ],
        standalone=False,
    )


class ConfigMapHistory:
    """Every hash each rendered ConfigMap of ``namespace`` has had, in order."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        api = kubernetes.config.new_client_from_config(str(kubeconfig))
        self.core = kubernetes.client.CoreV1Api(api)
        self.namespace = namespace
        self.hashes: defaultdict[str, list[str]] = defaultdict(list)
        self.watch = kubernetes.watch.Watch()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._follow()
        except Exception:  # the stream ends when the test stops the watch
            return

    def _follow(self) -> None:
        for event in self.watch.stream(
            self.core.list_namespaced_config_map,
            self.namespace,
            label_selector="tierwise.dev/policy",
            timeout_seconds=600,
        ):
            obj = event["object"]
            value = (obj.metadata.annotations or {}).get("tierwise.dev/config-hash", "")
            history = self.hashes[obj.metadata.name]
            if not history or history[-1] != value:
                history.append(value)


def metric(process: OperatorProcess, name: str) -> float:
    total = 0.0
    for line in process.metrics().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def admission_review(namespace: str) -> bytes:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "inbox", "namespace": namespace, "labels": {"app": "support-inbox"}},
        "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]},
    }
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "ha-test",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace,
                "operation": "CREATE",
                "object": pod,
                "userInfo": {"username": "test"},
            },
        }
    ).encode()


def ask(port: int, ca_bundle: bytes, namespace: str) -> dict[str, Any]:
    """Call a replica's webhook as the API server would, trusting only the caBundle."""
    with tempfile.NamedTemporaryFile(suffix=".crt") as ca:
        ca.write(ca_bundle)
        ca.flush()
        context = ssl.create_default_context(cafile=ca.name)
    request = urllib.request.Request(
        f"https://127.0.0.1:{port}/inject-router",
        data=admission_review(namespace),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return json.loads(response.read())["response"]


def test_one_replica_reconciles_either_answers_and_the_standby_takes_over(
    ha_kubeconfig: Path, static_registration: str, kubectl: Kubectl, namespace: str, tmp_path: Path
):
    ports = {"active": free_port(), "standby": free_port()}
    active = replica(ha_kubeconfig, tmp_path / "active.log", 200, ports["active"])
    standby = replica(ha_kubeconfig, tmp_path / "standby.log", 100, ports["standby"])
    history = ConfigMapHistory(kubectl.kubeconfig, namespace)
    active.start()
    standby.start()
    try:
        apply_ungated(kubectl, EXAMPLE, "email-triage", namespace)
        eventually(
            lambda: (
                kubectl(
                    "get", "configmap", "tierwise-email-triage", namespace=namespace, check=False
                ).returncode
                == 0
            ),
            "the ConfigMap",
        )
        time.sleep(5)  # a few resyncs of both replicas (every 2 s)
        assert metric(active, "tierwise_operator_reconciles_total") >= 1
        assert metric(standby, "tierwise_operator_reconciles_total") == 0
        assert metric(standby, "tierwise_operator_config_writes_total") == 0

        # Both replicas patched their CA into the static registration; the API server
        # would trust either, and either answers (and knows the policy: indexes are kept
        # while paused).
        def bundle() -> bytes | None:
            config = kubectl.get_json("mutatingwebhookconfiguration", CONFIGURATION)
            raw = base64.b64decode(config["webhooks"][0]["clientConfig"].get("caBundle") or "")
            return raw if raw.count(b"BEGIN CERTIFICATE") >= 2 else None

        ca_bundle = eventually(bundle, "both CAs in the caBundle")
        for port in ports.values():
            answer = eventually(lambda port=port: ask(port, ca_bundle, namespace), "an answer")
            assert answer["allowed"] is True and answer.get("patch"), answer

        # Kill the active replica and change a tier at once: the standby lands the change.
        before = history.hashes["tierwise-email-triage"][-1]
        active.kill()
        killed = time.monotonic()
        kubectl(
            "patch",
            "modeltier",
            "haiku",
            "--type=merge",
            "-p",
            json.dumps(HAIKU_PRICE_CHANGE),
            namespace=namespace,
        )
        eventually(
            lambda: history.hashes["tierwise-email-triage"][-1] != before,
            "the standby's re-render",
            timeout=LIFETIME + 30,
        )
        takeover = time.monotonic() - killed
        assert takeover < LIFETIME + 20, takeover
        assert "Resuming operations" in standby.log.read_text()
        time.sleep(3)
        # Forward only: no hash came back after being replaced.
        for name, hashes in history.hashes.items():
            assert len(hashes) == len(set(hashes)), (name, hashes)
    finally:
        active.stop()
        standby.stop()
        history.watch.stop()
