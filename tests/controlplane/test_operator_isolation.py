"""One team's mistake never holds up another's; Events are posted once per transition; the
resync repairs what was changed behind the operator's back and says so.

The operator here runs with a long resync period, so whatever happens within a test
happened through the event handlers, not the safety net.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_process import HAIKU_PRICE_CHANGE, OperatorProcess, eventually

from harness.kubectl import Kubectl

pytestmark = pytest.mark.controlplane

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "support-triage"
INVALID = yaml.safe_load((ROOT / "tests/data/invalid_resources.yaml").read_text())
FIELD_MANAGER = "tierwise-operator"


@pytest.fixture(scope="module")
def quiet_operator(operator_kubeconfig: Path, tmp_path_factory) -> Iterator[OperatorProcess]:
    """The operator with a resync period far beyond any test's length."""
    process = OperatorProcess(
        operator_kubeconfig,
        tmp_path_factory.mktemp("quiet-operator") / "operator.log",
        ["--webhook-port=0", "--resync-seconds=600"],
    )
    process.start()
    yield process
    process.stop()


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), None
    )


def policy_manifest(name: str, tiers: list[str], **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "tierwise.dev/v1alpha1",
            "kind": "CascadePolicy",
            "metadata": {"name": name},
            "spec": {
                "podSelector": {"matchLabels": {"app": name}},
                "routes": [{"name": "main", "steps": [{"tier": t} for t in tiers]}],
                **spec,
            },
        }
    )


def events_of(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    return kubectl.get_json(
        "events", "--field-selector", f"involvedObject.name={name}", namespace=namespace
    )["items"]


def config_hash(kubectl: Kubectl, namespace: str, policy: str) -> str | None:
    result = kubectl(
        "get", "configmap", f"tierwise-{policy}", "-o", "json", namespace=namespace, check=False
    )
    if result.returncode:
        return None
    return json.loads(result.stdout)["metadata"]["annotations"]["tierwise.dev/config-hash"]


def ready(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    policy = kubectl.get_json("cascadepolicy", name, namespace=namespace)
    got = condition(policy, "Ready")
    return policy if got and got["status"] == "True" else None


def test_a_policy_that_cannot_be_written_holds_up_no_other(
    quiet_operator, kubectl: Kubectl, namespace: str
):
    kubectl.apply(EXAMPLE / "tiers.yaml", namespace=namespace)
    # Someone else's ConfigMap sits where policy "blocked" would write its config.
    squatter = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "tierwise-blocked"},
        "immutable": True,
        "data": {"router-config.json": "{}"},
    }
    kubectl.apply(json.dumps(squatter), namespace=namespace)
    kubectl.apply(policy_manifest("blocked", ["haiku", "sonnet"]), namespace=namespace)
    kubectl.apply(policy_manifest("healthy", ["haiku", "sonnet"]), namespace=namespace)
    eventually(lambda: ready(kubectl, namespace, "healthy"), "the healthy policy Ready")

    def write_refused():
        got = condition(kubectl.get_json("cascadepolicy", "blocked", namespace=namespace), "Ready")
        return got if got and got["reason"] == "ConfigMapConflict" else None

    # Not the operator's ConfigMap: never written (see test_operator_safety), and said so.
    reported = eventually(write_refused, "the blocked policy's condition")
    assert reported["status"] == "False" and "tierwise-blocked" in reported["message"]
    assert "not owned by" in reported["message"]

    # usedBy is right from the policies' own events, without a resync.
    eventually(
        lambda: (
            kubectl.get_json("modeltier", "haiku", namespace=namespace)["status"].get("usedBy") == 2
        ),
        "usedBy 2",
        timeout=10,
    )

    # A tier change re-renders the healthy policy at once, although the blocked one fails
    # on every attempt.
    before = config_hash(kubectl, namespace, "healthy")
    started = time.monotonic()
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
        lambda: config_hash(kubectl, namespace, "healthy") != before, "re-render", timeout=10
    )
    assert time.monotonic() - started < 10


def test_an_apply_posts_each_transition_once(quiet_operator, kubectl: Kubectl, namespace: str):
    # One apply of the whole example, policy before its tiers (files apply in name order).
    kubectl.apply(EXAMPLE, namespace=namespace)
    eventually(lambda: ready(kubectl, namespace, "email-triage"), "Ready")
    time.sleep(3)  # let every handler triggered by the apply finish
    reasons = Counter(e["reason"] for e in events_of(kubectl, namespace, "email-triage"))
    counts = {
        r: sum(
            e.get("count") or 1
            for e in events_of(kubectl, namespace, "email-triage")
            if e["reason"] == r
        )
        for r in reasons
    }
    assert counts.get("Rendered") == 1, counts
    assert counts.get("ConfigRendered") == 1, counts
    assert counts.get("TierNotFound", 0) <= 1, counts


def with_managed_fields(kubectl: Kubectl, namespace: str, kind: str, name: str) -> dict[str, Any]:
    result = kubectl("get", kind, name, "-o", "json", "--show-managed-fields", namespace=namespace)
    return json.loads(result.stdout)


