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
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_process import OPERATOR_USER, OperatorProcess, bind_operator_identity, eventually

from harness.kubectl import Kubectl
from harness.podrunner import LOCAL_RUN_LABEL, PodRunner
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


def deploy(kubectl: Kubectl, namespace: str, emulator: EmulatorThread, **evaluation: Any) -> dict:
    kubectl(
        "create", "secret", "generic", "anthropic-api-key",
        "--from-literal=api-key=test-key", namespace=namespace,
    )  # fmt: skip
    for doc in example_objects(emulator.base_url):
        if doc["kind"] == "CascadePolicy":
            doc["spec"]["evaluation"].update(evaluation)
        kubectl.apply(json.dumps(doc), namespace=namespace)
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


def live_identity(kubectl: Kubectl, namespace: str) -> str | None:
    """The candidate the live ConfigMap holds: its config and key references."""
    annotations = live(kubectl, namespace)["metadata"].get("annotations") or {}
    return annotations.get("tierwise.dev/candidate-hash")


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
            # A policy's first config is decided on its own (onNewPolicy: Promote); the
            # candidate hash covers key references, so it differs from the config hash.
            and rollout.get("reason") != "FirstConfig"
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
    # configHash: the live config; promotedHash/candidateHash: config and key references.
    assert status["configHash"] == first["hash"]
    assert status["promotedHash"] != status["candidateHash"]
    last = status["lastEval"]
    assert last["decision"] == "Rejected" and last["graded"] == 400
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
    assert job["metadata"]["name"] == f"{POLICY}-eval-{status['candidateHash'][7:15]}"
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
    assert json.loads(inputs["data"]["candidate.json"])["hash"] != first["hash"]
    assert job["metadata"]["annotations"]["tierwise.dev/candidate-hash"] == status["candidateHash"]
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
            assert status["promotedHash"] == status["candidateHash"]
            assert status["configHash"] != first["hash"]
            data = eventually(
                lambda: (
                    (cm := live(kubectl, namespace))["metadata"]["annotations"]
                    == {
                        "tierwise.dev/config-hash": status["configHash"],
                        "tierwise.dev/candidate-hash": status["candidateHash"],
                    }
                    and cm["data"][CONFIG_KEY]
                ),
                "the promoted ConfigMap",
            )
            mounted.write_text(data)  # the kubelet refreshes the mounted file
            eventually(
                lambda: router.router.config.hash == status["configHash"],
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
    assert "graded items" in status["rollout"]["message"]
    assert status["lastEval"]["graded"] == 0
    assert live(kubectl, namespace)["metadata"]["resourceVersion"] == version
    # The outage is over: ask for a new eval of the same candidate.
    emulator.reset()
    candidate = status["candidateHash"]
    kubectl(
        "annotate", "cascadepolicy", POLICY, f"tierwise.dev/reevaluate={candidate[7:19]}",
        namespace=namespace,
    )  # fmt: skip
    # Promoted, not the Promoting that records the decision before the live ConfigMap write.
    body = eventually(
        lambda: (
            (p := policy(kubectl, namespace))["status"]["rollout"].get("phase") == "Promoted" and p
        ),
        "the new eval's decision",
        timeout=120,
    )
    assert body["status"]["rollout"]["reason"] == "EvalPassed"
    assert body["status"]["promotedHash"] == candidate
    assert live_config(kubectl, namespace)["hash"] == body["status"]["configHash"]


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
    eventually(lambda: live_identity(kubectl, namespace) == candidate, "the forced promotion")
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
            (p := policy(kubectl, namespace))["status"]["rollout"]["reason"] == "EvalNotStarted"
            and p
        ),
        "the eval to wait for its dataset",
    )
    assert "triage-eval-dataset" in body["status"]["rollout"]["message"]
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
    assert status["promotedHash"] == status["candidateHash"]
    assert status["configHash"] == document["hash"]
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


def tier_doc(emulator: EmulatorThread, name: str) -> dict[str, Any]:
    docs = example_objects(emulator.base_url)
    return next(d for d in docs if d["kind"] == "ModelTier" and d["metadata"]["name"] == name)


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
    assert (
        status["configHash"] == first["hash"] and status["promotedHash"] == before["promotedHash"]
    )
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
    body = eventually(
        lambda: (
            (p := policy(kubectl, namespace))["status"]["rollout"].get("phase") == "Promoted" and p
        ),
        "the new eval's decision",
        timeout=120,
    )
    assert body["status"]["promotedHash"] == candidate == live_identity(kubectl, namespace)
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
    status = decided(kubectl, namespace, before["candidateHash"])["status"]
    # The rendered config is the same; the candidate is not: it is checked, and refused.
    assert status["rollout"]["phase"] == "Inconclusive", status["rollout"]
    message = status["rollout"]["message"]
    assert "couldn't find key no-such-key in Secret" in message and "anthropic-api-key" in message
    assert live(kubectl, namespace)["metadata"]["resourceVersion"] == version
    assert (
        status["configHash"] == first["hash"] and status["promotedHash"] == before["promotedHash"]
    )
