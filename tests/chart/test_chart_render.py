"""The chart, rendered and linted by the real helm: golden files, single sources, schema."""

from __future__ import annotations

import base64
import json
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


def test_point9_chart_files_are_real_files_equal_to_their_sources() -> None:
    """The chart holds copies, not links (helm logs a line per link and a package needs the
    content): every top-level CRD, the peering CRD and the operator's ClusterRole, byte for
    byte as their sources (`make chart-files` copies them)."""
    sources = {
        **{f"crds/{p.name}": p for p in (REPO_ROOT / "crds").glob("*.yaml")},
        "crds/kopf.dev_peerings.yaml": REPO_ROOT / "config/peering/crds.yaml",
        "files/operator-clusterrole.yaml": REPO_ROOT / "config/rbac/operator-clusterrole.yaml",
    }
    chart = {str(p.relative_to(CHART)): p for p in (CHART / "crds").glob("*.yaml")}
    assert set(chart) == {k for k in sources if k.startswith("crds/")}
    links = [str(p) for p in CHART.rglob("*") if p.is_symlink()]
    assert links == [], "symlinks in the chart; run `make chart-files`"
    for name, source in sources.items():
        assert (CHART / name).read_bytes() == source.read_bytes(), (
            f"{name} differs from {source.relative_to(REPO_ROOT)}; run `make chart-files`"
        )


def test_point9_helm_template_writes_nothing_on_stderr() -> None:
    result = helm("template", "tw", str(CHART), "--namespace", "tierwise-system")
    assert result.stderr == ""
    assert "kind: Deployment" in result.stdout


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


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"sidecar": {"resources": {"requests": {"cpu": "abc"}}}},
            "/sidecar/resources/requests/cpu",
        ),
        ({"sidecar": {"resources": {"limits": {"memory": "1 Gi"}}}}, "/sidecar/resources/limits"),
        ({"sidecar": {"resources": {"limits": {"bad name": "1"}}}}, "/sidecar/resources/limits"),
        ({"evals": {"podLabels": {"bad key": "x"}}}, "/evals/podLabels"),
        ({"evals": {"podLabels": {"mesh": "not a value"}}}, "/evals/podLabels/mesh"),
        ({"evals": {"image": "repo/image: tag"}}, "/evals/image"),
        ({"sidecar": {"image": {"tag": "v1 "}}}, "/sidecar/image/tag"),
    ],
)
def test_point4_values_that_reach_created_objects_are_checked_by_the_schema(
    values: dict, message: str, tmp_path
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = template("-f", str(path), check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_point4_valid_sidecar_resources_reach_the_operator_flag() -> None:
    resources = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}
    out = template("--set-json", f"sidecar.resources={json.dumps(resources)}").stdout
    [deployment] = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment"]
    [args] = [c["args"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    [flag] = [a for a in args if a.startswith("--router-resources=")]
    assert json.loads(flag.partition("=")[2]) == resources


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


def test_point8_operator_docs_describe_each_failure_policy_the_chart_offers() -> None:
    """docs/operator.md names every failurePolicy the chart accepts, says what each does when
    the operator is down, and names the chart's default as the default."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    offered = schema["properties"]["webhook"]["properties"]["failurePolicy"]["enum"]
    default = yaml.safe_load((CHART / "values.yaml").read_text())["webhook"]["failurePolicy"]
    docs = (REPO_ROOT / "docs/operator.md").read_text()
    section = docs.split("### When the operator is down")[1].split("\n### ")[0]
    assert sorted(offered) == ["Fail", "Ignore"]
    for policy in offered:
        assert f"- `failurePolicy: {policy}`" in section, policy
    assert f"`webhook.failurePolicy`, default `{default}`" in section
    assert "refuses **every** pod creation in an" in section  # what Fail does
    assert "created **without** the sidecar" in section  # what Ignore does
