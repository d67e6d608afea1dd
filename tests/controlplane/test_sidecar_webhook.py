"""Sidecar injection: the real API server calls the operator's webhook when a Pod is created."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_process import OperatorProcess, bind_operator_identity, eventually, free_port

from tierwise.localcluster.kubectl import Kubectl

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "support-triage"


@pytest.fixture(scope="module")
def injecting_operator(
    controlplane, kubectl: Kubectl, user_kubeconfig, tmp_path_factory
) -> Iterator[OperatorProcess]:
    kubeconfig = bind_operator_identity(
        kubectl,
        user_kubeconfig,
        "tierwise-operator-injecting",
        ["tierwise-operator", "tierwise-operator-webhook-manager"],
    )
    args = [
        "--webhook-manage",
        "--webhook-address=127.0.0.1",
        "--webhook-host=127.0.0.1",
        f"--webhook-port={free_port()}",
    ]
    process = OperatorProcess(
        kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log", args
    )
    process.start()
    eventually(
        lambda: kubectl.get_json("mutatingwebhookconfiguration", "tierwise.dev"),
        "the webhook registration",
    )
    yield process
    process.stop()
    kubectl("delete", "mutatingwebhookconfiguration", "tierwise.dev", check=False)


def pod_manifest(
    name: str,
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
    init: list | None = None,
) -> str:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "example.com/inbox:1"}]}
    if init:
        spec["initContainers"] = init
    meta = {"name": name, "labels": labels, "annotations": annotations or {}}
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})


def sidecars(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in pod["spec"].get("initContainers", []) if c["name"] == "tierwise-router"]


@pytest.fixture
def opted_in(injecting_operator, kubectl: Kubectl, namespace: str) -> str:
    """A namespace that opted in, with the examples applied and the first pod injected."""
    kubectl("label", "namespace", namespace, "tierwise.dev/injection=enabled")
    kubectl.apply(EXAMPLES, namespace=namespace)
    eventually(
        lambda: kubectl.get_json("configmap", "tierwise-email-triage", namespace=namespace),
        "the policy's ConfigMap",
    )
    attempt = 0

    def first_pod_injected() -> bool:
        # The operator learns of the namespace label and the policy through watches; until
        # then a pod is admitted as is, so the positive control retries with fresh pods.
        nonlocal attempt
        attempt += 1
        kubectl.apply(
            pod_manifest(f"control-{attempt}", {"app": "support-inbox"}), namespace=namespace
        )
        return bool(sidecars(kubectl.get_json("pod", f"control-{attempt}", namespace=namespace)))

    eventually(first_pod_injected, "the first injected pod")
    return namespace


def test_a_matching_pod_is_stored_with_sidecar_mount_and_env(opted_in: str, kubectl: Kubectl):
    kubectl.apply(pod_manifest("inbox", {"app": "support-inbox"}), namespace=opted_in)
    pod = kubectl.get_json("pod", "inbox", namespace=opted_in)
    [router] = sidecars(pod)
    assert router["restartPolicy"] == "Always"
    assert router["volumeMounts"][0]["mountPath"] == "/etc/tierwise"
    assert {
        "name": "tierwise-router-config",
        "configMap": {"name": "tierwise-email-triage", "defaultMode": 420},
    } in pod["spec"]["volumes"]
    keys = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in router["env"]}
    assert keys == {
        f"TIERWISE_TIER_{t}_API_KEY": {"name": "anthropic-api-key", "key": "api-key"}
        for t in ("HAIKU", "SONNET", "OPUS")
    }
    app_env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert app_env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8787"
    assert pod["metadata"]["annotations"]["tierwise.dev/injected-by"] == "email-triage"


def test_opted_out_and_unmatched_pods_are_untouched(opted_in: str, kubectl: Kubectl):
    kubectl.apply(
        pod_manifest("opted-out", {"app": "support-inbox"}, {"tierwise.dev/inject": "false"}),
        namespace=opted_in,
    )
    kubectl.apply(pod_manifest("unmatched", {"app": "billing"}), namespace=opted_in)
    for name in ("opted-out", "unmatched"):
        pod = kubectl.get_json("pod", name, namespace=opted_in)
        assert "initContainers" not in pod["spec"] and "env" not in pod["spec"]["containers"][0], (
            name
        )


def test_a_pod_that_already_has_the_sidecar_is_not_injected_twice(opted_in: str, kubectl: Kubectl):
    existing = [{"name": "tierwise-router", "image": "tierwise:custom", "restartPolicy": "Always"}]
    kubectl.apply(
        pod_manifest("preinjected", {"app": "support-inbox"}, init=existing), namespace=opted_in
    )
    pod = kubectl.get_json("pod", "preinjected", namespace=opted_in)
    assert [c["image"] for c in sidecars(pod)] == ["tierwise:custom"]


def test_a_namespace_that_did_not_opt_in_is_left_alone(opted_in: str, kubectl: Kubectl):
    # The opted-in namespace above proves the webhook is live; this one has no label.
    other = f"{opted_in}-plain"
    kubectl("create", "namespace", other)
    try:
        eventually(
            lambda: kubectl("get", "serviceaccount", "default", namespace=other).returncode == 0,
            "the default ServiceAccount",
        )
        kubectl.apply(EXAMPLES, namespace=other)
        eventually(
            lambda: kubectl.get_json("configmap", "tierwise-email-triage", namespace=other),
            "the policy's ConfigMap",
        )
        kubectl.apply(pod_manifest("inbox", {"app": "support-inbox"}), namespace=other)
        assert sidecars(kubectl.get_json("pod", "inbox", namespace=other)) == []
    finally:
        kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_the_webhook_is_registered_to_fail_open(injecting_operator, kubectl: Kubectl):
    [webhook] = kubectl.get_json("mutatingwebhookconfiguration", "tierwise.dev")["webhooks"]
    assert webhook["failurePolicy"] == "Ignore"
    assert webhook["rules"][0]["operations"] == ["CREATE"] and webhook["rules"][0]["resources"] == [
        "pods"
    ]
    assert webhook["clientConfig"]["caBundle"]
