"""The chart on the real local control plane: server-side dry-run of every rendered object, and
a real `helm install` / `upgrade` / `uninstall` with the operator pods running (pod runner)."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_render import CHART, FULL_VALUES, REPO_ROOT, documents, template

from harness.kubectl import Kubectl
from harness.pki import CertificateAuthority

pytestmark = pytest.mark.timeout(600)

Helm = Callable[..., subprocess.CompletedProcess[str]]
EXAMPLES = REPO_ROOT / "examples" / "support-triage"
THRESHOLD_PATH = "/spec/routes/0/steps/0/escalateWhen/2/threshold"
SIDECAR_RESOURCES = {"requests": {"cpu": "75m", "memory": "96Mi"}, "limits": {"memory": "192Mi"}}
# Stand-ins for the monitoring and cert-manager APIs, so that the server can check the
# names, namespaces and metadata of those objects (their real schemas come with the products).
FOREIGN_CRDS = [
    ("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
    ("monitoring.coreos.com", "PodMonitor", "podmonitors"),
    ("monitoring.coreos.com", "PrometheusRule", "prometheusrules"),
    ("cert-manager.io", "Certificate", "certificates"),
    ("cert-manager.io", "Issuer", "issuers"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _foreign_crd(group: str, kind: str, plural: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["-f", str(FULL_VALUES)],
        ["--set", "webhook.tls.mode=certManager", "--set", "metrics.grafanaDashboard.enabled=true"],
    ],
    ids=["default", "full", "cert-manager"],
)
def test_every_rendered_object_is_accepted_by_the_api_server(
    kubectl: Kubectl, namespace: str, values: list[str]
) -> None:
    # As `helm install` does: the chart's crds/ first (for real), then the templates.
    crds = [p.read_text() for p in sorted((CHART / "crds").glob("*.yaml"))]
    crds += [json.dumps(_foreign_crd(*names)) for names in FOREIGN_CRDS]
    for crd in crds:
        kubectl.apply(crd)
    kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    # Namespaces the full values refer to must exist for a namespaced dry-run.
    for extra in ("support", "sales", "monitoring"):
        if kubectl("get", "namespace", extra, check=False).returncode:
            kubectl("create", "namespace", extra)
    rendered = template(*values, "--namespace", namespace, monitoring=True).stdout
    objects = documents(rendered)
    assert len(objects) > 10
    result = kubectl(
        "apply",
        "--dry-run=server",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        input=rendered,
    )
    # kubectl reports one line per object; every one was accepted.
    accepted = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert len(accepted) == len(objects), result.stdout


# -- a real install ---------------------------------------------------------------------------


def _operator_supports_address_options() -> bool:
    """Two replicas on one host need the metrics/health listeners bound to the pod IP."""
    out = subprocess.run(
        [str(REPO_ROOT / ".venv/bin/tierwise"), "operator", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "--metrics-address" in out and "--health-address" in out


@pytest.fixture
def webhook_secret(kubectl: Kubectl, namespace: str, tmp_path: Path) -> str:
    """A TLS Secret for the webhook Service (the chart's `secret` mode); returns the caBundle."""
    ca = CertificateAuthority.create(tmp_path / "ca", common_name="tierwise-test-webhook-ca")
    service = f"tw-tierwise-webhook.{namespace}.svc"
    pair = ca.issue(tmp_path, "tls", "tierwise-webhook", server_hosts=[service], client=False)
    files = (("tls.crt", pair.cert), ("tls.key", pair.key), ("ca.crt", ca.paths.cert))
    kubectl(
        "create",
        "secret",
        "generic",
        "webhook-tls",
        *[f"--from-file={key}={path}" for key, path in files],
        namespace=namespace,
    )
    return base64.b64encode(ca.paths.cert.read_bytes()).decode()


@pytest.fixture
def app_namespace(kubectl: Kubectl, namespace: str) -> Iterator[str]:
    """Where the application and its Tierwise objects live (the release has its own)."""
    name = f"{namespace[:50]}-app"
    kubectl("create", "namespace", name)
    _wait(
        lambda: not kubectl("get", "sa", "default", namespace=name, check=False).returncode,
        30,
        "the default ServiceAccount",
    )
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def release(
    helm: Helm,
    kubectl: Kubectl,
    namespace: str,
    app_namespace: str,
    pod_runner: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[dict[str, Any]]:
    tls_mode, chart = request.param, str(CHART)
    if tls_mode == "packaged":
        # The chart as users get it: `helm package`, then the .tgz is installed.
        tls_mode, chart = "selfSigned", _package(helm, tmp_path)
    # Pods share the host's network here: two operators can run side by side only when they
    # bind their pod IPs, which needs the --metrics-address/--health-address options.
    side_by_side = _operator_supports_address_options()
    replicas = 2 if side_by_side else 1
    strategy = {"type": "RollingUpdate"} if side_by_side else {"type": "Recreate"}
    values = {
        "fullnameOverride": "tw-tierwise",
        "operator": {
            "replicas": replicas,
            "strategy": strategy,
            "watchNamespaces": [app_namespace],
            "listenAddress": "podIP",
            "resyncSeconds": 5,
            "podLabels": {"tierwise.dev/local-run": "true"},
            "ports": {"metrics": _free_port(), "health": _free_port(), "webhook": _free_port()},
        },
        "sidecar": {"resources": SIDECAR_RESOURCES},
        "webhook": {
            # Only this test's namespace: the control plane is shared with other tests.
            "namespaceSelectorExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [app_namespace]}
            ],
            "tls": {"mode": tls_mode},
        },
    }
    if tls_mode == "secret":
        bundle = request.getfixturevalue("webhook_secret")
        values["webhook"]["tls"]["secret"] = {"name": "webhook-tls", "caBundle": bundle}
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    installed = helm(
        "install",
        "tw",
        chart,
        "-n",
        namespace,
        "-f",
        str(values_file),
        "--wait",
        "--timeout",
        "180s",
    )
    try:
        yield {
            "namespace": namespace,
            "app_namespace": app_namespace,
            "replicas": replicas,
            "values_file": values_file,
            "chart": chart,
            "install_stderr": installed.stderr,
        }
    finally:
        # What happened, for a failing test's report: objects, events, operator logs.
        print(
            kubectl("get", "deploy,rs,pods", "-o", "wide", namespace=namespace, check=False).stdout
        )
        print(kubectl("get", "events", namespace=namespace, check=False).stdout[-3000:])
        for outcome_dir in sorted((pod_runner.workdir / "pods" / namespace).glob("tw-tierwise-*")):
            for log_file in sorted(outcome_dir.glob("logs/*.log")):
                print(
                    f"--- {log_file.relative_to(pod_runner.workdir)}\n{log_file.read_text()[-4000:]}"
                )
        helm("uninstall", "tw", "-n", namespace, "--wait", "--timeout", "120s", check=False)


def _package(helm: Helm, directory: Path) -> str:
    """`helm package` of the chart; quiet (no symlinks to report), one .tgz holding the CRDs."""
    packaged = helm("package", str(CHART), "--destination", str(directory))
    assert packaged.stderr == ""
    [archive] = directory.glob("tierwise-*.tgz")
    with tarfile.open(archive) as tgz:
        members = tgz.getmembers()
    names = {m.name for m in members}
    assert {f"tierwise/crds/{p.name}" for p in (CHART / "crds").glob("*.yaml")} <= names
    assert not [m.name for m in members if m.issym()]
    return str(archive)


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _ready(kubectl: Kubectl, namespace: str, kind: str, name: str) -> bool:
    obj = kubectl.get_json(kind, name, namespace=namespace)
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _injected_pod(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    """Create an app pod until the webhook answers (it may still be starting), then return it."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "inbox", "labels": {"app": "support-inbox"}},
        "spec": {"containers": [{"name": "app", "image": "example.com/support-inbox:1"}]},
    }

    def create() -> dict[str, Any] | None:
        kubectl("delete", "pod", "inbox", "--ignore-not-found", "--wait=false", namespace=namespace)
        # With failurePolicy Fail, a webhook that does not answer yet refuses the pod.
        if kubectl.apply(json.dumps(pod), namespace=namespace, check=False).returncode:
            return None
        created = kubectl.get_json("pod", "inbox", namespace=namespace)
        init = created["spec"].get("initContainers") or []
        return created if any(c["name"] == "tierwise-router" for c in init) else None

    return _wait(create, 60, "the chart's webhook to inject the router")


@pytest.mark.parametrize("release", ["selfSigned", "secret"], indirect=True)
def test_helm_install_upgrade_uninstall(
    release: dict[str, Any], helm: Helm, kubectl: Kubectl, pod_runner: Any
) -> None:
    namespace, replicas = release["namespace"], release["replicas"]
    app_namespace = release["app_namespace"]
    deployment = kubectl.get_json("deployment", "tw-tierwise", namespace=namespace)
    assert deployment["status"]["availableReplicas"] == replicas
    pods = kubectl.get_json("pods", "-l", "app.kubernetes.io/name=tierwise", namespace=namespace)
    assert [p["status"]["phase"] for p in pods["items"]] == ["Running"] * replicas
    assert len({p["status"]["podIP"] for p in pods["items"]}) == replicas

    # The operator, running under the chart's ServiceAccount and ClusterRole, reconciles.
    for manifest in ("tiers.yaml", "cache-profile.yaml", "policy.yaml"):
        kubectl.apply((EXAMPLES / manifest).read_text(), namespace=app_namespace)
    _wait(
        lambda: _ready(kubectl, app_namespace, "cascadepolicy", "email-triage"), 90, "policy Ready"
    )
    assert kubectl.get_json("configmap", "tierwise-email-triage", namespace=app_namespace)

    # The API server calls the chart's webhook through its Service, and it injects the router.
    kubectl("label", "namespace", app_namespace, "tierwise.dev/injection=enabled")
    # The release namespace is never sent to the webhook, even when opted in.
    kubectl("label", "namespace", namespace, "tierwise.dev/injection=enabled")
    pod = _injected_pod(kubectl, app_namespace)
    assert pod["metadata"]["annotations"]["tierwise.dev/injected-by"]
    # selfSigned: the operator put its CA into the chart's registration (secret: the chart did).
    live = kubectl.get_json("mutatingwebhookconfiguration", "tw-tierwise")
    assert base64.b64decode(live["webhooks"][0]["clientConfig"]["caBundle"]).startswith(
        b"-----BEGIN CERTIFICATE-----"
    )
    (router,) = [c for c in pod["spec"]["initContainers"] if c["name"] == "tierwise-router"]
    assert router["resources"] == SIDECAR_RESOURCES  # the chart's sidecar values reach pods
    app = pod["spec"]["containers"][0]
    assert {"name": "ANTHROPIC_BASE_URL", "value": "http://127.0.0.1:8787"} in app["env"]
    listing = kubectl("get", "tierwise", "-A").stdout
    print(f"\n$ kubectl get tierwise -A\n{listing}")
    assert "email-triage" in listing

    # Upgrade with changed values: the registration and the Deployment follow.
    old_pods = {p["metadata"]["name"] for p in pods["items"]}
    helm(
        "upgrade",
        "tw",
        str(CHART),
        "-n",
        namespace,
        "-f",
        str(release["values_file"]),
        "--set",
        "webhook.failurePolicy=Fail",
        "--set",
        "operator.resyncSeconds=7",
        "--wait",
        "--timeout",
        "180s",
    )
    webhook = kubectl.get_json("mutatingwebhookconfiguration", "tw-tierwise")
    assert webhook["webhooks"][0]["failurePolicy"] == "Fail"
    args = kubectl.get_json("deployment", "tw-tierwise", namespace=namespace)["spec"]["template"][
        "spec"
    ]["containers"][0]["args"]
    assert "--resync-seconds=7" in args

    def rolled() -> bool:
        current = kubectl.get_json(
            "pods", "-l", "app.kubernetes.io/name=tierwise", namespace=namespace
        )["items"]
        names = {p["metadata"]["name"] for p in current}
        running = [p for p in current if p["status"].get("phase") == "Running"]
        return not (names & old_pods) and len(running) == replicas

    _wait(rolled, 120, "the upgraded operator pods to replace the old ones")
    kubectl("delete", "pod", "inbox", namespace=app_namespace)
    assert _injected_pod(kubectl, app_namespace)  # the new pods serve the webhook too

    # Uninstall: the operator and its registration go; CRDs and user objects stay.
    helm("uninstall", "tw", "-n", namespace, "--wait", "--timeout", "120s")
    assert kubectl("get", "mutatingwebhookconfiguration", "tw-tierwise", check=False).returncode
    assert kubectl("get", "deployment", "tw-tierwise", namespace=namespace, check=False).returncode
    assert kubectl("get", "clusterrole", "tw-tierwise-operator", check=False).returncode
    for crd in ("modeltiers", "cacheprofiles", "cascadepolicies"):
        kubectl("get", "crd", f"{crd}.tierwise.dev")
    kubectl("get", "cascadepolicy", "email-triage", namespace=app_namespace)
    kubectl("get", "configmap", "tierwise-email-triage", namespace=app_namespace)
    _wait(
        lambda: (
            not kubectl.get_json(
                "pods", "-l", "app.kubernetes.io/name=tierwise", namespace=namespace
            )["items"]
        ),
        60,
        "the operator pods to go",
    )


@pytest.mark.parametrize("release", ["packaged"], indirect=True)
def test_point9_and_7_the_packaged_chart_installs_quietly_injects_and_uninstalls_clean(
    release: dict[str, Any], kubectl: Kubectl, helm: Helm
) -> None:
    assert release["chart"].endswith(".tgz")
    assert release["install_stderr"] == ""  # helm install of the package says nothing on stderr
    assert release["replicas"] == 2
    namespace, app_namespace = release["namespace"], release["app_namespace"]
    deployment = kubectl.get_json("deployment", "tw-tierwise", namespace=namespace)
    assert deployment["status"]["availableReplicas"] == 2
    for manifest in ("tiers.yaml", "cache-profile.yaml", "policy.yaml"):
        kubectl.apply((EXAMPLES / manifest).read_text(), namespace=app_namespace)
    _wait(
        lambda: _ready(kubectl, app_namespace, "cascadepolicy", "email-triage"), 90, "policy Ready"
    )
    kubectl("label", "namespace", app_namespace, "tierwise.dev/injection=enabled")
    pod = _injected_pod(kubectl, app_namespace)
    assert pod["metadata"]["annotations"]["tierwise.dev/injected-by"] == "email-triage"
    (router,) = [c for c in pod["spec"]["initContainers"] if c["name"] == "tierwise-router"]
    assert router["resources"] == SIDECAR_RESOURCES

    # -- point 7: uninstall leaves nothing running -----------------------------------------
    # A gated change starts an eval Job (no node runs its pod here: it stays running).
    kubectl.apply((EXAMPLES / "dataset-configmap.yaml").read_text(), namespace=app_namespace)
    kubectl(
        "patch",
        "cascadepolicy",
        "email-triage",
        "--type=json",
        "-p",
        json.dumps(
            [{"op": "replace", "path": THRESHOLD_PATH, "value": 0.7}],
        ),
        namespace=app_namespace,
    )
    eval_jobs = "app.kubernetes.io/component=eval"
    _wait(
        lambda: kubectl.get_json("jobs", "-l", eval_jobs, namespace=app_namespace)["items"],
        90,
        "an eval Job",
    )
    kubectl("get", "serviceaccount", "tierwise-eval", namespace=app_namespace)
    uninstalled = helm("uninstall", "tw", "-n", namespace, "--wait", "--timeout", "120s")
    assert uninstalled.stderr == ""
    # The post-delete hook deleted the eval Jobs (their pods with them) and the eval
    # ServiceAccount; it deleted itself and its RBAC once done.
    assert kubectl.get_json("jobs", "-l", eval_jobs, namespace=app_namespace)["items"] == []
    assert kubectl(
        "get", "serviceaccount", "tierwise-eval", namespace=app_namespace, check=False
    ).returncode
    assert kubectl.get_json("jobs", namespace=namespace)["items"] == []
    assert kubectl("get", "clusterrole", "tw-tierwise-cleanup", check=False).returncode
    # What stays: the CRDs, the user's objects, the policy's own ConfigMap.
    kubectl("get", "crd", "cascadepolicies.tierwise.dev")
    kubectl("get", "cascadepolicy", "email-triage", namespace=app_namespace)
    kubectl("get", "modeltier", "haiku", namespace=app_namespace)
    kubectl("get", "configmap", "tierwise-email-triage", namespace=app_namespace)
