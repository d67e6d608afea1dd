"""status.budgets on the real API server: the operator reads the routers' budget figures.

A router (a real process-like thread, the policy's rendered config, the emulator upstream)
stands behind a pod of the policy: the pod object carries the sidecar's metrics port and,
written through the status subresource as a kubelet would, its IP (127.0.0.1). The operator
runs under its own ClusterRole. ``kubectl get cascadepolicy`` shows spend vs budget; a
status with unmoved spend is not written again; a crossed threshold posts an Event.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import anthropic
import pytest
import yaml
from operator_process import eventually

from harness.kubectl import Kubectl
from tierwise import API_VERSION
from tierwise.api import parse_resource
from tierwise.emulator import EmulatorConfig, EmulatorThread
from tierwise.render import render_policy, with_endpoint
from tierwise.router import RouterThread

pytestmark = pytest.mark.controlplane

APP = {"app": "budgeted"}
TIER = {
    "apiVersion": API_VERSION,
    "kind": "ModelTier",
    "metadata": {"name": "haiku"},
    "spec": {"model": "claude-haiku-4-5", "apiKeySecretRef": {"name": "anthropic", "key": "k"}},
}
POLICY = {
    "apiVersion": API_VERSION,
    "kind": "CascadePolicy",
    "metadata": {"name": "capped"},
    "spec": {
        "podSelector": {"matchLabels": APP},
        "routes": [{"name": "chat", "steps": [{"tier": "haiku"}]}],
        "budgets": [
            {
                "name": "daily",
                "limitUSD": "0.01",
                "window": {"period": "day"},
                "actions": [{"atPercent": 1, "action": "alert"}],
            }
        ],
    },
}


@pytest.fixture
def router_of_policy(namespace: str) -> Iterator[RouterThread]:
    """A router serving the policy's rendered config, in front of the emulator."""
    policy = parse_resource({**POLICY, "metadata": {"name": "capped", "namespace": namespace}})
    tier = parse_resource({**TIER, "metadata": {"name": "haiku", "namespace": namespace}})
    with EmulatorThread(EmulatorConfig(zero_latency=True)) as emu:
        result = render_policy(policy, {"haiku": tier}, {})
        assert result.config is not None, result.problems
        config = with_endpoint(result.config, emu.base_url)
        env = {key.env: "tier-key" for key in result.key_envs}
        router = RouterThread(config.to_document(), env=env).start()
        try:
            yield router
        finally:
            router.stop()


def pod(metrics_port: int) -> dict[str, Any]:
    """A pod as injection leaves it: the sidecar with its metrics port (not run here)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app-0", "labels": APP},
        "spec": {
            "initContainers": [
                {
                    "name": "tierwise-router",
                    "image": "example.com/tierwise:test",
                    "restartPolicy": "Always",
                    "ports": [{"name": "router-metrics", "containerPort": metrics_port}],
                }
            ],
            "containers": [{"name": "app", "image": "example.com/app:test"}],
        },
    }


def ask(router: RouterThread, times: int) -> Decimal:
    client = anthropic.Anthropic(base_url=router.base_url, api_key="client", max_retries=0)
    total = Decimal(0)
    for i in range(times):
        response = client.messages.with_raw_response.create(
            model="tierwise/chat",
            max_tokens=32,
            messages=[{"role": "user", "content": f"Question {i}"}],
        )
        total += Decimal(response.headers["x-tierwise-cost-usd"])
    return total


def test_kubectl_get_shows_spend_vs_budget_and_unmoved_spend_writes_nothing(
    operator, kubectl: Kubectl, namespace: str, router_of_policy: RouterThread
) -> None:
    kubectl.apply(yaml.safe_dump_all([TIER, POLICY]), namespace=namespace)
    port = urlsplit(router_of_policy.metrics_url).port
    assert port is not None
    kubectl.apply(json.dumps(pod(port)), namespace=namespace)
    running = {
        "status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}
    }
    kubectl(
        "patch",
        "pod",
        "app-0",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(running),
        namespace=namespace,
    )
    spent = ask(router_of_policy, 3)
    ask(router_of_policy, 1)  # an admission refreshes the router's figure of the first three

    def reported() -> Any:
        status = kubectl.get_json("cascadepolicy", "capped", namespace=namespace).get("status", {})
        budgets = status.get("budgets") or []
        return budgets and "spentUSD" in budgets[0] and status

    status = eventually(reported, "status.budgets from the router", timeout=60)
    [entry] = status["budgets"]
    assert Decimal(entry["spentUSD"]) == spent.quantize(Decimal("0.000001"))
    assert entry["limitUSD"] == "0.01" and entry["action"] == "Alert"
    assert entry["shared"] is False and entry["routers"] == 1  # no Redis: a local share
    table = kubectl("get", "cascadepolicy", "capped", namespace=namespace).stdout
    header, row = table.splitlines()[:2]
    assert "BUDGET" in header
    assert f"{entry['spentUSD']}/0.01 USD ({entry['percent']}, Alert)" in row

    # Nothing moves: three passes of the operator (2 s each) write nothing.
    version = kubectl.get_json("cascadepolicy", "capped", namespace=namespace)["metadata"][
        "resourceVersion"
    ]
    time.sleep(7)
    again = kubectl.get_json("cascadepolicy", "capped", namespace=namespace)
    assert again["metadata"]["resourceVersion"] == version

    # The alert threshold crossed: one Event on the policy.
    events = kubectl.get_json(
        "events", "--field-selector", "reason=BudgetThreshold", namespace=namespace
    )["items"]
    assert len(events) == 1 and "spend budget daily" in events[0]["message"]

    # Spend moves: the status follows.
    ask(router_of_policy, 2)
    eventually(
        lambda: (
            kubectl.get_json("cascadepolicy", "capped", namespace=namespace)["status"]["budgets"][
                0
            ]["spentUSD"]
            != entry["spentUSD"]
        ),
        "the status to follow the spend",
        timeout=30,
    )
