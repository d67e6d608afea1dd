"""Failure drills on the real node: the runtime restarted, the acting operator deleted mid-eval,
the emulator pod killed mid-stream.

Runs after test_chart.py (file order), whose checks expect untouched operator pods.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from e2e_cluster import (
    POLICY,
    THRESHOLD_PATH,
    Emulator,
    Node,
    Release,
    Triage,
    eventually,
    final_decision,
    new_namespace,
    pods,
    ready,
)
from test_sidecar import app_pod, create

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
    # 0.9 -> 0.85 is the safe cost cut the gate promotes (test_sidecar.py shows it).
    patch = [{"op": "replace", "path": THRESHOLD_PATH, "value": 0.85}]
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
        return status if final_decision(status, candidate) else None

    status = eventually(decided, "a decision after the acting operator was deleted", 360, 2)
    # The same verdict as without the failover, reached once.
    assert status["rollout"]["phase"] == "Promoted", status
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


# Streams a long answer from the chat route (one step: the router relays the emulator's
# stream live); says "streaming" once text flows, then how the stream ended.
STREAM = """
import json, time, anthropic
client = anthropic.Anthropic(api_key="app-key-never-forwarded", max_retries=0, timeout=90)
chunks, error, started = 0, None, time.time()
try:
    with client.messages.stream(
        model="claude-sonnet-5-5", max_tokens=4000,
        messages=[{"role": "user", "content": "Tell it all [[emulator:tokens=4000]]"}],
    ) as stream:
        for _ in stream.text_stream:
            chunks += 1
            if chunks == 5:
                print("streaming", flush=True)
except Exception as exc:
    error = {"type": type(exc).__name__, "module": type(exc).__module__, "text": str(exc)[:300]}
print(json.dumps({"chunks": chunks, "error": error, "seconds": round(time.time() - started, 1)}))
"""

ONE_CALL = """
import anthropic
client = anthropic.Anthropic(api_key="app-key-never-forwarded", max_retries=0)
message = client.messages.create(
    model="claude-sonnet-5-5", max_tokens=64, messages=[{"role": "user", "content": "Hello"}])
print(message.stop_reason)
"""


def test_emulator_pod_killed_mid_stream_the_app_gets_an_error_not_a_hang(
    triage: Triage, emulator: Emulator, kubectl: Kubectl
) -> None:
    namespace = triage.namespace
    create(kubectl, namespace, app_pod("streamer", triage.image, ["sleep", "3600"], {}))
    eventually(
        lambda: ready(kubectl.get_json("pod", "streamer", namespace=namespace)),
        "the streaming app pod Ready",
        timeout=120,
    )
    argv = [
        kubectl.executable, "--kubeconfig", str(kubectl.kubeconfig), "exec", "-n", namespace,
        "streamer", "-c", "app", "--", "python3", "-c", STREAM,
    ]  # fmt: skip
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as app:
        assert app.stdout is not None
        assert app.stdout.readline().strip() == "streaming"
        (upstream,) = pods(kubectl, emulator.namespace, "app=emulator")
        kubectl(
            "delete", "pod", upstream["metadata"]["name"], "--grace-period=0", "--force",
            namespace=emulator.namespace,
        )  # fmt: skip
        out, _ = app.communicate(timeout=120)
    ended = json.loads(out.strip().splitlines()[-1])
    print(f"\nstream cut by the emulator pod's death: {ended}")
    assert ended["chunks"] >= 5
    # Not a hang, and not a silently truncated answer: the SDK raises.
    assert ended["seconds"] < 60, ended
    # An Anthropic error event in the stream (the SDK's APIStatusError), not a torn connection.
    assert ended["error"] is not None and ended["error"]["type"] == "APIStatusError", ended
    assert "api_error" in ended["error"]["text"], ended
    # The Deployment's new emulator pod serves the next call through the same Service.
    kubectl(
        "rollout", "status", "deployment/emulator", "--timeout=120s", namespace=emulator.namespace
    )
    answer = eventually(
        lambda: kubectl(
            "exec",
            "streamer",
            "-c",
            "app",
            "--",
            "python3",
            "-c",
            ONE_CALL,
            namespace=namespace,
            check=False,
        ).stdout.strip(),
        "an answer from the new emulator pod",
        timeout=60,
        every=2,
    )
    assert answer == "end_turn"
