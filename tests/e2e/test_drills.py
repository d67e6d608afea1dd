"""Failure drills on the real node: the runtime restarted, the acting operator deleted mid-eval.

Runs after test_chart.py (file order), whose checks expect untouched operator pods.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from e2e_cluster import (
    POLICY,
    THRESHOLD_PATH,
    Node,
    Release,
    Triage,
    eventually,
    new_namespace,
    pods,
    ready,
)

from harness.kubectl import Kubectl

pytestmark = pytest.mark.e2e

HASH_LABEL = "tierwise.dev/candidate-hash"


def containerd_pid(node: Node) -> int | None:
    """The running containerd (a child of the loop that restarts it)."""
    loop = (node.state / "containerd.pid").read_text().strip()
    children = Path(f"/proc/{loop}/task/{loop}/children").read_text().split()
    for pid in children:
        if Path(f"/proc/{pid}/comm").read_text().strip() == "containerd":
            return int(pid)
    return None


def test_containerd_restart_keeps_pods_running_and_new_pods_start(
    node: Node, tierwise: Release, kubectl: Kubectl
) -> None:
    before = {
        p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
        for p in pods(kubectl, tierwise.namespace, tierwise.selector)
    }
    killed = containerd_pid(node)
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    eventually(lambda: containerd_pid(node) not in (None, killed), "containerd restarted", 30)

    namespace = new_namespace(kubectl, "runtime", {})
    pause = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "after-restart"},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": tierwise.image,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "600"],
                }
            ]
        },
    }
    kubectl("create", "-f", "-", input=json.dumps(pause), namespace=namespace)
    eventually(
        lambda: ready(kubectl.get_json("pod", "after-restart", namespace=namespace)),
        "a pod created after the runtime restart Ready",
        timeout=120,
    )
    # The operator's containers kept running through it (shims outlive containerd).
    after = {
        p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
        for p in pods(kubectl, tierwise.namespace, tierwise.selector)
    }
    assert after == before
    assert all(ready(p) for p in pods(kubectl, tierwise.namespace, tierwise.selector))
    kubectl("delete", "namespace", namespace, "--wait=false")


def acting_operator(kubectl: Kubectl) -> str:
    """The replica kopf peering lets act: the highest priority."""
    status = kubectl.get_json("clusterkopfpeering", "tierwise").get("status", {})
    return max(status, key=lambda name: status[name]["priority"])


def test_acting_operator_deleted_mid_eval_the_other_replica_decides_once(
    triage: Triage, tierwise: Release, kubectl: Kubectl
) -> None:
    namespace = triage.namespace
    before = kubectl.get_json("cascadepolicy", POLICY, namespace=namespace).get("status", {})
    earlier = {before.get("candidateHash"), (before.get("rollout") or {}).get("decidedHash")}
    patch = [{"op": "replace", "path": THRESHOLD_PATH, "value": 0.7}]
    kubectl(
        "patch", "cascadepolicy", POLICY, "--type=json", "-p", json.dumps(patch),
        namespace=namespace,
    )  # fmt: skip

    def candidate_job() -> tuple[str, str] | None:
        status = kubectl.get_json("cascadepolicy", POLICY, namespace=namespace).get("status", {})
        candidate = status.get("candidateHash")
        if not candidate or candidate in earlier:
            return None
        label = candidate.split(":")[-1][:16]
        jobs = kubectl.get_json("jobs", "-l", f"{HASH_LABEL}={label}", namespace=namespace)
        return (candidate, label) if jobs["items"] else None

    candidate, label = eventually(candidate_job, "the eval Job of the new candidate", 120)
    leader = acting_operator(kubectl)
    kubectl("delete", "pod", leader, "--wait=false", namespace=tierwise.namespace)

    def decided() -> dict | None:
        status = kubectl.get_json("cascadepolicy", POLICY, namespace=namespace).get("status", {})
        if (status.get("rollout") or {}).get("decidedHash") == candidate:
            return status
        return None

    status = eventually(decided, "a decision after the acting operator was deleted", 360, 2)
    assert status["rollout"]["phase"] in ("Promoted", "Rejected"), status
    jobs = kubectl.get_json("jobs", "-l", f"{HASH_LABEL}={label}", namespace=namespace)["items"]
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    # The Deployment replaced the deleted replica; both Ready again.
    eventually(
        lambda: (
            len([p for p in pods(kubectl, tierwise.namespace, tierwise.selector) if ready(p)]) == 2
        ),
        "two operator replicas Ready again",
        timeout=180,
    )
