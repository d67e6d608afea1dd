"""The dashboard and the alerts name only metrics that Tierwise really exports, and the rules
pass `promtool check rules` (promtool built from the Go module proxy, cached).

The metric names come from scraping real processes: a router serving requests through the
real SDK against the emulator, and an operator reconciling the examples on the control plane.
So a renamed metric fails here, not on a platform team's empty dashboard.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
import yaml
from chart_render import CHART, REPO_ROOT, by_kind, rendered
from prometheus_client.parser import text_string_to_metric_families

from harness.kubectl import Kubectl
from tierwise.routerconfig.digest import content_hash

EXAMPLES = REPO_ROOT / "examples" / "support-triage"
TIERWISE = str(Path(sys.executable).parent / "tierwise")
METRIC = re.compile(r"\b(tierwise_[a-z0-9_]+)")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _spawn(args: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )


def _stop(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def exported_names(exposition: str) -> set[str]:
    """Every series name a scrape of this exposition can return, samples or not."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


@pytest.fixture(scope="module")
def router_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A router with the example policy, after real SDK traffic (both routes, one cached)."""
    tmp = tmp_path_factory.mktemp("router")
    emulator_port, api_port, metrics_port = _free_port(), _free_port(), _free_port()
    doc = json.loads(
        subprocess.run(
            [TIERWISE, "render", "-f", str(EXAMPLES)], capture_output=True, text=True, check=True
        ).stdout
    )
    for tier in doc["tiers"].values():
        tier["endpoint"] = f"http://127.0.0.1:{emulator_port}"
    doc["hash"] = content_hash(doc)
    config = tmp / "router.json"
    config.write_text(json.dumps(doc))
    keys = {t["apiKeyEnv"]: "tier-key" for t in doc["tiers"].values()}
    emulator = _spawn(
        [TIERWISE, "emulator", "--port", str(emulator_port), "--zero-latency"], tmp / "emu.log"
    )
    router = _spawn(
        [
            TIERWISE,
            "router",
            "--config",
            str(config),
            "--port",
            str(api_port),
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(metrics_port),
        ],
        tmp / "router.log",
        **keys,
    )
    try:
        _get(f"http://127.0.0.1:{metrics_port}/readyz")
        client = anthropic.Anthropic(
            base_url=f"http://127.0.0.1:{api_port}", api_key="client", max_retries=2
        )
        for model in ("tierwise/triage", "tierwise/chat", "tierwise/chat"):
            client.messages.create(
                model=model,
                max_tokens=64,
                messages=[{"role": "user", "content": "My invoice is wrong, please help."}],
            )
        with client.messages.stream(
            model="tierwise/chat",
            max_tokens=64,
            messages=[{"role": "user", "content": "Stream a short greeting."}],
        ) as stream:
            stream.until_done()
        yield _get(f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        _stop(router, emulator)


@pytest.fixture(scope="module")
def operator_metrics(
    controlplane: Any, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An operator that reconciled the examples in a namespace of its own."""
    tmp = tmp_path_factory.mktemp("operator")
    namespace = f"t-monitoring-{os.getpid()}"
    kubectl("create", "namespace", namespace)
    port = _free_port()
    operator = _spawn(
        [
            TIERWISE,
            "operator",
            "--standalone",
            "--namespace",
            namespace,
            "--metrics-address",
            "127.0.0.1",
            "--metrics-port",
            str(port),
            "--health-port",
            "0",
            "--webhook-port",
            "0",
        ],
        tmp / "operator.log",
        KUBECONFIG=str(controlplane.kubeconfig),
    )
    try:
        for manifest in ("tiers.yaml", "cache-profile.yaml", "policy.yaml"):
            kubectl.apply((EXAMPLES / manifest).read_text(), namespace=namespace)
        deadline = time.monotonic() + 60
        while "tierwise_operator_config_writes_total 1.0" not in (
            text := _get(f"http://127.0.0.1:{port}/metrics")
        ):
            assert time.monotonic() < deadline, (tmp / "operator.log").read_text()[-3000:]
            time.sleep(0.5)
        yield text
    finally:
        _stop(operator)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _dashboard() -> dict[str, Any]:
    return json.loads((CHART / "files" / "dashboard.json").read_text())


def _dashboard_queries() -> list[str]:
    dashboard = _dashboard()
    queries = []
    for panel in dashboard["panels"]:
        queries += [t["expr"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if isinstance(variable.get("query"), dict):
            queries.append(variable["query"]["query"])
    return queries


def _rules() -> dict[str, Any]:
    docs = rendered("--set", "metrics.prometheusRule.enabled=true", monitoring=True)
    (rule,) = by_kind(docs, "PrometheusRule")
    return rule["spec"]


def _rule_queries() -> list[str]:
    return [r["expr"] for group in _rules()["groups"] for r in group["rules"]]


def test_dashboard_and_rules_name_only_exported_metrics(
    router_metrics: str, operator_metrics: str
) -> None:
    exported = exported_names(router_metrics) | exported_names(operator_metrics)
    named = {m for q in _dashboard_queries() + _rule_queries() for m in METRIC.findall(q)}
    assert len(named) >= 15, named
    missing = sorted(named - exported)
    assert not missing, f"named by the dashboard or alerts but not exported: {missing}"


def test_dashboard_covers_what_platform_teams_watch() -> None:
    titles = " ".join(p["title"].lower() for p in _dashboard()["panels"])
    for topic in (
        "spend",
        "counterfactual",
        "saving",
        "escalation",
        "prompt-cache",
        "response-cache",
        "latency",
        "first token",
        "retries",
        "fallbacks",
        "error",
        "reloads",
        "eval",
        "budgets",
    ):
        assert topic in titles, topic
    panel_ids = [p["id"] for p in _dashboard()["panels"]]
    assert len(panel_ids) == len(set(panel_ids))


def test_alerts_have_runbooks_and_pass_promtool(tmp_path: Path) -> None:
    spec = _rules()
    alerts = {r["alert"]: r for group in spec["groups"] for r in group["rules"]}
    assert {
        "TierwiseSavingNegative",
        "TierwiseEscalationSpike",
        "TierwiseErrorRate",
        "TierwiseConfigReloadFailing",
        "TierwiseSidecarStaleConfig",
        "TierwiseEvalRejected",
        "TierwiseBudgetDegrading",
        "TierwiseBudgetRejecting",
    } <= alerts.keys()
    for name, rule in alerts.items():
        assert len(rule["annotations"]["runbook"].splitlines()) >= 2, name
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(spec))
    promtool = subprocess.run(
        [str(REPO_ROOT / "hack/install-promtool.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts)} rules found" in result.stdout


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check can fail: a rule with a PromQL syntax error is refused."""
    spec = _rules()
    spec["groups"][0]["rules"][0]["expr"] = (
        "sum by (route) (rate(tierwise_router_cost_usd_total[1h]"
    )
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(spec))
    promtool = subprocess.run(
        [str(REPO_ROOT / "hack/install-promtool.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True
    )
    assert result.returncode != 0
