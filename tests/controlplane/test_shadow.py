"""The shadow stage on the real control plane, with a router serving the live config.

The operator runs as a real process; the offline eval runs as a Job through the pod runner;
a router (the sidecar's code) serves the live ConfigMap as the kubelet would mount it (a
thread copies the ConfigMap's keys into a directory, ConfigMap-style), and a Pod object
selected by the policy names the router's metrics port, so the operator reads the shadow
figures from it as it would from a real sidecar.

Production answers and the candidate's are scripted in the emulator per request, one
request at a time (the live call, then its shadow call), so which class of requests the
candidate gets wrong is exactly what the test says.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
import yaml
from operator_process import (
    OPERATOR_USER,
    OperatorProcess,
    bind_operator_identity,
    eventually,
    free_port,
)

from harness.kubectl import Kubectl
from harness.podrunner import LOCAL_RUN_LABEL
from tierwise.emulator import Dataset, EmulatorConfig, EmulatorThread
from tierwise.render import CONFIG_KEY
from tierwise.router.runner import RouterThread
from tierwise.routerconfig.shadow import SHADOW_KEY

pytestmark = pytest.mark.controlplane

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "support-triage"
POLICY = "email-triage"
LIVE = f"tierwise-{POLICY}"
THRESHOLD_PATH = "/spec/routes/0/steps/0/escalateWhen/2/threshold"
HAIKU = "claude-haiku-5-5"
KEYS = {f"TIERWISE_TIER_{t}_API_KEY": "test-key" for t in ("HAIKU", "SONNET", "OPUS")}


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorThread]:
    dataset = Dataset.from_jsonl(EXAMPLE / "dataset.jsonl")
    with EmulatorThread(EmulatorConfig(zero_latency=True, dataset=dataset)) as emu:
        yield emu


@pytest.fixture(autouse=True)
def clean_emulator(emulator: EmulatorThread) -> Iterator[None]:
    yield
    emulator.reset()


@pytest.fixture(scope="module")
def operator(controlplane, kubectl, user_kubeconfig, tmp_path_factory, pod_runner):
    kubeconfig = bind_operator_identity(
        kubectl, user_kubeconfig, OPERATOR_USER, ["tierwise-operator"]
    )
    process = OperatorProcess(
        kubeconfig,
        tmp_path_factory.mktemp("op") / "operator.log",
        [
            "--webhook-port=0",
            f"--eval-pod-label={LOCAL_RUN_LABEL}=true",
            "--eval-image=tierwise:dev",
            "--eval-deadline-slack-seconds=0",
        ],
    )
    process.start()
    yield process
    process.stop()


def deploy(
    kubectl: Kubectl,
    namespace: str,
    emulator: EmulatorThread,
    without_dataset: bool = False,
    **shadow: Any,
) -> dict:
    kubectl(
        "create", "secret", "generic", "anthropic-api-key",
        "--from-literal=api-key=test-key", namespace=namespace,
    )  # fmt: skip
    settings = {
        "minAgreement": 0.8,
        "minSamples": 20,
        "sampleRate": 1,
        "spendLimitPerHourUSD": 10,
        "maxDurationSeconds": 600,
        "timeoutSeconds": 10,
        **shadow,
    }
    for path in sorted(EXAMPLE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if doc["kind"] == "ModelTier":
                doc["spec"]["endpoint"] = emulator.base_url
            if doc["kind"] == "CascadePolicy":
                doc["spec"]["retry"] = {"maxAttempts": 1}
                doc["spec"]["evaluation"]["timeoutSeconds"] = 60
                doc["spec"]["evaluation"]["shadow"] = settings
                if without_dataset:  # the shadow stage alone gates triage
                    del doc["spec"]["evaluation"]["dataset"]
            kubectl.apply(json.dumps(doc), namespace=namespace)
    return eventually(lambda: _live_doc(kubectl, namespace), "the first config", timeout=120)


def _live_doc(kubectl: Kubectl, namespace: str) -> dict | None:
    result = kubectl("get", "configmap", LIVE, "-o", "json", namespace=namespace, check=False)
    if result.returncode:
        return None
    return json.loads(json.loads(result.stdout)["data"][CONFIG_KEY])


def policy(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    return kubectl.get_json("cascadepolicy", POLICY, namespace=namespace)


def rollout(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    return (policy(kubectl, namespace).get("status") or {}).get("rollout") or {}


def set_threshold(kubectl: Kubectl, namespace: str, value: float) -> None:
    patch = [{"op": "replace", "path": THRESHOLD_PATH, "value": value}]
    kubectl(
        "patch", "cascadepolicy", POLICY, "--type=json", "-p", json.dumps(patch),
        namespace=namespace,
    )  # fmt: skip


class Mount:
    """The live ConfigMap as the kubelet mounts it: every key a file, refreshed."""

    def __init__(self, kubectl: Kubectl, namespace: str, directory: Path) -> None:
        self.kubectl, self.namespace, self.directory = kubectl, namespace, directory
        self._stop = threading.Event()
        self.refresh()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def config(self) -> Path:
        return self.directory / CONFIG_KEY

    def refresh(self) -> None:
        found = self.kubectl(
            "get", "configmap", LIVE, "-o", "json", namespace=self.namespace, check=False
        )
        if found.returncode:
            return
        data = json.loads(found.stdout).get("data") or {}
        for key in (CONFIG_KEY, SHADOW_KEY):
            path = self.directory / key
            if key in data:
                if not path.exists() or path.read_text() != data[key]:
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text(data[key])
                    os.replace(tmp, path)
            elif path.exists():
                path.unlink()

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def sidecar_pod(kubectl: Kubectl, namespace: str, metrics_port: int) -> None:
    """A Pod the policy selects whose sidecar's metrics port is the test router's."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "inbox-0", "labels": {"app": "support-inbox"}},
        "spec": {
            "initContainers": [
                {
                    "name": "tierwise-router",
                    "image": "tierwise:dev",
                    "restartPolicy": "Always",
                    "ports": [{"name": "router-metrics", "containerPort": metrics_port}],
                }
            ],
            "containers": [{"name": "app", "image": "inbox:dev"}],
        },
    }
    kubectl.apply(json.dumps(pod), namespace=namespace)
    status = {"status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}}
    kubectl(
        "patch", "pod", "inbox-0", "--subresource=status", "--type=merge",
        "-p", json.dumps(status), namespace=namespace,
    )  # fmt: skip


def answer(label: str, confidence: float = 0.97) -> dict[str, Any]:
    return {"text": json.dumps({"label": label, "confidence": confidence})}


class Traffic:
    """Live requests through the router, each followed by its shadow call, one at a time."""

    def __init__(self, router: RouterThread, emulator: EmulatorThread) -> None:
        self.router, self.emulator = router, emulator
        self.client = anthropic.Anthropic(
            base_url=router.base_url, api_key="client-key", max_retries=0, timeout=30
        )
        self.sent = 0

    def send(self, live: dict[str, Any], shadow: dict[str, Any]) -> None:
        self.sent += 1
        # The live call answers first, then (after the client has it) the shadow call.
        self.emulator.script(HAIKU, [live, shadow])
        message = self.client.messages.create(
            model="tierwise/triage",
            max_tokens=200,
            messages=[{"role": "user", "content": f"email number {self.sent}: {time.time()}"}],
        )
        assert json.loads(message.content[0].text)["label"] == json.loads(live["text"])["label"]
        shadow_runner = self.router.router.shadow  # type: ignore[union-attr]
        eventually(lambda: shadow_runner.running == 0, "the shadow call to end", timeout=30)


def shadowing(kubectl: Kubectl, namespace: str, router: RouterThread, candidate: str) -> None:
    eventually(
        lambda: rollout(kubectl, namespace).get("phase") == "Shadowing",
        "the shadow stage",
        timeout=180,
    )
    runner = router.router.shadow  # type: ignore[union-attr]
    eventually(
        lambda: runner.active is not None and runner.active.settings.candidate_hash == candidate,
        "the sidecar to load the candidate",
    )


def final(kubectl: Kubectl, namespace: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict | None:
        body = policy(kubectl, namespace)
        status = body.get("status") or {}
        rollout = status.get("rollout") or {}
        progressing = next(
            (c for c in status.get("conditions") or [] if c["type"] == "Progressing"), {}
        )
        decided = rollout.get("phase") in ("Promoted", "Rejected", "Inconclusive")
        # The decision is recorded first, the conditions with the next status write.
        return body if decided and progressing.get("reason") == rollout.get("reason") else None

    return eventually(check, "the shadow stage's decision", timeout=timeout)


@pytest.fixture
def live_router(
    kubectl: Kubectl, namespace: str, emulator: EmulatorThread, tmp_path: Path, request
):
    first = deploy(kubectl, namespace, emulator, getattr(request, "param", False))
    mount = Mount(kubectl, namespace, tmp_path)
    port = free_port()
    router = RouterThread(mount.config, reload_interval=0.2, env=KEYS, metrics_port=port).start()
    sidecar_pod(kubectl, namespace, port)
    state = {"router": router, "port": port, "mount": mount, "first": first}
    yield state
    state["router"].stop()
    mount.stop()


def candidate_hash(kubectl: Kubectl, namespace: str, first: dict) -> str:
    return eventually(
        lambda: (
            (c := (policy(kubectl, namespace).get("status") or {}).get("candidateHash"))
            != first["hash"]
            and c
        ),
        "the candidate",
    )


def test_a_candidate_that_disagrees_on_one_class_is_rejected_after_passing_offline(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread, live_router
):
    router, first = live_router["router"], live_router["first"]
    set_threshold(kubectl, namespace, 0.85)  # passes the offline eval (a dataset of 400)
    candidate = candidate_hash(kubectl, namespace, first)
    shadowing(kubectl, namespace, router, candidate)
    body = policy(kubectl, namespace)
    assert body["status"]["lastEval"]["decision"] == "Promoted"  # the offline eval passed
    live_map = kubectl.get_json("configmap", LIVE, namespace=namespace)
    assert json.loads(live_map["data"][CONFIG_KEY])["hash"] == first["hash"]  # still live
    assert json.loads(live_map["data"][SHADOW_KEY])["config"]["hash"] == candidate
    table = kubectl("get", "cascadepolicy", POLICY, namespace=namespace).stdout
    assert "Shadowing" in table
    traffic = Traffic(router, emulator)
    # Billing emails: the candidate agrees. Account emails (a class the dataset lacks): it
    # labels them bugs.
    for _ in range(10):
        traffic.send(answer("billing"), answer("billing"))
        traffic.send(answer("account"), answer("bug"))
    body = final(kubectl, namespace)
    status = body["status"]
    assert status["rollout"]["phase"] == "Rejected", status["rollout"]
    assert status["rollout"]["reason"] == "ShadowFailedGate"
    assert "below minAgreement 0.800" in status["rollout"]["message"]
    shadow = status["shadow"]
    assert shadow["hash"] == candidate and shadow["agreements"] * 2 == shadow["samples"]
    assert shadow["samples"] >= 10 and shadow["agreement"].startswith("0.500 [")
    assert status["promotedHash"] == first["hash"]
    live_map = eventually(
        lambda: (
            (cm := kubectl.get_json("configmap", LIVE, namespace=namespace))
            and SHADOW_KEY not in cm["data"]
            and cm
        ),
        "the shadow document's removal",
    )
    assert json.loads(live_map["data"][CONFIG_KEY])["hash"] == first["hash"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Promoted"]["status"] == "False"
    assert conditions["Progressing"]["status"] == "False"
    items = kubectl.get_json("events", namespace=namespace)["items"]
    reasons = [e["reason"] for e in items if e["involvedObject"].get("name") == POLICY]
    assert "ShadowStarted" in reasons and "Rejected" in reasons
    print(f"\nshadow rejected: {status['rollout']['message']}")


def test_a_good_candidate_is_promoted_and_a_router_restart_neither_loses_nor_double_counts(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread, live_router
):
    router, first = live_router["router"], live_router["first"]
    kubectl(
        "patch", "cascadepolicy", POLICY, "--type=json", "-p",
        json.dumps([{"op": "replace", "path": "/spec/evaluation/shadow/minSamples", "value": 30}]),
        namespace=namespace,
    )  # fmt: skip
    set_threshold(kubectl, namespace, 0.85)
    candidate = candidate_hash(kubectl, namespace, first)
    shadowing(kubectl, namespace, router, candidate)
    traffic = Traffic(router, emulator)
    for _ in range(12):
        traffic.send(answer("billing"), answer("billing"))

    def samples() -> int:
        return int(
            ((policy(kubectl, namespace).get("status") or {}).get("shadow") or {}).get("samples")
            or 0
        )

    eventually(lambda: samples() == 12, "the operator to read 12 samples", timeout=30)
    # The sidecar restarts: a new process, counters from zero, the same metrics port.
    router.stop()
    router = RouterThread(
        live_router["mount"].config, reload_interval=0.2, env=KEYS, metrics_port=live_router["port"]
    ).start()
    live_router["router"] = router
    eventually(lambda: router.router.shadow.active is not None, "the restarted sidecar to shadow")
    traffic = Traffic(router, emulator)
    for _ in range(6):
        traffic.send(answer("bug"), answer("bug"))
    eventually(lambda: samples() == 18, "12 + 6 samples after the restart", timeout=30)
    time.sleep(5)  # two more resyncs read the same counters again
    status = policy(kubectl, namespace)["status"]
    assert status["shadow"]["samples"] == 18 and status["rollout"]["phase"] == "Shadowing"
    assert len(status["shadow"]["sources"]) == 2  # the same pod, two router runs
    for _ in range(12):
        traffic.send(answer("other"), answer("other"))
    body = final(kubectl, namespace)
    status = body["status"]
    assert status["rollout"]["phase"] == "Promoted", status["rollout"]
    assert status["rollout"]["reason"] == "ShadowPassed"
    assert status["shadow"]["samples"] == status["shadow"]["agreements"] == 30
    assert status["promotedHash"] == candidate
    live_map = eventually(
        lambda: (
            (cm := kubectl.get_json("configmap", LIVE, namespace=namespace))
            and SHADOW_KEY not in cm["data"]
            and json.loads(cm["data"][CONFIG_KEY])["hash"] == candidate
            and cm
        ),
        "the promoted config without the shadow document",
    )
    assert live_map
    print(f"\nshadow promoted: {status['rollout']['message']}")


def test_a_candidate_whose_shadow_calls_all_fail_is_inconclusive(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread, live_router
):
    router, first = live_router["router"], live_router["first"]
    patch = [
        {"op": "replace", "path": "/spec/evaluation/shadow/maxDurationSeconds", "value": 60},
        {"op": "replace", "path": "/spec/evaluation/shadow/timeoutSeconds", "value": 1},
    ]
    kubectl(
        "patch", "cascadepolicy", POLICY, "--type=json", "-p", json.dumps(patch),
        namespace=namespace,
    )  # fmt: skip
    set_threshold(kubectl, namespace, 0.85)
    candidate = candidate_hash(kubectl, namespace, first)
    shadowing(kubectl, namespace, router, candidate)
    traffic = Traffic(router, emulator)
    for _ in range(25):  # every shadow call hangs past its 1 s deadline
        traffic.send(answer("billing"), {**answer("billing"), "first_token_delay": 30})
    body = final(kubectl, namespace, timeout=120)
    status = body["status"]
    assert status["rollout"]["phase"] == "Inconclusive", status["rollout"]
    assert status["rollout"]["reason"] == "ShadowInconclusive"
    assert "maxDurationSeconds 60" in status["rollout"]["message"]
    assert status["shadow"]["failed"] == status["shadow"]["samples"] >= 20
    assert status["promotedHash"] == first["hash"]


@pytest.mark.parametrize("live_router", [True], indirect=True)
def test_a_route_without_a_dataset_is_gated_by_the_shadow_stage_alone_and_a_pause_holds_it(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread, live_router
):
    router, first = live_router["router"], live_router["first"]
    set_threshold(kubectl, namespace, 0.85)
    candidate = candidate_hash(kubectl, namespace, first)
    shadowing(kubectl, namespace, router, candidate)
    status = policy(kubectl, namespace)["status"]
    assert "lastEval" not in status  # no eval ran
    items = kubectl.get_json("events", namespace=namespace)["items"]
    started = [e["message"] for e in items if e["reason"] == "ShadowStarted"]
    assert started and started[0].startswith("no route has a dataset; shadowing candidate")
    jobs = kubectl.get_json("jobs", namespace=namespace)["items"]
    assert jobs == []  # straight to the shadow stage: no offline eval Job
    traffic = Traffic(router, emulator)
    for _ in range(5):
        traffic.send(answer("billing"), answer("billing"))
    kubectl("annotate", "cascadepolicy", POLICY, "tierwise.dev/rollout=paused", namespace=namespace)
    eventually(
        lambda: rollout(kubectl, namespace).get("reason") == "ShadowPaused", "the held stage"
    )
    # Enough agreeing samples to promote, but the pause holds the decision.
    for _ in range(20):
        traffic.send(answer("billing"), answer("billing"))
    time.sleep(5)  # resyncs under the annotation
    status = policy(kubectl, namespace)["status"]
    assert status["rollout"]["phase"] == "Paused", status["rollout"]
    assert status["promotedHash"] == first["hash"]
    live_map = kubectl.get_json("configmap", LIVE, namespace=namespace)
    assert json.loads(live_map["data"][SHADOW_KEY])["config"]["hash"] == candidate  # sampling
    kubectl("annotate", "cascadepolicy", POLICY, "tierwise.dev/rollout-", namespace=namespace)
    body = final(kubectl, namespace)
    status = body["status"]
    assert status["rollout"]["phase"] == "Promoted", status["rollout"]
    assert status["rollout"]["reason"] == "ShadowPassed"
    # Resumed, not restarted: the samples sent before and during the pause are all counted.
    assert status["shadow"]["samples"] == status["shadow"]["agreements"] == 25
    assert status["promotedHash"] == candidate
