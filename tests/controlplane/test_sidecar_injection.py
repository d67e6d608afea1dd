"""Sidecar injection through the real API server.

The operator runs as a `tierwise operator --webhook-manage` process under its own ClusterRoles,
registers its webhook, and the real kube-apiserver calls it when Pods are created. There is no
kubelet: the tests read back the Pod the API server stored.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from operator_process import (
    OperatorProcess,
    bind_operator_identity,
    eventually,
    injecting_operator_args,
)

from harness.kubectl import Kubectl
from harness.pki import CertificateAuthority
from tierwise.controller.injection import inject, plan_for
from tierwise.controller.objects import observe

pytestmark = pytest.mark.controlplane

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "support-triage"
ROUTER_IMAGE = "example.com/tierwise:under-test"
POLICY = "email-triage"
INBOX = {"app": "support-inbox"}


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def injecting_operator(
    controlplane, kubectl: Kubectl, user_kubeconfig, tmp_path_factory
) -> Iterator[OperatorProcess]:
    kubeconfig = bind_operator_identity(
        kubectl,
        user_kubeconfig,
        "tierwise-operator-injection-tests",
        ["tierwise-operator", "tierwise-operator-webhook-manager"],
    )
    args = injecting_operator_args(ROUTER_IMAGE)
    process = OperatorProcess(
        kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log", args
    )
    process.start()
    eventually(lambda: registration(kubectl), "the webhook registration")
    yield process
    process.stop()
    kubectl("delete", "mutatingwebhookconfiguration", "tierwise.dev", check=False)


def registration(kubectl: Kubectl) -> dict[str, Any] | None:
    result = kubectl(
        "get", "mutatingwebhookconfiguration", "tierwise.dev", "-o", "json", check=False
    )
    return json.loads(result.stdout) if result.returncode == 0 else None


@pytest.fixture
def opted_in(injecting_operator, kubectl: Kubectl, namespace: str) -> str:
    """A namespace that opted in, with the example policy rendered and known to the webhook."""
    kubectl("label", "namespace", namespace, "tierwise.dev/injection=enabled")
    kubectl.apply(EXAMPLES, namespace=namespace)
    eventually(lambda: config_map(kubectl, namespace), "the policy's ConfigMap")
    attempt = 0

    def control_pod_injected_with_hash() -> bool:
        # The API server learns of a new webhook registration through an informer, and the
        # operator of the policy's status through a watch: a positive control retries with
        # fresh pods until both have caught up, so the tests below assert without retrying.
        nonlocal attempt
        attempt += 1
        stored = create_pod(kubectl, namespace, pod_manifest(f"control-{attempt}", INBOX))
        return bool(sidecars(stored)) and "tierwise.dev/config-hash" in annotations_of(stored)

    eventually(control_pod_injected_with_hash, "the first injected pod")
    return namespace


# -- helpers ----------------------------------------------------------------------------------


def pod_manifest(
    name: str,
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
    init: list[dict[str, Any]] | None = None,
    env: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    app: dict[str, Any] = {"name": "app", "image": "example.com/inbox:1"}
    if env is not None:
        app["env"] = env
    spec: dict[str, Any] = {"containers": [app]}
    if init:
        spec["initContainers"] = init
    meta = {"name": name, "labels": labels, "annotations": annotations or {}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def create_pod(kubectl: Kubectl, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Create the pod, then read back what the API server stored."""
    kubectl("create", "-f", "-", input=json.dumps(manifest), namespace=namespace)
    return kubectl.get_json("pod", manifest["metadata"]["name"], namespace=namespace)


