"""The operator against a real kube-apiserver, running as the identity its ClusterRole allows.

The operator is a real `tierwise operator` process. It authenticates with a client
certificate for the user `tierwise-operator`, bound to `config/rbac/operator-clusterrole.yaml`
and nothing else, so every test here also shows that ClusterRole is enough.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from operator_process import apply_ungated as shared_apply_ungated
from operator_process import eventually

from harness.kubectl import Kubectl
from tierwise.render import CONFIG_KEY

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
POLICY = "email-triage"
CONFIG_MAP = f"tierwise-{POLICY}"


def config_map(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    return kubectl.get_json("configmap", CONFIG_MAP, namespace=namespace)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind)


def rendered(namespace: str) -> str:
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "tierwise"),
            "render",
            "-f",
            str(EXAMPLES / "support-triage"),
            "-n",
            namespace,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def apply_ungated(kubectl: Kubectl, namespace: str) -> None:
    shared_apply_ungated(kubectl, EXAMPLES / "support-triage", POLICY, namespace)


def test_examples_become_a_config_map_equal_to_tierwise_render(
    operator, kubectl: Kubectl, namespace: str
):
    kubectl.apply(EXAMPLES / "support-triage", namespace=namespace)
    cm = eventually(lambda: config_map(kubectl, namespace), "the ConfigMap")
    assert cm["data"][CONFIG_KEY] == rendered(namespace)
    owner = cm["metadata"]["ownerReferences"][0]
    policy = kubectl.get_json("cascadepolicy", POLICY, namespace=namespace)
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "CascadePolicy",
        POLICY,
        policy["metadata"]["uid"],
    )
    assert (
        cm["metadata"]["annotations"]["tierwise.dev/config-hash"]
        == json.loads(cm["data"][CONFIG_KEY])["hash"]
    )


def test_status_conditions_printer_columns_and_events(operator, kubectl: Kubectl, namespace: str):
    kubectl.apply(EXAMPLES / "support-triage", namespace=namespace)

    def ready_policy():
        policy = kubectl.get_json("cascadepolicy", POLICY, namespace=namespace)
        return policy if condition(policy, "Ready")["status"] == "True" else None

    policy = eventually(ready_policy, "Ready=True")
    status = policy["status"]
    assert status["observedGeneration"] == policy["metadata"]["generation"]
    assert condition(policy, "ResolvedRefs")["reason"] == "AllResolved"
    assert (status["routeCount"], status["tierCount"], status["configMap"]) == (2, 3, CONFIG_MAP)

    tier = eventually(
        lambda: (
            kubectl.get_json("modeltier", "sonnet", namespace=namespace)
            .get("status", {})
            .get("usedBy")
            == 1
            and kubectl.get_json("modeltier", "sonnet", namespace=namespace)
        ),
        "tier usedBy",
    )
    assert (
        tier["status"]["pricing"]["input"] == "2" and condition(tier, "Ready")["reason"] == "Priced"
    )

    table = kubectl("get", "tierwise", namespace=namespace).stdout
    assert (
        "cascadepolicy.tierwise.dev/email-triage" in table
        and "modeltier.tierwise.dev/haiku" in table
    )
    assert "ROUTES" in table and "claude-haiku-5-5" in table and "USED BY" in table

    events = eventually(
        lambda: kubectl.get_json(
            "events", "--field-selector", f"involvedObject.name={POLICY}", namespace=namespace
        )["items"],
        "events on the policy",
    )
    assert {"ConfigRendered", "Rendered"} <= {e["reason"] for e in events}

    metrics = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in operator.metrics().splitlines()
        if line.startswith("tierwise_operator_")
    }
    assert metrics['tierwise_operator_reconciles_total{kind="CascadePolicy",result="ready"}'] >= 1
    assert metrics["tierwise_operator_config_writes_total"] >= 1
    assert metrics['tierwise_operator_reconcile_duration_seconds_count{kind="CascadePolicy"}'] >= 1


def test_tier_change_rerenders_and_missing_tier_is_a_condition(
    operator, kubectl: Kubectl, namespace: str
):
    apply_ungated(kubectl, namespace)
    first = eventually(lambda: config_map(kubectl, namespace), "the ConfigMap")
    first_hash = first["metadata"]["annotations"]["tierwise.dev/config-hash"]

    started = time.monotonic()
    kubectl(
        "patch",
        "modeltier",
        "haiku",
        "--type=merge",
        "-p",
        '{"spec": {"model": "claude-haiku-4-5-20251001"}}',
        namespace=namespace,
    )
    changed = eventually(
        lambda: (
            (cm := config_map(kubectl, namespace))["metadata"]["annotations"][
                "tierwise.dev/config-hash"
            ]
            != first_hash
            and cm
        ),
        "a new config hash",
        timeout=10,
    )
    elapsed = time.monotonic() - started
    assert (
        json.loads(changed["data"][CONFIG_KEY])["tiers"]["haiku"]["model"]
        == "claude-haiku-4-5-20251001"
    )
    assert elapsed < 5, f"re-render took {elapsed:.2f}s"
    print(f"tier change -> new ConfigMap in {elapsed:.2f}s")

    kubectl("delete", "modeltier", "sonnet", namespace=namespace)

    def tier_not_found():
        policy = kubectl.get_json("cascadepolicy", POLICY, namespace=namespace)
        refs = condition(policy, "ResolvedRefs")
        return policy if refs["status"] == "False" and refs["reason"] == "TierNotFound" else None

    policy = eventually(tier_not_found, "ResolvedRefs=False TierNotFound")
    assert "sonnet" in condition(policy, "ResolvedRefs")["message"]
    assert condition(policy, "Ready")["status"] == "False"
    # The last good config stays in place, so running routers keep serving.
    assert config_map(kubectl, namespace)["data"] == changed["data"]

    kubectl.apply(EXAMPLES / "support-triage" / "tiers.yaml", namespace=namespace)
    eventually(
        lambda: (
            condition(kubectl.get_json("cascadepolicy", POLICY, namespace=namespace), "Ready")[
                "status"
            ]
            == "True"
        ),
        "recovery to Ready=True",
    )


def test_operator_never_writes_spec_and_deletion_leaves_nothing(
    operator, kubectl: Kubectl, namespace: str
):
    kubectl.apply(EXAMPLES / "support-triage", namespace=namespace)
    eventually(lambda: config_map(kubectl, namespace), "the ConfigMap")
    time.sleep(3)  # let a resync pass run over the objects too
    for kind in ("cascadepolicy", "modeltier", "cacheprofile"):
        for obj in kubectl.get_json(kind, namespace=namespace)["items"]:
            meta = obj["metadata"]
            assert meta["generation"] == 1, f"{kind} {meta['name']}: spec was written"
            assert not meta.get("finalizers"), (
                f"{kind} {meta['name']} has finalizers {meta.get('finalizers')}"
            )
            assert not [a for a in meta.get("annotations", {}) if "kopf" in a], meta.get(
                "annotations"
            )
    started = time.monotonic()
    kubectl("delete", "cascadepolicy", POLICY, "--timeout=20s", namespace=namespace)
    assert time.monotonic() - started < 20
    eventually(
        lambda: (
            kubectl("get", "configmap", CONFIG_MAP, namespace=namespace, check=False).returncode
            != 0
        ),
        "the garbage collector to delete the ConfigMap",
        # The garbage collector learns new resource types (our CRDs) on its 30s discovery
        # resync, so a first deletion can take that long.
        timeout=90,
    )


def test_pod_counts_in_policy_status(operator, kubectl: Kubectl, namespace: str):
    kubectl.apply(EXAMPLES / "support-triage", namespace=namespace)
    for name, labels in [
        ("inbox-1", {"app": "support-inbox"}),
        ("inbox-2", {"app": "support-inbox"}),
        ("other", {"app": "other"}),
    ]:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]},
        }
        kubectl.apply(json.dumps(pod), namespace=namespace)
    pods = eventually(
        lambda: (
            kubectl.get_json("cascadepolicy", POLICY, namespace=namespace)["status"]
            .get("pods", {})
            .get("matching")
            == 2
            and kubectl.get_json("cascadepolicy", POLICY, namespace=namespace)["status"]["pods"]
        ),
        "pod counts",
    )
    # No sidecars: none of them is judged against the live config.
    assert pods == {"matching": 2, "injected": 0, "withoutSidecar": 2, "cannotServe": 0}


def test_killed_and_restarted_operator_converges(operator, kubectl: Kubectl, namespace: str):
    apply_ungated(kubectl, namespace)
    first = eventually(lambda: config_map(kubectl, namespace), "the ConfigMap")
    operator.kill()
    try:
        # Changes made while the operator is down: a tier changes, a second policy appears.
        kubectl(
            "patch",
            "modeltier",
            "sonnet",
            "--type=merge",
            "-p",
            '{"spec": {"pricing": {"output": 12}}}',
            namespace=namespace,
        )
        second = (
            (EXAMPLES / "support-triage/policy.yaml")
            .read_text()
            .replace("name: email-triage", "name: second")
        )
        kubectl.apply(second, namespace=namespace)
    finally:
        operator.start()

    def converged():
        cm = config_map(kubectl, namespace)
        return (
            cm
            if json.loads(cm["data"][CONFIG_KEY])["tiers"]["sonnet"]["pricing"]["output"] == "12"
            else None
        )

    cm = eventually(converged, "the re-rendered ConfigMap after restart")
    assert cm["metadata"]["uid"] == first["metadata"]["uid"], (
        "the ConfigMap was recreated, not updated"
    )
    eventually(
        lambda: kubectl.get_json("configmap", "tierwise-second", namespace=namespace),
        "the second policy's ConfigMap",
    )
    names = sorted(
        c["metadata"]["name"]
        for c in kubectl.get_json(
            "configmaps", "-l", "app.kubernetes.io/managed-by=tierwise", namespace=namespace
        )["items"]
    )
    # One live ConfigMap per policy (updated, never a second one); a policy that was gated
    # also has the operator's copy of its promoted config.
    live = [n for n in names if not n.startswith("tierwise.promoted.")]
    assert live == ["tierwise-email-triage", "tierwise-second"]
    assert set(names) - set(live) <= {"tierwise.promoted.email-triage", "tierwise.promoted.second"}
    for name in (POLICY, "second"):
        eventually(
            lambda n=name: (
                condition(kubectl.get_json("cascadepolicy", n, namespace=namespace), "Ready")[
                    "status"
                ]
                == "True"
            ),
            f"{name} Ready",
        )


def test_the_operator_identity_is_refused_secrets(
    operator, kubectl: Kubectl, operator_kubeconfig: Path, namespace: str
):
    as_operator = kubectl.as_kubeconfig(operator_kubeconfig)
    kubectl(
        "create",
        "secret",
        "generic",
        "anthropic-api-key",
        "--from-literal=api-key=sk-test",
        namespace=namespace,
    )
    refused = as_operator("get", "secret", "anthropic-api-key", namespace=namespace, check=False)
    assert refused.returncode != 0 and "Forbidden" in refused.stderr
    listing = as_operator("get", "secrets", "--all-namespaces", check=False)
    assert listing.returncode != 0 and "Forbidden" in listing.stderr
    # ...while what it needs is allowed.
    assert (
        as_operator("auth", "can-i", "update", "configmaps", namespace=namespace).stdout.strip()
        == "yes"
    )
    assert (
        as_operator(
            "auth", "can-i", "patch", "cascadepolicies", "--subresource=status", namespace=namespace
        ).stdout.strip()
        == "yes"
    )
    assert (
        as_operator(
            "auth", "can-i", "update", "cascadepolicies", namespace=namespace, check=False
        ).stdout.strip()
        == "no"
    )
