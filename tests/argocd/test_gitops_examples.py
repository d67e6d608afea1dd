"""examples/gitops: the Argo CD Applications and the argocd-cm snippet agree with the repo."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from lua_health import CUSTOMIZATIONS, KINDS, REPO_ROOT, health

GITOPS = REPO_ROOT / "examples" / "gitops"


def _load(name: str) -> dict:
    return yaml.safe_load((GITOPS / name).read_text())


def _wave(obj: dict) -> int:
    return int(obj["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))


def test_argocd_cm_carries_the_health_checks_verbatim() -> None:
    data = _load("argocd-cm.yaml")["data"]
    for kind in KINDS:
        script = (CUSTOMIZATIONS / kind / "health.lua").read_text()
        assert data[f"resource.customizations.health.tierwise.dev_{kind}"] == script, kind


def test_application_health_check_reads_the_application_status(tmp_path: Path) -> None:
    script = tmp_path / "health.lua"
    script.write_text(
        _load("argocd-cm.yaml")["data"]["resource.customizations.health.argoproj.io_Application"]
    )
    app = {"kind": "Application", "metadata": {"name": "tierwise"}}
    assert health(script, app)["status"] == "Progressing"
    app["status"] = {"health": {"status": "Healthy"}}
    assert health(script, app)["status"] == "Healthy"


def test_sync_waves_order_crds_then_tiers_and_profiles_then_policies() -> None:
    chart_app, policies_app = _load("tierwise.yaml"), _load("support-triage.yaml")
    assert _wave(chart_app) < _wave(policies_app)
    source = policies_app["spec"]["source"]
    directory = REPO_ROOT / source["path"]
    names = source["directory"]["include"].strip("{}").split(",")
    objects = [o for n in names for o in yaml.safe_load_all((directory / n).read_text()) if o]
    waves = {o["kind"]: set() for o in objects}
    for obj in objects:
        waves[obj["kind"]].add(_wave(obj))
    assert max(waves["ModelTier"] | waves["CacheProfile"]) < min(waves["CascadePolicy"])
    assert set(waves) == {"ModelTier", "CacheProfile", "CascadePolicy"}
    assert (
        policies_app["spec"]["syncPolicy"]["managedNamespaceMetadata"]["labels"][
            "tierwise.dev/injection"
        ]
        == "enabled"
    )


def test_ignore_differences_only_the_self_managed_ca_bundle() -> None:
    chart_app = _load("tierwise.yaml")
    (entry,) = chart_app["spec"]["ignoreDifferences"]
    assert entry["kind"] == "MutatingWebhookConfiguration"
    assert entry["jqPathExpressions"] == [".webhooks[]?.clientConfig.caBundle"]
    assert "ignoreDifferences" not in _load("support-triage.yaml")["spec"]
    # The name is the one the chart renders for this release.
    helm = REPO_ROOT / ".venv" / "bin" / "helm"
    source = chart_app["spec"]["source"]
    out = subprocess.run(
        [
            str(helm),
            "template",
            source["helm"]["releaseName"],
            str(REPO_ROOT / source["path"]),
            "--namespace",
            chart_app["spec"]["destination"]["namespace"],
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    hooks = [
        d for d in yaml.safe_load_all(out) if d and d["kind"] == "MutatingWebhookConfiguration"
    ]
    assert [h["metadata"]["name"] for h in hooks] == [entry["name"]]
    assert "caBundle" not in hooks[0]["webhooks"][0]["clientConfig"]