def test_writes_name_the_operator_as_field_manager(
    quiet_operator, kubectl: Kubectl, namespace: str
):
    kubectl.apply(EXAMPLE, namespace=namespace)
    eventually(lambda: ready(kubectl, namespace, "email-triage"), "Ready")
    cm = with_managed_fields(kubectl, namespace, "configmap", "tierwise-email-triage")
    assert {m["manager"] for m in cm["metadata"]["managedFields"]} == {FIELD_MANAGER}
    policy = with_managed_fields(kubectl, namespace, "cascadepolicy", "email-triage")
    status_managers = {
        m["manager"]
        for m in policy["metadata"]["managedFields"]
        if m.get("subresource") == "status"
    }
    assert status_managers == {FIELD_MANAGER}


def test_status_says_only_what_is_true(quiet_operator, kubectl: Kubectl, namespace: str):
    # Never rendered: no ConfigMap named, nothing "kept".
    kubectl.apply(policy_manifest("lonely", ["haiku"]), namespace=namespace)

    def reported():
        policy = kubectl.get_json("cascadepolicy", "lonely", namespace=namespace)
        return policy if condition(policy, "Ready") else None

    policy = eventually(reported, "a status")
    assert "configMap" not in policy["status"]
    assert condition(policy, "Ready")["message"].startswith("no router config yet: ")
    # An unknown model priced for input only is told what is still missing.
    tier = {
        "apiVersion": "tierwise.dev/v1alpha1",
        "kind": "ModelTier",
        "metadata": {"name": "custom"},
        "spec": {"model": "house-model-1", "pricing": {"input": 2}},
    }
    kubectl.apply(json.dumps(tier), namespace=namespace)

    def priced():
        got = condition(kubectl.get_json("modeltier", "custom", namespace=namespace), "Ready")
        return got if got and got["reason"] == "PricingAmbiguous" else None

    # Nothing is derived: every price still missing is named, the given one is not.
    message = eventually(priced, "PricingAmbiguous")["message"]
    assert "set spec.pricing.output, spec.pricing.cacheWrite5m" in message
    assert "spec.pricing.cacheRead" in message and "pricing.input" not in message


@pytest.mark.parametrize(
    "case", [c for c in INVALID if c.get("operatorOnly")], ids=lambda c: c["name"]
)
def test_what_the_crd_cannot_check_is_an_invalid_spec_condition(
    quiet_operator, kubectl: Kubectl, namespace: str, case: dict[str, Any]
):
    manifest = {
        "apiVersion": "tierwise.dev/v1alpha1",
        "metadata": {"name": "odd"},
        **case["manifest"],
    }
    kubectl.apply(json.dumps(manifest), namespace=namespace)

    def invalid():
        got = condition(kubectl.get_json("cascadepolicy", "odd", namespace=namespace), "Ready")
        return got if got and got["reason"] == "InvalidSpec" else None

    assert case["message"] in eventually(invalid, "InvalidSpec")["message"]


def test_the_resync_repairs_a_changed_config_map_posts_an_event_and_agrees_in_status(
    operator, kubectl: Kubectl, namespace: str
):
    # The module's operator resyncs every 2 s.
    kubectl.apply(EXAMPLE, namespace=namespace)
    policy = eventually(lambda: ready(kubectl, namespace, "email-triage"), "Ready")
    good = policy["status"]["configHash"]
    assert config_hash(kubectl, namespace, "email-triage") == good
    kubectl(
        "patch",
        "configmap",
        "tierwise-email-triage",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "data": {"router-config.json": "{}"},
                "metadata": {"annotations": {"tierwise.dev/config-hash": "sha256:hand-edited"}},
            }
        ),
        namespace=namespace,
    )
    eventually(
        lambda: config_hash(kubectl, namespace, "email-triage") == good, "the repair", timeout=15
    )
    kubectl("delete", "configmap", "tierwise-email-triage", namespace=namespace)
    eventually(
        lambda: config_hash(kubectl, namespace, "email-triage") == good,
        "the re-creation",
        timeout=15,
    )
    # A repair is news of its own (a Warning), not a newly rendered config.
    events = eventually(
        lambda: (
            found
            if len(
                found := [
                    e
                    for e in events_of(kubectl, namespace, "email-triage")
                    if e["reason"] == "LiveConfigRestored"
                ]
            )
            >= 2
            else None
        ),
        "the resync's LiveConfigRestored events",
        timeout=15,
    )
    assert {e["type"] for e in events} == {"Warning"}
    messages = " ".join(e["message"] for e in events)
    assert "was edited outside the operator" in messages and "was deleted" in messages
    assert all(e["source"].get("component") == FIELD_MANAGER for e in events)
    status = kubectl.get_json("cascadepolicy", "email-triage", namespace=namespace)["status"]
    assert status["configHash"] == good == config_hash(kubectl, namespace, "email-triage")