def config_map(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    result = kubectl(
        "get", "configmap", f"tierwise-{POLICY}", "-o", "json", check=False, namespace=namespace
    )
    return json.loads(result.stdout) if result.returncode == 0 else None


def sidecars(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod["spec"]
    everything = spec.get("initContainers", []) + spec["containers"]
    return [c for c in everything if c["name"] == "tierwise-router"]


def annotations_of(pod: dict[str, Any]) -> dict[str, str]:
    return pod["metadata"].get("annotations") or {}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def untouched(pod: dict[str, Any]) -> bool:
    spec = pod["spec"]
    return (
        "initContainers" not in spec
        and all("env" not in c for c in spec["containers"])
        and not any(v["name"] == "tierwise-router-config" for v in spec.get("volumes", []))
        and not {"tierwise.dev/injected-by", "tierwise.dev/config-hash"} & set(annotations_of(pod))
    )


# -- the stored pod ---------------------------------------------------------------------------


def test_a_matching_pod_is_stored_with_sidecar_mount_keys_and_base_url(
    opted_in: str, kubectl: Kubectl
):
    migrate = {"name": "migrate", "image": "example.com/migrate:1"}
    pod = create_pod(kubectl, opted_in, pod_manifest("inbox", INBOX, init=[migrate]))
    spec = pod["spec"]

    router, migrate_stored = spec["initContainers"]
    assert router["name"] == "tierwise-router" and migrate_stored["name"] == "migrate"
    assert router["restartPolicy"] == "Always"
    assert router["image"] == ROUTER_IMAGE
    assert router["command"][:4] == [
        "tierwise",
        "router",
        "--config",
        "/etc/tierwise/router-config.json",
    ]
    assert router["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert router["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert router["readinessProbe"]["httpGet"]["port"] == 9787
    security = router["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert router["resources"]["requests"] and router["resources"]["limits"]

    # (The ServiceAccount admission plugin adds its token mount after the webhook.)
    assert {
        "name": "tierwise-router-config",
        "mountPath": "/etc/tierwise",
        "readOnly": True,
    } in router["volumeMounts"]
    [volume] = [v for v in spec["volumes"] if v["name"] == "tierwise-router-config"]
    assert volume["configMap"]["name"] == f"tierwise-{POLICY}"

    assert env_of(router) == {
        f"TIERWISE_TIER_{tier}_API_KEY": {
            "secretKeyRef": {"name": "anthropic-api-key", "key": "api-key"}
        }
        for tier in ("HAIKU", "OPUS", "SONNET")
    }
    for container in (migrate_stored, spec["containers"][0]):
        assert container["env"] == [
            {"name": "ANTHROPIC_BASE_URL", "value": "http://127.0.0.1:8787"}
        ], container["name"]

    stored_hash = config_map(kubectl, opted_in)["metadata"]["annotations"][
        "tierwise.dev/config-hash"
    ]
    assert annotations_of(pod)["tierwise.dev/injected-by"] == POLICY
    assert annotations_of(pod)["tierwise.dev/config-hash"] == stored_hash


def test_the_stored_pod_needs_no_second_injection(opted_in: str, kubectl: Kubectl):
    stored = create_pod(kubectl, opted_in, pod_manifest("inbox", INBOX))
    policy = observe(kubectl.get_json("cascadepolicy", POLICY, namespace=opted_in))
    tiers = [observe(t) for t in kubectl.get_json("modeltiers", namespace=opted_in)["items"]]
    # What the API server stored (with all its defaults) is a fixed point of the mutation.
    assert len(sidecars(stored)) == 1
    assert inject(stored, plan_for(policy, tiers, ROUTER_IMAGE)) is None


def test_an_explicit_base_url_is_kept(opted_in: str, kubectl: Kubectl):
    own = [{"name": "ANTHROPIC_BASE_URL", "value": "https://gateway.example.com"}]
    pod = create_pod(kubectl, opted_in, pod_manifest("own-url", INBOX, env=own))
    assert len(sidecars(pod)) == 1
    assert pod["spec"]["containers"][0]["env"] == own


def test_the_oldest_of_several_matching_policies_injects_and_kubectl_warns(
    opted_in: str, kubectl: Kubectl
):
    policy = kubectl.get_json("cascadepolicy", POLICY, namespace=opted_in)
    time.sleep(1.1)  # creationTimestamp has second precision: make the new policy younger
    # Younger, but first by name: only the age rule picks the example policy.
    newer = {
        "apiVersion": policy["apiVersion"],
        "kind": "CascadePolicy",
        "metadata": {"name": "aaa-newer"},
        "spec": policy["spec"],
    }
    kubectl("create", "-f", "-", input=json.dumps(newer), namespace=opted_in)
    eventually(
        lambda: (
            kubectl(
                "get", "configmap", "tierwise-aaa-newer", check=False, namespace=opted_in
            ).returncode
            == 0
        ),
        "the new policy's ConfigMap",
    )
    manifest = pod_manifest("contested", INBOX)
    created = kubectl("create", "-f", "-", input=json.dumps(manifest), namespace=opted_in)
    pod = kubectl.get_json("pod", "contested", namespace=opted_in)
    assert annotations_of(pod)["tierwise.dev/injected-by"] == POLICY
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == "tierwise-router-config"]
    assert volume["configMap"]["name"] == f"tierwise-{POLICY}"
    assert f"CascadePolicies {POLICY}, aaa-newer all select this pod" in created.stderr


# -- pods and namespaces that are left alone --------------------------------------------------


def test_an_opted_out_pod_is_untouched(opted_in: str, kubectl: Kubectl):
    manifest = pod_manifest("opted-out", INBOX, {"tierwise.dev/inject": "false"})
    assert untouched(create_pod(kubectl, opted_in, manifest))


def test_a_pod_no_policy_selects_is_untouched(opted_in: str, kubectl: Kubectl):
    assert untouched(create_pod(kubectl, opted_in, pod_manifest("billing", {"app": "billing"})))


def test_a_namespace_that_did_not_opt_in_is_never_sent_to_the_webhook(
    opted_in: str, kubectl: Kubectl
):
    # The same policy, rendered, selects the pod; only the namespace label is missing. The
    # handler has no namespace check of its own, so only the registration's
    # namespaceSelector can keep this pod untouched.
    other = f"{opted_in}-plain"
    kubectl("create", "namespace", other)
    try:
        eventually(
            lambda: (
                kubectl("get", "serviceaccount", "default", namespace=other, check=False).returncode
                == 0
            ),
            "the default ServiceAccount",
        )
        kubectl.apply(EXAMPLES, namespace=other)
        eventually(lambda: config_map(kubectl, other), "the policy's ConfigMap")
        assert untouched(create_pod(kubectl, other, pod_manifest("inbox", INBOX)))

        # Opting in takes effect with the very next pod: the API server reads the label.
        kubectl("label", "namespace", other, "tierwise.dev/injection=enabled")
        later = eventually(
            lambda: sidecars(
                create_pod(kubectl, other, pod_manifest(f"inbox-{time.monotonic_ns()}", INBOX))
            ),
            "injection after opting in",
        )
        assert len(later) == 1
    finally:
        kubectl("delete", "namespace", other, "--wait=false", check=False)


# -- idempotency and reinvocation -------------------------------------------------------------


def test_a_pod_that_brings_its_own_router_is_not_injected_twice(opted_in: str, kubectl: Kubectl):
    own = [
        {"name": "tierwise-router", "image": "example.com/my-router:1", "restartPolicy": "Always"}
    ]
    pod = create_pod(kubectl, opted_in, pod_manifest("own-router", INBOX, init=own))
    assert [c["image"] for c in sidecars(pod)] == ["example.com/my-router:1"]
    assert "env" not in pod["spec"]["containers"][0]
    assert "tierwise.dev/injected-by" not in annotations_of(pod)


class LateContainerWebhook:
    """A second mutating webhook, ordered after Tierwise's, that adds a container.

    The API server then re-invokes Tierwise's webhook (reinvocationPolicy IfNeeded) with a
    pod that already has the sidecar.
    """

    CONTAINER = "late"
    LABEL = "tests.tierwise.dev/late-container"

    def __init__(self, directory: Path) -> None:
        ca = CertificateAuthority.create(directory, common_name="late-webhook-ca")
        pair = ca.issue(directory, "late", "127.0.0.1", server_hosts=["127.0.0.1"], client=False)
        self.ca_bundle = base64.b64encode(ca.cert_pem).decode()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pair.cert, pair.key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                pod = review["request"]["object"]
                names = [c["name"] for c in pod["spec"]["containers"]]
                response: dict[str, Any] = {"uid": review["request"]["uid"], "allowed": True}
                if webhook.CONTAINER not in names:
                    op = {
                        "op": "add",
                        "path": "/spec/containers/-",
                        "value": {"name": webhook.CONTAINER, "image": "example.com/late:1"},
                    }
                    response["patchType"] = "JSONPatch"
                    response["patch"] = base64.b64encode(json.dumps([op]).encode()).decode()
                body = json.dumps({**review, "response": response}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        return Handler

    def configuration(self, namespace: str) -> dict[str, Any]:
        port = self.server.server_address[1]
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            # The API server calls configurations in name order: "zz-…" after "tierwise.dev".
            "metadata": {"name": f"zz-late-container-{namespace}"},
            "webhooks": [
                {
                    "name": "late-container.tests.tierwise.dev",
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{port}/",
                        "caBundle": self.ca_bundle,
                    },
                    "rules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "resources": ["pods"],
                            "operations": ["CREATE"],
                        }
                    ],
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace}
                    },
                    "objectSelector": {"matchLabels": {self.LABEL: "yes"}},
                    "failurePolicy": "Fail",
                    "reinvocationPolicy": "Never",
                    "sideEffects": "None",
                    "timeoutSeconds": 5,
                    "admissionReviewVersions": ["v1"],
                }
            ],
        }


