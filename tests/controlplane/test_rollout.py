"""Eval-gated rollout on the real control plane.

The operator runs as a real process under its own ClusterRole; the eval Jobs it creates run
`tierwise eval` through the pod runner (the kubelet stand-in) against an in-process model
emulator serving the example's labelled dataset, and report back through their pods'
termination messages, as they would in a cluster.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_process import OPERATOR_USER, OperatorProcess, bind_operator_identity, eventually

from harness.kubectl import Kubectl
from harness.podrunner import LOCAL_RUN_LABEL, PodRunner
from tierwise.controller.rollout_state import candidate_identity, dataset_digest
from tierwise.emulator import Dataset, EmulatorConfig, EmulatorThread
from tierwise.render import CONFIG_KEY

pytestmark = pytest.mark.controlplane

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "support-triage"
POLICY = "email-triage"
LIVE = f"tierwise-{POLICY}"
THRESHOLD_PATH = "/spec/routes/0/steps/0/escalateWhen/2/threshold"


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
def operator_kubeconfig(controlplane, kubectl: Kubectl, user_kubeconfig) -> Path:
    return bind_operator_identity(kubectl, user_kubeconfig, OPERATOR_USER, ["tierwise-operator"])


def start_operator(kubeconfig: Path, log: Path) -> OperatorProcess:
    process = OperatorProcess(
        kubeconfig,
        log,
        [
            "--webhook-port=0",
            f"--eval-pod-label={LOCAL_RUN_LABEL}=true",
            "--eval-image=tierwise:dev",
            "--eval-deadline-slack-seconds=0",
        ],
    )
    process.start()
    return process


@pytest.fixture(scope="module")
def operator(operator_kubeconfig: Path, tmp_path_factory, pod_runner) -> Iterator[OperatorProcess]:
    process = start_operator(operator_kubeconfig, tmp_path_factory.mktemp("op") / "operator.log")
    yield process
    process.stop()


def example_objects(emulator_url: str) -> list[dict[str, Any]]:
    """The support-triage example pointed at the emulator; retries off so failures are fast."""
    objects = []
    for path in sorted(EXAMPLE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if doc["kind"] == "ModelTier":
                doc["spec"]["endpoint"] = emulator_url
            if doc["kind"] == "CascadePolicy":
                doc["spec"]["retry"] = {"maxAttempts": 1}
                doc["spec"]["evaluation"]["timeoutSeconds"] = 60
            objects.append(doc)
    return objects


def apply_example(
    kubectl: Kubectl,
    namespace: str,
    emulator: EmulatorThread,
    threshold: float | None = None,
    **evaluation: Any,
) -> None:
    kubectl(
        "create", "secret", "generic", "anthropic-api-key",
        "--from-literal=api-key=test-key", namespace=namespace,
    )  # fmt: skip
    for doc in example_objects(emulator.base_url):
        if doc["kind"] == "CascadePolicy":
            doc["spec"]["evaluation"].update(evaluation)
            if threshold is not None:
                doc["spec"]["routes"][0]["steps"][0]["escalateWhen"][2]["threshold"] = threshold
        kubectl.apply(json.dumps(doc), namespace=namespace)


def deploy(kubectl: Kubectl, namespace: str, emulator: EmulatorThread, **evaluation: Any) -> dict:
    apply_example(kubectl, namespace, emulator, **evaluation)
    return eventually(
        lambda: live_config(kubectl, namespace), "the first promoted config", timeout=120
    )


def live(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    return kubectl.get_json("configmap", LIVE, namespace=namespace)


def live_config(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    result = kubectl("get", "configmap", LIVE, "-o", "json", namespace=namespace, check=False)
    if result.returncode:
        return None
    return json.loads(json.loads(result.stdout)["data"][CONFIG_KEY])


def policy(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    return kubectl.get_json("cascadepolicy", POLICY, namespace=namespace)


def set_threshold(kubectl: Kubectl, namespace: str, value: float) -> None:
    patch = [{"op": "replace", "path": THRESHOLD_PATH, "value": value}]
    kubectl(
        "patch",
        "cascadepolicy",
        POLICY,
        "--type=json",
        "-p",
        json.dumps(patch),
        namespace=namespace,
    )


def decided(kubectl: Kubectl, namespace: str, previous_hash: str, timeout: float = 120) -> dict:
    """The policy once a decision for a candidate other than ``previous_hash`` is recorded."""

    def check() -> dict | None:
        body = policy(kubectl, namespace)
        status = body.get("status") or {}
        rollout = status.get("rollout") or {}
        candidate = status.get("candidateHash")
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        progressing = conditions.get("Progressing", {})
        if (
            candidate
            and candidate != previous_hash
            and rollout.get("decidedHash") == candidate
            and rollout.get("phase") != "Promoting"  # recorded, the live ConfigMap not yet written
            and progressing.get("reason") == rollout.get("reason")  # the whole status written
        ):
            return body
        return None

    try:
        return eventually(check, "an eval decision", timeout=timeout)
    except AssertionError as exc:
        status = policy(kubectl, namespace).get("status")
        jobs = [(j["metadata"]["name"], j.get("status")) for j in eval_jobs(kubectl, namespace)]
        raise AssertionError(f"{exc}\nstatus: {status}\njobs: {jobs}") from None


def promoted_again(kubectl: Kubectl, namespace: str) -> dict:
    """The policy once a new eval of a decided candidate promoted it (Promoted, not the
    Promoting that records the decision before the live ConfigMap write)."""
    return eventually(
        lambda: (
            (p := policy(kubectl, namespace))["status"]["rollout"].get("phase") == "Promoted" and p
        ),
        "the new eval's decision",
        timeout=120,
    )


def events(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    items = kubectl.get_json("events", namespace=namespace)["items"]
    return [e for e in items if e["involvedObject"].get("name") == POLICY]


def eval_jobs(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/component=eval,tierwise.dev/policy={POLICY}"
    return kubectl.get_json("jobs", "-l", selector, namespace=namespace)["items"]


def condition(body: dict, kind: str) -> dict:
    return next(c for c in body["status"]["conditions"] if c["type"] == kind)


def test_a_degrading_change_is_rejected_and_the_live_config_is_untouched(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    first = deploy(kubectl, namespace, emulator)
    version = live(kubectl, namespace)["metadata"]["resourceVersion"]
    set_threshold(kubectl, namespace, 0)  # Haiku trusted whatever its confidence
    body = decided(kubectl, namespace, first["hash"])
    status = body["status"]
    assert status["rollout"]["phase"] == "Rejected", status["rollout"]
    assert "below minQuality" in status["rollout"]["message"]
    assert live(kubectl, namespace)["metadata"]["resourceVersion"] == version
    assert status["promotedHash"] == first["hash"] != status["candidateHash"]
    last = status["lastEval"]
    assert last["decision"] == "Rejected" and last["graded"] == 400
    # The route that decided, and every route with its change (kept by the CRD's schema).
    assert last["decidingRoute"] == "triage"
    routes = {r["name"]: r for r in last["routes"]}
    assert routes["triage"]["decision"] == "Rejected"
    assert routes["triage"]["change"] == "changed, evaluated"
    assert routes["chat"] == {"name": "chat", "change": "unchanged"}
    assert last["quality"].startswith("0.") and "[" in last["quality"]
    assert status["escalationRate"] == last["escalationRate"] == "0.0%"
    assert status["estimatedSavings"] == last["saving"]
    assert condition(body, "Promoted")["status"] == "False"
    assert condition(body, "Progressing")["status"] == "False"
    # The printer columns tell the story.
    table = kubectl("get", "cascadepolicy", POLICY, namespace=namespace).stdout
    assert "Rejected" in table and "0.0%" in table and last["saving"] in table
    rejected = [e for e in events(kubectl, namespace) if e["reason"] == "Rejected"]
    assert len(rejected) == 1 and status["candidateHash"] in rejected[0]["message"]
    # The Job: everything the rollout promises about it.
    (job,) = eval_jobs(kubectl, namespace)
    # Named after the candidate: its config and the key references it reads (point 6).
    annotations = job["metadata"]["annotations"]
    assert annotations["tierwise.dev/candidate-hash"] == status["candidateHash"]
    assert annotations["tierwise.dev/key-refs-digest"] == status["rollout"]["decidedKeys"]
    candidate = candidate_identity(status["candidateHash"], status["rollout"]["decidedKeys"])
    assert job["metadata"]["name"] == f"{POLICY}-eval-{candidate[7:15]}"
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "CascadePolicy", POLICY, body["metadata"]["uid"],
    )  # fmt: skip
    spec = job["spec"]
    assert spec["backoffLimit"] == 1 and spec["ttlSecondsAfterFinished"] == 3600
    assert spec["activeDeadlineSeconds"] == 60
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "tierwise-eval"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    keys = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert keys["TIERWISE_TIER_HAIKU_API_KEY"] == {"name": "anthropic-api-key", "key": "api-key"}
    inputs = kubectl.get_json("configmap", job["metadata"]["name"], namespace=namespace)
    assert inputs["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    assert json.loads(inputs["data"]["baseline.json"])["hash"] == first["hash"]
    assert json.loads(inputs["data"]["candidate.json"])["hash"] == status["candidateHash"]
    # The eval ran against the tiers' endpoint with the key from the Secret.
    recorded = emulator.recorded_requests(model="claude-haiku-5-5")
    assert recorded and {r.api_key for r in recorded} == {"test-key"}


def test_a_good_change_is_promoted_and_a_running_router_reloads_it(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    from tierwise.router.runner import RouterThread

    first = deploy(kubectl, namespace, emulator)
    with tempfile.TemporaryDirectory() as directory:
        mounted = Path(directory) / CONFIG_KEY  # what the sidecar's ConfigMap volume holds
        mounted.write_text(live(kubectl, namespace)["data"][CONFIG_KEY])
        keys = {f"TIERWISE_TIER_{t}_API_KEY": "test-key" for t in ("HAIKU", "SONNET", "OPUS")}
        with RouterThread(mounted, reload_interval=0.2, env=keys) as router:
            assert router.router is not None and router.router.config.hash == first["hash"]
            set_threshold(kubectl, namespace, 0.85)
            body = decided(kubectl, namespace, first["hash"])
            status = body["status"]
            assert status["rollout"]["phase"] == "Promoted", status["rollout"]
            assert status["rollout"]["reason"] == "EvalPassed"
            assert status["promotedHash"] == status["candidateHash"] == status["configHash"]
            data = eventually(
                lambda: (
                    (cm := live(kubectl, namespace))["metadata"]["annotations"][
                        "tierwise.dev/config-hash"
                    ]
                    == status["candidateHash"]
                    and cm["data"][CONFIG_KEY]
                ),
                "the promoted ConfigMap",
            )
            mounted.write_text(data)  # the kubelet refreshes the mounted file
            eventually(
                lambda: router.router.config.hash == status["candidateHash"],
                "the router's reload",
            )
    assert condition(body, "Promoted")["status"] == "True"
    assert any(e["reason"] == "Promoted" for e in events(kubectl, namespace))


def test_a_failing_eval_job_is_inconclusive(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    first = deploy(kubectl, namespace, emulator)
    version = live(kubectl, namespace)["metadata"]["resourceVersion"]
    # A malformed dataset line: `tierwise eval` exits 2 naming it, the Job fails.
    broken = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "triage-eval-dataset"},
        "data": {"dataset.jsonl": '{"input": "a", "label": "bug"}\n{"input": "b", "label": \n'},
    }
    kubectl.apply(json.dumps(broken), namespace=namespace)
    set_threshold(kubectl, namespace, 0.85)
    status = decided(kubectl, namespace, first["hash"])["status"]
    assert status["rollout"]["phase"] == "Inconclusive", status["rollout"]
    assert status["rollout"]["reason"] == "EvalFailed"
    assert "line 2" in status["rollout"]["message"]
    assert live(kubectl, namespace)["metadata"]["resourceVersion"] == version


def test_an_eval_past_its_deadline_is_inconclusive(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    first = deploy(kubectl, namespace, emulator, timeoutSeconds=30)
    version = live(kubectl, namespace)["metadata"]["resourceVersion"]
    emulator.script("*", [{"first_token_delay": 120}] * 50)  # the upstream hangs
    set_threshold(kubectl, namespace, 0.85)
    status = decided(kubectl, namespace, first["hash"], timeout=120)["status"]
    assert status["rollout"]["phase"] == "Inconclusive", status["rollout"]
    assert "deadline" in status["rollout"]["message"]
    assert live(kubectl, namespace)["metadata"]["resourceVersion"] == version


def test_an_upstream_answering_only_5xx_is_inconclusive(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    first = deploy(kubectl, namespace, emulator)
    version = live(kubectl, namespace)["metadata"]["resourceVersion"]
    emulator.set_faults("*", rate_500=1.0, seed=1)
    set_threshold(kubectl, namespace, 0.85)
    status = decided(kubectl, namespace, first["hash"])["status"]
    assert status["rollout"]["phase"] == "Inconclusive", status["rollout"]
    assert "failed upstream" in status["rollout"]["message"]
    assert status["lastEval"]["graded"] == 0
    assert live(kubectl, namespace)["metadata"]["resourceVersion"] == version
    # The outage is over: ask for a new eval of the same candidate.
    emulator.reset()
    candidate = status["candidateHash"]
    kubectl(
        "annotate", "cascadepolicy", POLICY, f"tierwise.dev/reevaluate={candidate[7:19]}",
        namespace=namespace,
    )  # fmt: skip
    body = promoted_again(kubectl, namespace)
    assert body["status"]["rollout"]["reason"] == "EvalPassed"
    assert body["status"]["promotedHash"] == candidate
    assert live_config(kubectl, namespace)["hash"] == candidate


def test_two_quick_changes_evaluate_only_the_newer(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread, pod_runner: PodRunner
):
    first = deploy(kubectl, namespace, emulator)
    emulator.script("*", [{"first_token_delay": 0.05}] * 2000)  # an eval takes a few seconds
    set_threshold(kubectl, namespace, 0.85)
    older = eventually(lambda: eval_jobs(kubectl, namespace), "the first eval Job")[0]
    set_threshold(kubectl, namespace, 0.8)
    body = decided(kubectl, namespace, first["hash"])
    newer = body["status"]["candidateHash"]
    older_hash = older["metadata"]["annotations"]["tierwise.dev/candidate-hash"]
    assert older_hash != newer
    eventually(
        lambda: (
            [
                j["metadata"]["annotations"]["tierwise.dev/candidate-hash"]
                for j in eval_jobs(kubectl, namespace)
            ]
            == [newer]
        ),
        "only the newer candidate's Job",
    )
    decisions = [
        e
        for e in events(kubectl, namespace)
        if e["reason"] in ("Promoted", "Rejected", "Inconclusive")
    ]
    assert not any(older_hash in e["message"] for e in decisions)
    assert any(e["reason"] == "EvalSuperseded" for e in events(kubectl, namespace))


def test_a_killed_operator_adopts_the_running_eval_and_decides_once(
    operator_kubeconfig: Path,
    kubectl: Kubectl,
    namespace: str,
    emulator: EmulatorThread,
    pod_runner: PodRunner,
    tmp_path: Path,
    operator,
):
    first = deploy(kubectl, namespace, emulator)
    emulator.script("*", [{"first_token_delay": 0.05}] * 2000)
    set_threshold(kubectl, namespace, 0.85)
    (job,) = eventually(lambda: eval_jobs(kubectl, namespace), "the eval Job")
    name = job["metadata"]["name"]
    eventually(
        lambda: kubectl("get", "configmap", name, namespace=namespace, check=False).returncode == 0,
        "the eval Job's inputs",
    )
    operator.kill()  # mid-eval: the Job runs on without it
    try:
        eventually(
            lambda: any(
                c["type"] == "Complete" and c["status"] == "True"
                for c in kubectl.get_json("job", job["metadata"]["name"], namespace=namespace)
                .get("status", {})
                .get("conditions", [])
            ),
            "the eval Job to finish while the operator is down",
            timeout=120,
        )
        # Nothing decided it while the operator was down (it may have died before even
        # recording "Evaluating", or before creating the Job's inputs: adoption covers both).
        candidate = job["metadata"]["annotations"]["tierwise.dev/candidate-hash"]
        assert policy(kubectl, namespace)["status"]["rollout"].get("decidedHash") != candidate
    finally:
        operator.start()
    body = decided(kubectl, namespace, first["hash"])
    assert body["status"]["rollout"]["job"] == job["metadata"]["name"]
    time.sleep(5)  # a few more resyncs: none may decide again
    (same,) = eval_jobs(kubectl, namespace)
    assert same["metadata"]["uid"] == job["metadata"]["uid"]
    decisions = [
        e
        for e in events(kubectl, namespace)
        if e["reason"] in ("Promoted", "Rejected", "Inconclusive")
        and body["status"]["candidateHash"] in e["message"]
    ]
    assert len(decisions) == 1 and decisions[0].get("count", 1) == 1, decisions


def test_the_eval_service_account_may_not_list_pods(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    first = deploy(kubectl, namespace, emulator)
    set_threshold(kubectl, namespace, 0)
    decided(kubectl, namespace, first["hash"])
    account = kubectl.get_json("serviceaccount", "tierwise-eval", namespace=namespace)
    assert account["automountServiceAccountToken"] is False
    identity = f"--as=system:serviceaccount:{namespace}:tierwise-eval"
    for verb, resource in (("list", "pods"), ("get", "secrets"), ("list", "cascadepolicies")):
        answer = kubectl(
            "auth", "can-i", verb, resource, identity, namespace=namespace, check=False
        )
        assert answer.stdout.strip() == "no", (verb, resource)


def test_a_policy_without_evaluation_says_so(operator, kubectl: Kubectl, namespace: str, emulator):
    for doc in example_objects(emulator.base_url):
        if doc["kind"] == "CascadePolicy":
            del doc["spec"]["evaluation"]
        kubectl.apply(json.dumps(doc), namespace=namespace)
    body = eventually(
        lambda: (p := policy(kubectl, namespace)).get("status", {}).get("rollout") and p,
        "the rollout status",
    )
    assert body["status"]["rollout"]["phase"] == "Ungated"
    assert "no spec.evaluation" in condition(body, "Promoted")["message"]
    assert eval_jobs(kubectl, namespace) == []


def test_break_glass_promotes_a_hash_and_pauses(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    first = deploy(kubectl, namespace, emulator)
    kubectl("annotate", "cascadepolicy", POLICY, "tierwise.dev/rollout=paused", namespace=namespace)
    set_threshold(kubectl, namespace, 0)
    body = eventually(
        lambda: (p := policy(kubectl, namespace))["status"]["rollout"]["phase"] == "Paused" and p,
        "the Paused phase",
    )
    candidate = body["status"]["candidateHash"]
    assert eval_jobs(kubectl, namespace) == []
    kubectl(
        "annotate", "cascadepolicy", POLICY, f"tierwise.dev/promote={candidate[7:19]}",
        namespace=namespace,
    )  # fmt: skip
    eventually(lambda: live_config(kubectl, namespace)["hash"] == candidate, "the forced promotion")
    status = policy(kubectl, namespace)["status"]
    assert status["rollout"]["reason"] == "BreakGlass" and status["promotedHash"] == candidate
    assert first["hash"] != candidate
    assert any(e["reason"] == "BreakGlassPromotion" for e in events(kubectl, namespace))


def test_an_eval_waits_for_its_dataset_config_map(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    first = deploy(kubectl, namespace, emulator)
    dataset = kubectl.get_json("configmap", "triage-eval-dataset", namespace=namespace)
    kubectl("delete", "configmap", "triage-eval-dataset", namespace=namespace)
    set_threshold(kubectl, namespace, 0)
    body = eventually(
        lambda: (
            (p := policy(kubectl, namespace))["status"]["rollout"]["reason"] == "DatasetMissing"
            and p
        ),
        "the eval to wait for its dataset",
    )
    assert "triage-eval-dataset" in body["status"]["rollout"]["message"]
    # Waiting (within its grace period) is progress, not a failure.
    eventually(
        lambda: condition(policy(kubectl, namespace), "Progressing")["status"] == "True",
        "Progressing=True while the eval waits",
    )
    assert eval_jobs(kubectl, namespace) == []
    restored = {k: dataset[k] for k in ("apiVersion", "kind", "data")}
    restored["metadata"] = {"name": "triage-eval-dataset"}
    kubectl.apply(json.dumps(restored), namespace=namespace)
    status = decided(kubectl, namespace, first["hash"])["status"]
    assert status["rollout"]["phase"] == "Rejected"


def test_a_new_policy_is_gated_against_its_strongest_tiers(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    document = deploy(kubectl, namespace, emulator, onNewPolicy="Evaluate")
    # The live ConfigMap is written first, the status that says so right after it.
    status = decided(kubectl, namespace, previous_hash="")["status"]
    assert status["rollout"]["reason"] == "EvalPassed"
    assert status["promotedHash"] == document["hash"] == status["configHash"]
    (job,) = eval_jobs(kubectl, namespace)
    inputs = kubectl.get_json("configmap", job["metadata"]["name"], namespace=namespace)
    baseline = json.loads(inputs["data"]["baseline.json"])
    triage = next(r for r in baseline["routes"] if r["name"] == "triage")
    assert [s["tier"] for s in triage["steps"]] == ["sonnet"]
    assert (
        job["spec"]["template"]["spec"]["containers"][0]["args"][
            job["spec"]["template"]["spec"]["containers"][0]["args"].index("--baseline-kind") + 1
        ]
        == "strongest"
    )


# --- Issue 17: nothing reaches the live config around the gate ---------------------------

COPY = f"tierwise.promoted.{POLICY}"  # the operator's copy of the promoted config


def reject_a_change(kubectl: Kubectl, namespace: str, first: dict[str, Any]) -> str:
    """Threshold 0 (Haiku trusted whatever its confidence): rejected. Its candidate hash."""
    set_threshold(kubectl, namespace, 0)
    status = decided(kubectl, namespace, first["hash"])["status"]
    assert status["rollout"]["phase"] == "Rejected", status["rollout"]
    return status["candidateHash"]


def restored_events(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    return [e for e in events(kubectl, namespace) if e["reason"] == "LiveConfigRestored"]


def test_point_10_a_deleted_live_config_map_comes_back_with_the_promoted_config(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    first = deploy(kubectl, namespace, emulator)  # onNewPolicy: Promote
    rejected = reject_a_change(kubectl, namespace, first)
    kubectl("delete", "configmap", LIVE, namespace=namespace)
    restored = eventually(lambda: live_config(kubectl, namespace), "the restored live config")
    assert restored["hash"] == first["hash"] != rejected
    time.sleep(5)  # more resyncs: it stays the promoted config
    assert live_config(kubectl, namespace)["hash"] == first["hash"]
    status = policy(kubectl, namespace)["status"]
    assert status["promotedHash"] == status["configHash"] == first["hash"]
    assert status["rollout"]["phase"] == "Rejected"
    (event,) = restored_events(kubectl, namespace)
    assert "was deleted" in event["message"] and first["hash"] in event["message"]
    # The operator's copy gone as well: nothing is live until an eval passes, and never
    # the rejected candidate.
    kubectl("delete", "configmap", COPY, LIVE, namespace=namespace)
    body = eventually(
        lambda: (
            condition(p := policy(kubectl, namespace), "Ready")["reason"] == "NoLiveConfig" and p
        ),
        "Ready=False NoLiveConfig",
    )
    assert "cannot be rebuilt" in condition(body, "Ready")["message"]
    assert "configHash" not in body["status"] and live_config(kubectl, namespace) is None
    set_threshold(kubectl, namespace, 0.95)  # a good change: evaluated, then live
    status = decided(kubectl, namespace, rejected)["status"]
    assert status["rollout"]["phase"] == "Promoted", status["rollout"]
    assert live_config(kubectl, namespace)["hash"] == status["candidateHash"] != rejected


def test_point_11_a_hand_edited_live_config_is_restored_and_an_event_says_so(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    first = deploy(kubectl, namespace, emulator)
    original = live(kubectl, namespace)["data"][CONFIG_KEY]
    edited = json.loads(original)
    edited["routes"][0]["steps"] = edited["routes"][0]["steps"][:1]  # annotation kept
    patch = {"data": {CONFIG_KEY: json.dumps(edited)}}
    kubectl("patch", "configmap", LIVE, "--type=merge", "-p", json.dumps(patch),
            namespace=namespace)  # fmt: skip
    eventually(
        lambda: live(kubectl, namespace)["data"][CONFIG_KEY] == original, "the repaired config"
    )
    (event,) = restored_events(kubectl, namespace)
    assert event["type"] == "Warning" and "edited" in event["message"]
    # A rejected candidate waits: an invalid live config comes back as the promoted config
    # (from the operator's copy; the spec renders the rejected one now).
    reject_a_change(kubectl, namespace, first)
    patch = {"data": {CONFIG_KEY: "{not json"}}
    kubectl("patch", "configmap", LIVE, "--type=merge", "-p", json.dumps(patch),
            namespace=namespace)  # fmt: skip
    eventually(
        lambda: live(kubectl, namespace)["data"][CONFIG_KEY] == original, "the restored config"
    )
    assert len(restored_events(kubectl, namespace)) == 2
    assert policy(kubectl, namespace)["status"]["configHash"] == first["hash"]


def test_point_12_the_promote_annotation_acts_once_per_value(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    first = deploy(kubectl, namespace, emulator)
    forced = reject_a_change(kubectl, namespace, first)
    value = forced[7:19]
    kubectl("annotate", "cascadepolicy", POLICY, f"tierwise.dev/promote={value}",
            namespace=namespace)  # fmt: skip
    eventually(lambda: live_config(kubectl, namespace)["hash"] == forced, "the forced promotion")
    set_threshold(kubectl, namespace, 0.9)  # back to the first config: evaluated, promoted
    status = decided(kubectl, namespace, forced)["status"]
    assert status["rollout"]["phase"] == "Promoted" and status["candidateHash"] == first["hash"]
    # Git returns to the forced config with the annotation still set: it is evaluated.
    set_threshold(kubectl, namespace, 0)
    status = decided(kubectl, namespace, first["hash"])["status"]
    assert status["candidateHash"] == forced
    assert status["rollout"]["phase"] == "Rejected", status["rollout"]
    assert live_config(kubectl, namespace)["hash"] == first["hash"]
    forcings = [e for e in events(kubectl, namespace) if e["reason"] == "BreakGlassPromotion"]
    assert len(forcings) == 1
    assert status["rollout"]["forcePromoted"] == value  # the value acted on, recorded


def dataset(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    return kubectl.get_json("configmap", "triage-eval-dataset", namespace=namespace)


def put_dataset(kubectl: Kubectl, namespace: str, text: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "triage-eval-dataset"},
        "data": {"dataset.jsonl": text},
    }
    kubectl.apply(json.dumps(body), namespace=namespace)


def test_point_13_fixing_a_broken_dataset_re_runs_an_inconclusive_decision(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    first = deploy(kubectl, namespace, emulator)
    good = dataset(kubectl, namespace)["data"]["dataset.jsonl"]
    put_dataset(kubectl, namespace, '{"input": "a", "label": "bug"}\n{"input": "b", "label": \n')
    set_threshold(kubectl, namespace, 0.85)
    status = decided(kubectl, namespace, first["hash"])["status"]
    assert status["rollout"]["phase"] == "Inconclusive", status["rollout"]
    candidate = status["candidateHash"]
    put_dataset(kubectl, namespace, good)  # fixed; no annotation
    body = promoted_again(kubectl, namespace)
    assert body["status"]["rollout"]["reason"] == "EvalPassed"
    assert body["status"]["rollout"]["decidedDataset"] != status["rollout"]["decidedDataset"]
    assert live_config(kubectl, namespace)["hash"] == candidate
    assert any(e["reason"] == "DatasetChanged" for e in events(kubectl, namespace))


def test_point_13_a_changed_dataset_re_evaluates_the_promoted_config(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    first = deploy(kubectl, namespace, emulator)
    version = live(kubectl, namespace)["metadata"]["resourceVersion"]
    text = dataset(kubectl, namespace)["data"]["dataset.jsonl"]
    changed = "".join(reversed(text.splitlines(keepends=True)))  # other bytes, same items
    before, after = (
        dataset_digest([("triage-eval-dataset", "dataset.jsonl", sha256(t.encode()).hexdigest())])
        for t in (text, changed)
    )
    put_dataset(kubectl, namespace, changed)
    (job,) = eventually(lambda: eval_jobs(kubectl, namespace), "an eval of the live config")
    annotations = job["metadata"]["annotations"]
    assert annotations["tierwise.dev/candidate-hash"] == first["hash"]
    assert annotations["tierwise.dev/dataset-digest"] == after != before
    body = eventually(
        lambda: (
            (p := policy(kubectl, namespace))["status"]["rollout"].get("decidedDataset") == after
            and p["status"]["rollout"]["phase"] != "Promoting"
            and p
        ),
        "the live config's new decision",
        timeout=120,
    )
    rollout = body["status"]["rollout"]
    assert rollout["phase"] == "Promoted" and rollout["reason"] == "EvalPassed", rollout
    assert rollout["promotedDataset"] == after
    assert body["status"]["lastEval"]["hash"] == first["hash"]
    assert live(kubectl, namespace)["metadata"]["resourceVersion"] == version


def test_point_14_a_rejected_first_config_is_not_ready_and_saves_nothing(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    # Haiku trusted whatever its confidence: rejected against the strongest tiers.
    apply_example(kubectl, namespace, emulator, threshold=0, onNewPolicy="Evaluate")
    body = decided(kubectl, namespace, previous_hash="")
    status = body["status"]
    assert status["rollout"]["phase"] == "Rejected", status["rollout"]
    ready = condition(body, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NoLiveConfig"), ready
    assert "no config has passed its eval yet" in ready["message"]
    assert "estimatedSavings" not in status and "escalationRate" not in status
    assert "configHash" not in status and "promotedHash" not in status
    assert status["lastEval"]["decision"] == "Rejected"  # the eval's own figures stay
    assert live_config(kubectl, namespace) is None


def test_point_14_an_eval_job_that_cannot_be_created_is_its_own_reason(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    first = deploy(kubectl, namespace, emulator)
    # An admission policy refuses Jobs in this namespace (as a cluster's policy might).
    name = f"no-jobs-{namespace}"
    policy_doc = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {"apiGroups": ["batch"], "apiVersions": ["v1"], "operations": ["CREATE"],
                     "resources": ["jobs"]}
                ]
            },
            "validations": [{"expression": "false", "message": "no Jobs in this namespace"}],
        },
    }  # fmt: skip
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    kubectl.apply(json.dumps(policy_doc))
    kubectl.apply(json.dumps(binding))
    try:

        def refused() -> bool:
            probe = kubectl("create", "job", "probe", "--image=tierwise:dev",
                            namespace=namespace, check=False)  # fmt: skip
            if probe.returncode == 0:  # the admission policy is not in force yet
                kubectl("delete", "job", "probe", "--wait", namespace=namespace)
            return "no Jobs in this namespace" in probe.stderr

        eventually(refused, "the admission policy to refuse Jobs")
        set_threshold(kubectl, namespace, 0.85)
        body = eventually(
            lambda: (
                condition(p := policy(kubectl, namespace), "Progressing")["reason"]
                == "EvalJobNotCreated"
                and p
            ),
            "the eval Job's failure",
        )
        message = body["status"]["rollout"]["message"]
        assert "could not be created" in message and "no Jobs in this namespace" in message
        ready = condition(body, "Ready")
        assert ready["reason"] != "ConfigMapWriteFailed" and ready["status"] == "True", ready
        assert condition(body, "Progressing")["status"] == "False"
        assert live_config(kubectl, namespace)["hash"] == first["hash"]
    finally:
        kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name,
                check=False)  # fmt: skip
    # Jobs allowed again: the next sync starts the eval.
    eventually(lambda: eval_jobs(kubectl, namespace), "the eval Job once allowed")


def test_point_14_an_eval_in_which_every_call_failed_says_why(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    first = deploy(kubectl, namespace, emulator)
    refused = {"error": 401, "error_type": "authentication_error", "message": "invalid x-api-key"}
    emulator.script("*", [refused] * 2000)
    set_threshold(kubectl, namespace, 0.85)
    status = decided(kubectl, namespace, first["hash"])["status"]
    assert status["rollout"]["phase"] == "Inconclusive", status["rollout"]
    message = status["rollout"]["message"]
    assert message.startswith("authentication failed for tier "), message
    items = len((EXAMPLE / "dataset.jsonl").read_text().splitlines())
    assert f"{items}/{items} calls 401" in message


def test_point_14_a_route_on_a_retired_model_makes_the_policy_condition_false(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    deploy(kubectl, namespace, emulator)
    patch = {"spec": {"model": "claude-sonnet-4"}}  # retired 2026-06-15
    kubectl("patch", "modeltier", "sonnet", "--type=merge", "-p", json.dumps(patch),
            namespace=namespace)  # fmt: skip
    body = eventually(
        lambda: (
            condition(p := policy(kubectl, namespace), "ModelSupported")["status"] == "False" and p
        ),
        "the policy's ModelSupported=False",
    )
    supported = condition(body, "ModelSupported")
    assert supported["reason"] == "Retired"
    assert "route triage" in supported["message"] and "(tier sonnet)" in supported["message"]
    assert "claude-sonnet-4" in supported["message"]


def tier_doc(emulator: EmulatorThread, name: str) -> dict[str, Any]:
    docs = example_objects(emulator.base_url)
    return next(d for d in docs if d["kind"] == "ModelTier" and d["metadata"]["name"] == name)


def rollout_reason(kubectl: Kubectl, namespace: str, reason: str) -> dict[str, Any]:
    return eventually(
        lambda: (
            (p := policy(kubectl, namespace))["status"]["rollout"].get("reason") == reason and p
        ),
        f"rollout reason {reason}",
        timeout=120,
    )


def test_point6_a_key_reference_change_is_evaluated_with_the_new_reference_before_it_is_live(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    first = deploy(kubectl, namespace, emulator)
    before = policy(kubectl, namespace)["status"]
    version = live(kubectl, namespace)["metadata"]["resourceVersion"]
    # One apply: a change the gate would pass, and the haiku tier's key moved to a Secret
    # that does not exist yet.
    haiku = tier_doc(emulator, "haiku")
    haiku["spec"]["apiKeySecretRef"] = {"name": "anthropic-api-key-2026", "key": "api-key"}
    cascade = next(d for d in example_objects(emulator.base_url) if d["kind"] == "CascadePolicy")
    cascade["spec"]["routes"][0]["steps"][0]["escalateWhen"][2]["threshold"] = 0.85
    kubectl.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": [haiku, cascade]}),
                  namespace=namespace)  # fmt: skip
    body = decided(kubectl, namespace, before["candidateHash"])
    status = body["status"]
    assert status["rollout"]["phase"] == "Inconclusive", status["rollout"]
    assert status["rollout"]["reason"] == "KeyReferenceMissing"
    assert 'secret "anthropic-api-key-2026" not found' in status["rollout"]["message"]
    assert live(kubectl, namespace)["metadata"]["resourceVersion"] == version
    assert status["configHash"] == first["hash"] == status["promotedHash"]
    # The eval was built with the candidate's reference, never the previous one; its
    # waiting Job is gone.
    inconclusive = [e for e in events(kubectl, namespace) if e["reason"] == "Inconclusive"]
    assert len(inconclusive) == 1 and "anthropic-api-key-2026" in inconclusive[0]["message"]
    eventually(lambda: eval_jobs(kubectl, namespace) == [], "the waiting eval Job deleted")
    # The Secret is made; a new eval of the same candidate reads the key from it.
    kubectl(
        "create", "secret", "generic", "anthropic-api-key-2026",
        "--from-literal=api-key=rotated-key", namespace=namespace,
    )  # fmt: skip
    candidate = status["candidateHash"]
    kubectl(
        "annotate", "cascadepolicy", POLICY, f"tierwise.dev/reevaluate={candidate[7:19]}",
        namespace=namespace,
    )  # fmt: skip
    body = promoted_again(kubectl, namespace)
    assert body["status"]["promotedHash"] == candidate
    assert body["status"]["rollout"]["promotedKeys"] != before["rollout"]["promotedKeys"]
    (job,) = eval_jobs(kubectl, namespace)
    container = job["spec"]["template"]["spec"]["containers"][0]
    keys = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert keys["TIERWISE_TIER_HAIKU_API_KEY"]["name"] == "anthropic-api-key-2026"
    haiku_keys = {r.api_key for r in emulator.recorded_requests(model="claude-haiku-5-5")}
    assert "rotated-key" in haiku_keys


def test_point6_a_key_reference_change_alone_is_re_checked_before_the_live_config_gets_it(
    operator, kubectl: Kubectl, namespace: str, emulator: EmulatorThread
):
    first = deploy(kubectl, namespace, emulator)
    before = policy(kubectl, namespace)["status"]
    version = live(kubectl, namespace)["metadata"]["resourceVersion"]
    haiku = tier_doc(emulator, "haiku")
    haiku["spec"]["apiKeySecretRef"] = {"name": "anthropic-api-key", "key": "no-such-key"}
    kubectl.apply(json.dumps(haiku), namespace=namespace)
    # The rendered config is the same; the candidate is not: it is checked, and refused.
    status = rollout_reason(kubectl, namespace, "KeyReferenceMissing")["status"]
    assert status["candidateHash"] == first["hash"] == status["promotedHash"]
    assert status["rollout"]["phase"] == "Inconclusive", status["rollout"]
    message = status["rollout"]["message"]
    assert "couldn't find key no-such-key in Secret" in message and "anthropic-api-key" in message
    assert live(kubectl, namespace)["metadata"]["resourceVersion"] == version
    assert status["rollout"]["promotedKeys"] == before["rollout"]["promotedKeys"]
    # Put back, the live candidate is the candidate again: nothing to evaluate.
    kubectl.apply(json.dumps(tier_doc(emulator, "haiku")), namespace=namespace)
    rollout_reason(kubectl, namespace, "UpToDate")
