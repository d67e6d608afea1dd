"""Render the chart with the real helm binary (named uniquely: test directories are not packages)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "tierwise"
HERE = Path(__file__).resolve().parent
FULL_VALUES = HERE / "values-full.yaml"
GOLDEN = HERE / "golden"
RELEASE = "tw"
NAMESPACE = "tierwise-system"
KUBE_VERSION = "1.36.5"
MONITORING_API = "monitoring.coreos.com/v1"


def helm_binary() -> str:
    path = REPO_ROOT / ".venv" / "bin" / "helm"
    if not path.exists():
        subprocess.run([str(REPO_ROOT / "hack/install-helm.sh")], check=True)
    return str(path)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELM_CACHE_HOME": str(REPO_ROOT / ".tmp/helm/cache")}
    env.setdefault("HELM_CONFIG_HOME", str(REPO_ROOT / ".tmp/helm/config"))
    env.setdefault("HELM_DATA_HOME", str(REPO_ROOT / ".tmp/helm/data"))
    result = subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, check=False, env=env
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def template(
    *args: str, monitoring: bool = False, check: bool = True
) -> subprocess.CompletedProcess[str]:
    extra = ["--api-versions", MONITORING_API] if monitoring else []
    return helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        *extra,
        *args,
        check=check,
    )


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def rendered(*args: str, monitoring: bool = False) -> list[dict[str, Any]]:
    return documents(template(*args, monitoring=monitoring).stdout)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]