@pytest.fixture
def late_webhook(opted_in: str, kubectl: Kubectl, tmp_path: Path) -> Iterator[LateContainerWebhook]:
    webhook = LateContainerWebhook(tmp_path)
    webhook.thread.start()
    config = webhook.configuration(opted_in)
    kubectl("create", "-f", "-", input=json.dumps(config))
    try:
        yield webhook
    finally:
        kubectl("delete", "mutatingwebhookconfiguration", config["metadata"]["name"], check=False)
        webhook.server.shutdown()
        webhook.server.server_close()


def test_a_reinvoked_webhook_adds_no_second_sidecar_and_points_late_containers_at_it(
    opted_in: str, kubectl: Kubectl, late_webhook: LateContainerWebhook, injecting_operator
):
    labels = {**INBOX, LateContainerWebhook.LABEL: "yes"}

    def pod_with_late_container() -> dict[str, Any] | None:
        # Until the API server's informer has the new registration, pods come without it.
        manifest = pod_manifest(f"reinvoked-{time.monotonic_ns()}", labels)
        stored = create_pod(kubectl, opted_in, manifest)
        names = [c["name"] for c in stored["spec"]["containers"]]
        return stored if LateContainerWebhook.CONTAINER in names else None

    pod = eventually(pod_with_late_container, "the second webhook")
    app, late = pod["spec"]["containers"]
    assert len(sidecars(pod)) == 1
    assert [v["name"] for v in pod["spec"]["volumes"]].count("tierwise-router-config") == 1
    # The late container was added after Tierwise's first call: only the re-invocation can
    # have given it the base URL, and neither container has it twice.
    assert late["env"] == [{"name": "ANTHROPIC_BASE_URL", "value": "http://127.0.0.1:8787"}]
    assert app["env"] == [{"name": "ANTHROPIC_BASE_URL", "value": "http://127.0.0.1:8787"}]
    name = pod["metadata"]["name"]
    eventually(
        lambda: f"{opted_in}/{name}: re-admitted" in injecting_operator.log.read_text(),
        "the re-invocation in the operator's log",
        timeout=5,
    )


