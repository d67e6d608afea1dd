"""What makes Argo CD apps drift, checked on the real control plane with the real operator.

The objects of examples/gitops/support-triage.yaml are applied the way Argo CD applies them
(server-side apply, its own field manager). Then: their spec, labels and annotations are
exactly what git says; every other writer touched only the status subresource; and once the
operator has reconciled, it writes nothing at all while idle (no resourceVersion moves across
several resync periods). Argo CD's health checks read the live objects as Healthy.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_process import eventually

from harness.kubectl import Kubectl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "argocd"))
from lua_health import CUSTOMIZATIONS, health  # noqa: E402

pytestmark = pytest.mark.timeout(180)
ARGOCD_MANAGER = "argocd-controller"
RESYNC_SECONDS = 2  # OperatorProcess runs the operator with --resync-seconds=2
KINDS = {"ModelTier": "modeltier", "CacheProfile": "cacheprofile", "CascadePolicy": "cascadepolicy"}


def _git_objects() -> list[dict[str, Any]]:
    app = yaml.safe_load((ROOT / "examples/gitops/support-triage.yaml").read_text())
    source = app["spec"]["source"]
    names = source["directory"]["include"].strip("{}").split(",")
    return [
        obj
        for name in names
        for obj in yaml.safe_load_all((ROOT / source["path"] / name).read_text())
        if obj
    ]


def _contains(live: Any, desired: Any) -> bool:
    """Every field git sets has git's value (the API server may add defaults around it)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            k in live and _contains(live[k], v) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(_contains(a, b) for a, b in zip(live, desired, strict=True))
        )
    return live == desired


def _versions(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    listing = kubectl.get_json(
        "modeltiers,cacheprofiles,cascadepolicies,configmaps", namespace=namespace
    )
    return {
        f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
        for o in listing["items"]
    }


def test_applied_objects_do_not_drift_and_the_idle_operator_writes_nothing(
    operator, kubectl: Kubectl, namespace: str
) -> None:
    git = _git_objects()
    for obj in git:
        kubectl(
            "apply",
            "--server-side",
            f"--field-manager={ARGOCD_MANAGER}",
            "-f",
            "-",
            input=json.dumps(obj),
            namespace=namespace,
        )

    def all_ready() -> bool:
        for kind in KINDS.values():
            for obj in kubectl.get_json(kind, namespace=namespace)["items"]:
                conditions = (obj.get("status") or {}).get("conditions") or []
                if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                    return False
        return True

    eventually(all_ready, "every object Ready", timeout=60)

    for desired in git:
        meta = desired["metadata"]
        live = kubectl.get_json(
            KINDS[desired["kind"]], meta["name"], "--show-managed-fields", namespace=namespace
        )
        what = f"{desired['kind']}/{meta['name']}"
        assert live["metadata"]["generation"] == 1, f"{what}: spec was written"
        assert _contains(live["spec"], desired["spec"]), f"{what}: spec differs from git"
        assert live["metadata"].get("labels", {}) == meta.get("labels", {}), what
        assert live["metadata"].get("annotations", {}) == meta.get("annotations", {}), what
        assert not live["metadata"].get("finalizers"), what
        # Whoever else wrote to the object wrote its status subresource, and only that.
        for entry in live["metadata"]["managedFields"]:
            if entry["manager"] != ARGOCD_MANAGER:
                assert entry.get("subresource") == "status", f"{what}: {entry['manager']}"
        # Argo CD's health check on the live object.
        verdict = health(CUSTOMIZATIONS / desired["kind"] / "health.lua", live)
        assert verdict["status"] == "Healthy", (what, verdict)

    # The rendered ConfigMap is a child of the policy (shown under it, never pruned by Argo CD).
    (policy,) = [o for o in git if o["kind"] == "CascadePolicy"]
    config_map = kubectl.get_json(
        "configmap", f"tierwise-{policy['metadata']['name']}", namespace=namespace
    )
    (owner,) = config_map["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == (
        "CascadePolicy",
        policy["metadata"]["name"],
        True,
    )

    # Idle: several resync periods pass and not one object changes.
    before = _versions(kubectl, namespace)
    time.sleep(3 * RESYNC_SECONDS + 1)
    assert _versions(kubectl, namespace) == before


def test_health_check_testdata_are_objects_the_api_server_accepts(
    kubectl: Kubectl, namespace: str
) -> None:
    """The Argo CD fixtures describe real objects: their specs pass the CRDs' validation,
    except those whose status reports InvalidSpec (objects stored before a schema tightened,
    the only way the operator can see one), which the API server must refuse today."""
    files = sorted(CUSTOMIZATIONS.glob("*/testdata/*.yaml"))
    assert len(files) >= 10
    for path in files:
        obj = yaml.safe_load(path.read_text())
        manifest = {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "metadata": {"name": obj["metadata"]["name"]},
            "spec": obj["spec"],
        }
        result = kubectl(
            "apply",
            "--dry-run=server",
            "-f",
            "-",
            input=json.dumps(manifest),
            namespace=namespace,
            check=False,
        )
        conditions = (obj.get("status") or {}).get("conditions") or []
        invalid = any(c.get("reason") == "InvalidSpec" for c in conditions)
        assert (result.returncode != 0) == invalid, f"{path.relative_to(ROOT)}: {result.stderr}"
