"""The chart, rendered and linted by the real helm: golden files, single sources, schema."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest
import yaml
from chart_render import (
    CHART,
    FULL_VALUES,
    GOLDEN,
    REPO_ROOT,
    by_kind,
    helm,
    rendered,
    template,
)

GOLDEN_CASES = {
    "default": [],
    "full": ["-f", str(FULL_VALUES)],
}


@pytest.mark.parametrize("values", [[], ["-f", str(FULL_VALUES)]], ids=["default", "full"])
def test_helm_lint_strict(values: list[str]) -> None:
    result = helm("lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden_template(name: str) -> None:
    """`helm template` output is reviewed in diffs; TIERWISE_UPDATE_GOLDEN=1 rewrites it."""
    out = template(*GOLDEN_CASES[name], monitoring=True).stdout
    golden = GOLDEN / f"{name}.yaml"
    if os.environ.get("TIERWISE_UPDATE_GOLDEN") == "1":
        golden.write_text(out)
    assert golden.exists(), f"missing {golden}; run with TIERWISE_UPDATE_GOLDEN=1"
    assert out == golden.read_text(), (
        f"{golden.name} is stale: review `helm template` changes and rerun with "
        "TIERWISE_UPDATE_GOLDEN=1"
    )


def test_chart_crds_are_the_top_level_crds() -> None:
    top = {p.name: p.read_bytes() for p in (REPO_ROOT / "crds").glob("*.yaml")}
    peering = REPO_ROOT / "config/peering/crds.yaml"
    chart = {p.name: p for p in (CHART / "crds").glob("*.yaml")}
    # Links, not copies: there is one source. Every top-level CRD is in the chart.
    assert all(p.is_symlink() for p in chart.values())
    resolved = {p.resolve() for p in chart.values()}
    assert resolved == {(REPO_ROOT / "crds" / n).resolve() for n in top} | {peering.resolve()}
    for name, content in top.items():
        assert chart[name].read_bytes() == content


def test_cluster_role_rules_come_from_config_rbac() -> None:
    source = next(
        d
        for d in yaml.safe_load_all(
            (REPO_ROOT / "config/rbac/operator-clusterrole.yaml").read_text()
        )
        if d and d["metadata"]["name"] == "tierwise-operator"
    )
    roles = {r["metadata"]["name"]: r for r in by_kind(rendered(), "ClusterRole")}
    assert roles["tw-tierwise-operator"]["rules"] == source["rules"]
    # No Secrets, anywhere in the chart's RBAC.
    for role in roles.values():
        for rule in role["rules"]:
            assert "secrets" not in rule.get("resources", []), role["metadata"]["name"]


def test_values_readme_table_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "hack/chart-readme.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "operator.replica=3"], "additional properties 'replica' not allowed"),
        (["--set", "webhook.failurePolicy=ignore"], "failurePolicy"),
        (["--set", "webhook.tls.mode=manual"], "/webhook/tls/mode"),
        (["--set", "webhook.timeoutSeconds=31"], "timeoutSeconds"),
        (["--set", "image.digest=latest"], "digest"),
        (["--set-string", "operator.replicas=two"], "replicas"),
        (["--set", "webhook.tls.mode=secret"], "webhook.tls.secret.name is required"),
        (
            ["--set", "webhook.tls.mode=secret", "--set", "webhook.tls.secret.name=x"],
            "webhook.tls.secret.caBundle",
        ),
    ],
)
def test_bad_values_fail_with_a_clear_message(args: list[str], message: str) -> None:
    result = template(*args, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_defaults_are_ha_restricted_and_least_privilege() -> None:
    docs = rendered()
    (deployment,) = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert "--peering=tw-tierwise" in pod["containers"][0]["args"]
    assert pod["affinity"]["podAntiAffinity"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["image"] == "ghcr.io/tierwise/tierwise:0.1.0"
    assert by_kind(docs, "PodDisruptionBudget")[0]["spec"]["minAvailable"] == 1
    (webhook,) = by_kind(docs, "MutatingWebhookConfiguration")
    hook = webhook["webhooks"][0]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["namespaceSelector"]["matchLabels"] == {"tierwise.dev/injection": "enabled"}
    assert hook["clientConfig"]["service"]["path"] == "/inject-router"
    # Self-signed: the operator patches the caBundle of this one object, nothing more.
    roles = {r["metadata"]["name"]: r for r in by_kind(docs, "ClusterRole")}
    assert roles["tw-tierwise-webhook-ca"]["rules"] == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": ["tw-tierwise"],
            "verbs": ["get", "patch"],
        }
    ]
    # Eval Jobs run as a ServiceAccount the operator creates, with no role, per namespace.
    args = pod["containers"][0]["args"]
    assert "--eval-service-account=tierwise-eval" in args
    assert "--eval-image=ghcr.io/tierwise/tierwise:0.1.0" in args
    # Monitoring objects need their CRDs; without the API they are not rendered.
    assert not by_kind(rendered("-f", str(FULL_VALUES)), "PrometheusRule")


def test_tls_modes() -> None:
    cert_manager = rendered("--set", "webhook.tls.mode=certManager")
    (webhook,) = by_kind(cert_manager, "MutatingWebhookConfiguration")
    assert webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        "tierwise-system/tw-tierwise-webhook"
    )
    (certificate,) = by_kind(cert_manager, "Certificate")
    assert "tw-tierwise-webhook.tierwise-system.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"] == {"name": "tw-tierwise-selfsigned", "kind": "Issuer"}
    (deployment,) = by_kind(cert_manager, "Deployment")
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "webhook-certs", "secret": {"secretName": "tw-tierwise-webhook-tls"}} in volumes
    assert not [
        r for r in by_kind(cert_manager, "ClusterRole") if "webhook-ca" in r["metadata"]["name"]
    ]

    bundle = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    secret = rendered(
        "--set",
        "webhook.tls.mode=secret",
        "--set",
        "webhook.tls.secret.name=mine",
        "--set",
        f"webhook.tls.secret.caBundle={bundle}",
    )
    (webhook,) = by_kind(secret, "MutatingWebhookConfiguration")
    assert webhook["webhooks"][0]["clientConfig"]["caBundle"] == bundle
    (deployment,) = by_kind(secret, "Deployment")
    assert {"name": "webhook-certs", "secret": {"secretName": "mine"}} in deployment["spec"][
        "template"
    ]["spec"]["volumes"]


def test_single_replica_has_no_pdb_and_standalone_without_peering() -> None:
    docs = rendered("--set", "operator.replicas=1", "--set", "operator.peering.enabled=false")
    assert not by_kind(docs, "PodDisruptionBudget")
    assert not by_kind(docs, "ClusterKopfPeering")
    (deployment,) = by_kind(docs, "Deployment")
    assert "--standalone" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
