"""Jobs run through the real Job controller; the pod runner plays the kubelet."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from harness.kubectl import Kubectl
from harness.podrunner import LOCAL_RUN_LABEL, PodRunner

pytestmark = pytest.mark.controlplane


def job_manifest(name: str, container: dict[str, Any], **pod_spec: Any) -> str:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {LOCAL_RUN_LABEL: "true"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "python:3.11", **container}],
                    **pod_spec,
                },
            },
        },
    }
    return json.dumps(job)


def wait_for_job(kubectl: Kubectl, name: str, namespace: str, timeout: float = 60) -> str:
    """The job's terminal condition type (Complete or Failed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = kubectl.get_json("job", name, namespace=namespace).get("status", {})
        for condition in status.get("conditions", []):
            if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
                return str(condition["type"])
        time.sleep(0.2)
    raise AssertionError(f"job {name} did not finish in {timeout}s: {status}")


def job_pod(kubectl: Kubectl, job: str, namespace: str) -> dict[str, Any]:
    pods = kubectl.get_json("pods", "-l", f"job-name={job}", namespace=namespace)["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return dict(pods[0])


def test_job_that_prints_completes(kubectl: Kubectl, namespace: str, pod_runner: PodRunner) -> None:
    kubectl.apply(
        job_manifest("answer", {"command": ["python", "-c", "print(42)"]}), namespace=namespace
    )
    assert wait_for_job(kubectl, "answer", namespace) == "Complete"
    job = kubectl.get_json("job", "answer", namespace=namespace)
    assert job["status"]["succeeded"] == 1
    pod = job_pod(kubectl, "answer", namespace)
    assert pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert terminated["reason"] == "Completed"
    assert pod_runner.logs(namespace, pod["metadata"]["name"]).strip() == "42"


def test_job_that_exits_1_fails(kubectl: Kubectl, namespace: str, pod_runner: PodRunner) -> None:
    container = {
        "command": ["python", "-c", "import sys; print('bad input', file=sys.stderr); sys.exit(1)"],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    kubectl.apply(job_manifest("broken", container), namespace=namespace)
    assert wait_for_job(kubectl, "broken", namespace) == "Failed"
    job = kubectl.get_json("job", "broken", namespace=namespace)
    assert job["status"]["failed"] == 1
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    terminated = job_pod(kubectl, "broken", namespace)["status"]["containerStatuses"][0]
    assert terminated["state"]["terminated"]["exitCode"] == 1
    assert terminated["state"]["terminated"]["message"].strip() == "bad input"


def test_retries_count_against_backoff_limit(
    kubectl: Kubectl, namespace: str, pod_runner: PodRunner
) -> None:
    manifest = json.loads(
        job_manifest("flaky", {"command": ["python", "-c", "raise SystemExit(2)"]})
    )
    manifest["spec"]["backoffLimit"] = 1
    kubectl.apply(json.dumps(manifest), namespace=namespace)
    assert wait_for_job(kubectl, "flaky", namespace, timeout=90) == "Failed"
    pods = kubectl.get_json("pods", "-l", "job-name=flaky", namespace=namespace)["items"]
    assert len(pods) == 2
    assert {p["status"]["phase"] for p in pods} == {"Failed"}


def test_pod_sees_env_configmap_volume_and_downward_api(
    kubectl: Kubectl, namespace: str, pod_runner: PodRunner
) -> None:
    kubectl("create", "configmap", "settings", "--from-literal=greeting=hello", namespace=namespace)
    kubectl(
        "create", "secret", "generic", "creds", "--from-literal=token=s3cret", namespace=namespace
    )
    script = (
        "import os, pathlib, sys; "
        "print(os.environ['MODE'], os.environ['POD_NS'], os.environ['TOKEN'], "
        "pathlib.Path(sys.argv[1]).read_text(), os.environ['GREETING_FILE'].endswith('greeting'))"
    )
    container = {
        "command": ["python", "-c", script],
        "args": ["/etc/settings/greeting"],
        "env": [
            {"name": "MODE", "value": "eval"},
            {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "GREETING_FILE", "value": "/etc/settings/greeting"},
        ],
        "volumeMounts": [{"name": "settings", "mountPath": "/etc/settings"}],
    }
    manifest = job_manifest(
        "env", container, volumes=[{"name": "settings", "configMap": {"name": "settings"}}]
    )
    kubectl.apply(manifest, namespace=namespace)
    assert wait_for_job(kubectl, "env", namespace) == "Complete"
    pod = job_pod(kubectl, "env", namespace)
    output = pod_runner.logs(namespace, pod["metadata"]["name"]).split()
    assert output == ["eval", namespace, "s3cret", "hello", "True"]


def test_pods_without_the_label_are_left_alone(
    kubectl: Kubectl, namespace: str, pod_runner: PodRunner
) -> None:
    manifest = json.loads(job_manifest("unlabelled", {"command": ["python", "-c", "print(1)"]}))
    manifest["spec"]["template"]["metadata"]["labels"] = {}
    kubectl.apply(json.dumps(manifest), namespace=namespace)
    time.sleep(3)
    pod = job_pod(kubectl, "unlabelled", namespace)
    assert pod["status"]["phase"] == "Pending"
    assert not pod["status"].get("containerStatuses")


def test_deleting_a_job_stops_its_process(
    kubectl: Kubectl, namespace: str, pod_runner: PodRunner
) -> None:
    container = {
        "command": ["python", "-c", "import time; print('started', flush=True); time.sleep(600)"]
    }
    kubectl.apply(job_manifest("sleeper", container), namespace=namespace)
    deadline = time.monotonic() + 30
    while True:
        pods = kubectl.get_json("pods", "-l", "job-name=sleeper", namespace=namespace)["items"]
        if pods and pods[0]["status"].get("phase") == "Running":
            break
        assert time.monotonic() < deadline, "pod never ran"
        time.sleep(0.2)
    name = pods[0]["metadata"]["name"]
    kubectl("delete", "job", "sleeper", "--cascade=foreground", namespace=namespace)
    outcome = pod_runner.wait_for(namespace, name, timeout=30)
    assert outcome.phase == "Deleted"
    assert outcome.exit_codes["main"] in (137, 143)


def test_on_failure_restarts_the_container_in_place(
    kubectl: Kubectl, namespace: str, pod_runner: PodRunner
) -> None:
    # Fails on the first run, succeeds on the second: the emptyDir survives the restart.
    script = (
        "import pathlib, sys; marker = pathlib.Path(sys.argv[1]) / 'tried'; "
        "first = not marker.exists(); marker.touch(); sys.exit(1 if first else 0)"
    )
    container = {
        "command": ["python", "-c", script, "/scratch"],
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
    }
    manifest = json.loads(
        job_manifest("retry", container, volumes=[{"name": "scratch", "emptyDir": {}}])
    )
    manifest["spec"]["backoffLimit"] = 3
    manifest["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    kubectl.apply(json.dumps(manifest), namespace=namespace)
    assert wait_for_job(kubectl, "retry", namespace) == "Complete"
    status = job_pod(kubectl, "retry", namespace)["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["state"]["terminated"]["exitCode"] == 0


def test_native_sidecar_runs_alongside_and_stops_after_main(
    kubectl: Kubectl, namespace: str, pod_runner: PodRunner
) -> None:
    sidecar = {
        "name": "router",
        "image": "tierwise:dev",
        "restartPolicy": "Always",
        "command": [
            "python",
            "-c",
            "import time; print('sidecar up', flush=True); time.sleep(600)",
        ],
    }
    manifest = job_manifest(
        "with-sidecar",
        {"command": ["python", "-c", "print('main done')"]},
        initContainers=[sidecar],
    )
    kubectl.apply(manifest, namespace=namespace)
    assert wait_for_job(kubectl, "with-sidecar", namespace) == "Complete"
    pod = job_pod(kubectl, "with-sidecar", namespace)
    name = pod["metadata"]["name"]
    assert pod_runner.logs(namespace, name, "router").strip() == "sidecar up"
    assert pod_runner.logs(namespace, name, "main").strip() == "main done"
    outcome = pod_runner.wait_for(namespace, name)
    assert outcome.phase == "Succeeded"
    sidecar_state = pod["status"]["initContainerStatuses"][0]["state"]
    assert "running" not in sidecar_state


def test_active_deadline_fails_the_pod(
    kubectl: Kubectl, namespace: str, pod_runner: PodRunner
) -> None:
    container = {"command": ["python", "-c", "import time; time.sleep(600)"]}
    kubectl.apply(job_manifest("slow", container, activeDeadlineSeconds=1), namespace=namespace)
    assert wait_for_job(kubectl, "slow", namespace) == "Failed"
    pod = job_pod(kubectl, "slow", namespace)
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["reason"] == "DeadlineExceeded"


def test_point6_a_missing_secret_key_ref_keeps_the_container_waiting_as_a_kubelet_does(
    kubectl: Kubectl, namespace: str, pod_runner: PodRunner
) -> None:
    container = {
        "command": ["python", "-c", "import os; print(os.environ['TOKEN'])"],
        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "t"}}}],
    }
    kubectl.apply(job_manifest("waits", container), namespace=namespace)

    def waiting() -> dict[str, Any] | None:
        pods = kubectl.get_json("pods", "-l", "job-name=waits", namespace=namespace)["items"]
        statuses = (pods[0].get("status") or {}).get("containerStatuses") or [] if pods else []
        state = statuses[0]["state"].get("waiting") if statuses else None
        return state if state and state.get("reason") == "CreateContainerConfigError" else None

    deadline = time.monotonic() + 30
    while (state := waiting()) is None:
        assert time.monotonic() < deadline, "the container never waited for its Secret"
        time.sleep(0.2)
    assert state["message"] == 'secret "late" not found'
    # The container was not started, the pod stays Pending, the Job does not fail.
    time.sleep(2)
    assert job_pod(kubectl, "waits", namespace)["status"]["phase"] == "Pending"
    kubectl("create", "secret", "generic", "late", "--from-literal=x=1", namespace=namespace)
    deadline = time.monotonic() + 30
    while (state := waiting()) is None or "couldn't find key" not in state["message"]:
        assert time.monotonic() < deadline, f"the missing key was never reported: {state}"
        time.sleep(0.2)
    assert state["message"] == f"couldn't find key t in Secret {namespace}/late"
    kubectl("delete", "secret", "late", namespace=namespace)
    kubectl("create", "secret", "generic", "late", "--from-literal=t=token", namespace=namespace)
    assert wait_for_job(kubectl, "waits", namespace) == "Complete"
    pod = job_pod(kubectl, "waits", namespace)
    assert pod_runner.logs(namespace, pod["metadata"]["name"]).strip() == "token"
