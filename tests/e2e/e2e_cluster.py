"""Helpers and constants of the end-to-end suite (imported by its conftest and tests)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.kubectl import Kubectl

ROOT = Path(__file__).resolve().parents[2]
NODE_SH = ROOT / "hack" / "node.sh"
STATE = Path(os.environ.get("TIERWISE_NODE_DIR", ROOT / ".tmp" / "e2e-node"))
CHART = ROOT / "charts" / "tierwise"
EXAMPLES = ROOT / "examples" / "support-triage"
RELEASE = "tierwise"
OPERATOR_NS = "tierwise-system"
# The emulator's Service gets a fixed ClusterIP: pods have no cluster DNS here, and ModelTier
# endpoints are plain URLs.
EMULATOR_IP = "10.96.77.77"
EMULATOR_PORT = 8090
API_KEY = "sk-ant-e2e-not-a-real-key"
POLICY = "email-triage"
CONFIG_MAP = f"tierwise-{POLICY}"
THRESHOLD_PATH = "/spec/routes/0/steps/0/escalateWhen/2/threshold"


def eventually(
    check: Callable[[], Any], what: str, timeout: float = 90.0, every: float = 0.5
) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not after {timeout:.0f}s (last: {last!r})")


def final_decision(status: dict[str, Any], candidate: str | None) -> bool:
    """The rollout decided ``candidate`` and finished acting on it.

    A promotion is recorded as ``Promoting`` before the live ConfigMap is written and becomes
    ``Promoted`` only after; a test that reads the decision in between sees a half-done step.
    """
    rollout = status.get("rollout") or {}
    return (
        candidate is not None
        and rollout.get("decidedHash") == candidate
        and rollout.get("phase") != "Promoting"
    )


def pods(kubectl: Kubectl, namespace: str, selector: str) -> list[dict[str, Any]]:
    return kubectl.get_json("pods", "-l", selector, namespace=namespace)["items"]


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def new_namespace(kubectl: Kubectl, stem: str, labels: dict[str, str]) -> str:
    name = f"e2e-{stem}-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", name)
    if labels:
        kubectl("label", "namespace", name, *[f"{k}={v}" for k, v in labels.items()])
    eventually(
        lambda: (
            kubectl("get", "serviceaccount", "default", namespace=name, check=False).returncode == 0
        ),
        "the default ServiceAccount",
    )
    return name


def restricted_pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def restricted_container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


@dataclass(frozen=True)
class Release:
    namespace: str
    image: str
    selector: str


@dataclass(frozen=True)
class Emulator:
    namespace: str
    url: str


@dataclass
class Node:
    state: Path
    env: dict[str, str]
    host_before: str = ""

    @property
    def kubeconfig(self) -> Path:
        return self.state / "controlplane" / "kubeconfig"

    def sh(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(NODE_SH), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(f"hack/node.sh {' '.join(args)}: {result.stderr}{result.stdout}")
        return result

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the node's network and mount namespaces."""
        return self.sh("exec", *argv, check=check, timeout=60)

    def snapshot(self) -> str:
        return subprocess.run(
            [str(ROOT / "hack" / "node" / "host-snapshot.sh")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout


@dataclass(frozen=True)
class Triage:
    namespace: str
    image: str