# -- registration and failure policy ----------------------------------------------------------


def test_the_webhook_is_registered_for_opted_in_namespaces_to_fail_open(
    injecting_operator, kubectl: Kubectl
):
    [webhook] = registration(kubectl)["webhooks"]
    assert webhook["namespaceSelector"] == {"matchLabels": {"tierwise.dev/injection": "enabled"}}
    assert webhook["failurePolicy"] == "Ignore"
    assert webhook["reinvocationPolicy"] == "IfNeeded"
    assert webhook["sideEffects"] == "None"
    rule = webhook["rules"][0]
    assert (rule["operations"], rule["resources"]) == (["CREATE"], ["pods"])
    assert webhook["clientConfig"]["url"].startswith("https://127.0.0.1:")
    assert webhook["clientConfig"]["url"].endswith("/inject-router")
    assert b"BEGIN CERTIFICATE" in base64.b64decode(webhook["clientConfig"]["caBundle"])


def test_pods_are_still_created_when_the_operator_is_down(
    opted_in: str, kubectl: Kubectl, injecting_operator: OperatorProcess
):
    # Last in this module: it stops (and restarts) the module's operator.
    old_bundle = registration(kubectl)["webhooks"][0]["clientConfig"]["caBundle"]
    injecting_operator.stop()
    assert registration(kubectl) is not None  # still registered, pointing at nothing
    started = time.monotonic()
    pod = create_pod(kubectl, opted_in, pod_manifest("while-down", INBOX))
    assert untouched(pod)
    assert time.monotonic() - started < 5  # a refused connection fails open at once

    # Back up: it re-registers over the old registration with its new certificate, and the
    # policy's status counts the pod that was created without the sidecar.
    injecting_operator.start()
    eventually(
        lambda: registration(kubectl)["webhooks"][0]["clientConfig"]["caBundle"] != old_bundle,
        "the re-registration with the new CA",
    )
    eventually(
        lambda: sidecars(
            create_pod(kubectl, opted_in, pod_manifest(f"after-{time.monotonic_ns()}", INBOX))
        ),
        "injection after the restart",
    )

    def status_counts_match() -> bool:
        pods = kubectl.get_json("pods", "-l", "app=support-inbox", namespace=opted_in)["items"]
        without = sum(not sidecars(p) for p in pods)
        status = kubectl.get_json("cascadepolicy", POLICY, namespace=opted_in).get("status", {})
        counts = status.get("pods", {})
        return (
            without >= 1
            and counts.get("withoutSidecar") == without
            and (counts.get("matching") == len(pods))
        )

    eventually(status_counts_match, "the policy's pod counts")


# -- pods that cannot serve the live config -------------------------------------------------


def policy_status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return kubectl.get_json("cascadepolicy", name, namespace=namespace).get("status", {})


