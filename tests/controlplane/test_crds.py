"""The CRDs in crds/ against the real API server: install, examples, validation, columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.kubectl import Kubectl

pytestmark = pytest.mark.controlplane

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"
INVALID = [
    case
    for case in yaml.safe_load((REPO_ROOT / "tests/data/invalid_resources.yaml").read_text())
    if not case.get("operatorOnly")
]
NOISE = "some validation rules were not checked"
# Files of Tierwise resources (examples/gitops holds Argo CD objects, tested in tests/argocd).
EXAMPLES = sorted(
    p
    for p in (REPO_ROOT / "examples").glob("*/*.yaml")
    if all(
        str(d.get("apiVersion", "")).startswith("tierwise.dev/")
        for d in yaml.safe_load_all(p.read_text())
        if d
    )
)
KINDS = {"cascadepolicies", "modeltiers", "cacheprofiles"}


def test_crds_are_established(kubectl: Kubectl) -> None:
    crds = kubectl.get_json("crd")["items"]
    ours = {c["metadata"]["name"]: c for c in crds if c["spec"]["group"] == "tierwise.dev"}
    assert {f"{k}.tierwise.dev" for k in KINDS} <= set(ours)
    assert len(ours) == len(list(CRD_DIR.glob("*.yaml")))
    for crd in ours.values():
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True"
        assert conditions["NamesAccepted"] == "True"


def test_kubectl_get_tierwise_category(kubectl: Kubectl, namespace: str) -> None:
    result = kubectl("get", "tierwise", namespace=namespace)
    assert result.returncode == 0
    assert "No resources found" in result.stderr


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_examples_are_accepted(kubectl: Kubectl, namespace: str, path: Path) -> None:
    kubectl("create", "--dry-run=server", "-f", str(path), namespace=namespace)


def test_examples_show_printer_columns(kubectl: Kubectl, namespace: str) -> None:
    for path in EXAMPLES:
        kubectl.apply(path, namespace=namespace)
    headers = kubectl("get", "modeltiers", namespace=namespace).stdout.splitlines()[0].split()
    assert headers[:2] == ["NAME", "MODEL"]
    listing = kubectl("get", "tierwise", namespace=namespace).stdout
    for kind in ("modeltier.tierwise.dev/", "cascadepolicy.tierwise.dev/"):
        assert kind in listing
    tiers = kubectl("get", "mt", "-o", "name", namespace=namespace).stdout.split()
    assert len(tiers) >= 2


def _manifest(case: dict[str, Any], index: int) -> dict[str, Any]:
    manifest = {"apiVersion": "tierwise.dev/v1alpha1", **case["manifest"]}
    manifest.setdefault("metadata", {"name": f"invalid-{index}"})
    return manifest


def test_invalid_table_is_large_enough() -> None:
    assert len(INVALID) >= 10


@pytest.mark.parametrize(
    ("index", "case"), list(enumerate(INVALID)), ids=[c["name"] for c in INVALID]
)
def test_invalid_resources_are_rejected_with_a_readable_message(
    kubectl: Kubectl, namespace: str, index: int, case: dict[str, Any]
) -> None:
    result = kubectl(
        "create",
        "--dry-run=server",
        "-f",
        "-",
        input=json.dumps(_manifest(case, index)),
        namespace=namespace,
        check=False,
    )
    assert result.returncode != 0, f"accepted: {case['name']}"
    assert "is invalid" in result.stderr, result.stderr
    assert case["message"] in result.stderr, result.stderr
    if not case.get("schemaError"):
        # Mistakes in values are refused by CEL, not by enum/required schema keywords, so the
        # API server does not add its "rules were not checked" line to the real message.
        assert NOISE not in result.stderr, result.stderr