def pods_current(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == "PodsCurrent"), None)


def test_a_policy_that_gains_a_tier_names_the_pods_to_recreate(opted_in: str, kubectl: Kubectl):
    """The sidecar's env is fixed when its pod is created: after the policy gains a tier,
    the running pod lacks that tier's key variable (its router refuses the new config), the
    policy says so and names the pod; a recreated pod gets the key and clears it."""
    name, labels = "keys", {"app": "keys"}
    policy = {
        "apiVersion": "tierwise.dev/v1alpha1",
        "kind": "CascadePolicy",
        "metadata": {"name": name},
        "spec": {
            "podSelector": {"matchLabels": labels},
            "routes": [{"name": "chat", "steps": [{"tier": "haiku"}]}],
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(policy), namespace=opted_in)
    first_hash = eventually(
        lambda: policy_status(kubectl, opted_in, name).get("configHash"), "the first config"
    )

    def injected_pod() -> bool:
        created = create_pod(kubectl, opted_in, pod_manifest("keys-app", labels))
        if sidecars(created) and annotations_of(created).get("tierwise.dev/config-hash"):
            return True
        kubectl("delete", "pod", "keys-app", "--wait=false", namespace=opted_in)
        eventually(
            lambda: kubectl("get", "pod", "keys-app", namespace=opted_in, check=False).returncode,
            "the uninjected pod to go",
        )
        return False

    eventually(injected_pod, "a pod injected for the policy")
    stored = kubectl.get_json("pod", "keys-app", namespace=opted_in)
    assert set(env_of(sidecars(stored)[0])) == {"TIERWISE_TIER_HAIKU_API_KEY"}
    ok = eventually(
        lambda: (
            (s := policy_status(kubectl, opted_in, name)).get("pods", {}).get("cannotServe") == 0
            and pods_current(s)
        ),
        "the pod counted as current",
    )
    assert ok["status"] == "True" and first_hash in ok["message"]

    # The policy gains a tier: its live config now names the sonnet key variable.
    step = {"op": "add", "path": "/spec/routes/0/steps/-", "value": {"tier": "sonnet"}}
    kubectl(
        "patch", "cascadepolicy", name, "--type=json", "-p", json.dumps([step]), namespace=opted_in
    )

    def reported() -> dict[str, Any] | None:
        status = policy_status(kubectl, opted_in, name)
        condition = pods_current(status)
        if status.get("configHash") in (None, first_hash) or not condition:
            return None
        return status if condition["status"] == "False" else None

    status = eventually(reported, "the pod reported as unable to serve")
    condition = pods_current(status)
    assert status["pods"] == {"matching": 1, "injected": 1, "withoutSidecar": 0, "cannotServe": 1}
    assert condition["reason"] == "MissingKeyEnv"
    assert "keys-app" in condition["message"]
    assert "TIERWISE_TIER_SONNET_API_KEY" in condition["message"]
    assert status["configHash"] in condition["message"]
    # Ready stays True: the config is rendered and live; the pods are what lags.
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    wide = kubectl("get", "cascadepolicy", name, "-o", "wide", namespace=opted_in).stdout
    header, row = wide.splitlines()[:2]
    assert "STALE PODS" in header
    assert row[header.index("STALE PODS") :].split()[0] == "1"  # columns align by position

    def events() -> set[str]:
        items = kubectl.get_json(
            "events", "--field-selector", f"involvedObject.name={name}", namespace=opted_in
        )["items"]
        return {e["reason"] for e in items if e["involvedObject"]["kind"] == "CascadePolicy"}

    eventually(lambda: "MissingKeyEnv" in events(), "the Warning event")

    # Recreated, the pod gets both keys; the resync sees it (no event on the policy).
    kubectl("delete", "pod", "keys-app", "--wait=false", namespace=opted_in)
    eventually(
        lambda: kubectl("get", "pod", "keys-app", namespace=opted_in, check=False).returncode,
        "the old pod to go",
    )
    recreated = create_pod(kubectl, opted_in, pod_manifest("keys-app", labels))
    assert set(env_of(sidecars(recreated)[0])) == {
        "TIERWISE_TIER_HAIKU_API_KEY",
        "TIERWISE_TIER_SONNET_API_KEY",
    }
    cleared = eventually(
        lambda: (
            (s := policy_status(kubectl, opted_in, name)).get("pods", {}).get("cannotServe") == 0
            and pods_current(s)
        ),
        "the recreated pod counted as current",
    )
    assert cleared["status"] == "True" and cleared["reason"] == "AllPodsCurrent"
    eventually(lambda: "AllPodsCurrent" in events(), "the Normal event")
