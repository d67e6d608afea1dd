"""The operator prices with its price-catalog ConfigMap and warns about retiring models."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from operator_process import OperatorProcess, eventually

from harness.kubectl import Kubectl
from tierwise.render import CONFIG_KEY

ROOT = Path(__file__).resolve().parents[2]
CATALOG = "tierwise-price-catalog"


def catalog_config_map(retires: str, sonnet_input: str) -> str:
    catalog = f"""date: "2026-12-01"
models:
  claude-sonnet-5-5:
    input: {sonnet_input}
    output: 10
    cacheWrite5m: 2.5
    cacheWrite1h: 4
    cacheRead: 0.1
  claude-next-6:
    input: 1
    output: 5
    cacheWrite5m: 1.25
    cacheWrite1h: 2
    cacheRead: 0.05
    retires: "{retires}"
"""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CATALOG},
            "data": {"catalog.yaml": catalog},
        }
    )


def condition(obj: dict, kind: str) -> dict:
    return next(c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind)


def test_price_catalog_config_map_reprices_tiers_and_retiring_model_warns(
    operator_kubeconfig: Path, kubectl: Kubectl, namespace: str, tmp_path: Path
):
    soon = (datetime.now(UTC).date() + timedelta(days=10)).isoformat()
    kubectl.apply(catalog_config_map(soon, "1.5"), namespace=namespace)
    operator = OperatorProcess(
        operator_kubeconfig,
        tmp_path / "operator.log",
        ["--webhook-port=0", f"--price-catalog={namespace}/{CATALOG}"],
    )
    operator.start()
    try:
        example = ROOT / "examples" / "support-triage"
        kubectl.apply(example / "tiers.yaml", namespace=namespace)
        kubectl.apply(example / "cache-profile.yaml", namespace=namespace)
        # Without its eval gate, so a new price goes live at once (with the gate, the
        # repriced config would be a candidate for an eval Job first: docs/operator.md).
        policy = yaml.safe_load((example / "policy.yaml").read_text())
        policy["spec"].pop("evaluation", None)
        kubectl.apply(json.dumps(policy), namespace=namespace)
        next_tier = {
            "apiVersion": "tierwise.dev/v1alpha1",
            "kind": "ModelTier",
            "metadata": {"name": "next"},
            "spec": {"model": "claude-next-6"},
        }
        kubectl.apply(json.dumps(next_tier), namespace=namespace)

        def sonnet_priced_from_config_map():
            tier = kubectl.get_json("modeltier", "sonnet", namespace=namespace)
            pricing = tier.get("status", {}).get("pricing", {})
            return pricing.get("input") == "1.5" and tier

        tier = eventually(sonnet_priced_from_config_map, "sonnet priced from the ConfigMap")
        assert tier["status"]["pricing"]["source"] == f"configmap:{namespace}/{CATALOG}:2026-12-01"

        def document():
            cm = kubectl.get_json("configmap", "tierwise-email-triage", namespace=namespace)
            doc = json.loads(cm["data"][CONFIG_KEY])
            return doc["tiers"]["sonnet"]["pricing"]["input"] == "1.5" and doc

        eventually(document, "the router config priced from the ConfigMap")

        def next_retiring():
            tier = kubectl.get_json("modeltier", "next", namespace=namespace)
            return condition(tier, "ModelSupported")["status"] == "False" and tier

        tier = eventually(next_retiring, "ModelSupported=False on the tier of a retiring model")
        assert condition(tier, "Ready")["status"] == "True"  # a warning, not an outage
        retiring = condition(tier, "ModelSupported")
        assert retiring["reason"] == "RetiresSoon" and soon in retiring["message"]
        events = eventually(
            lambda: [
                e
                for e in kubectl.get_json(
                    "events", "--field-selector", "involvedObject.name=next", namespace=namespace
                )["items"]
                if e["reason"] == "RetiresSoon"
            ],
            "a RetiresSoon event",
        )
        assert events[0]["type"] == "Warning"

        # A price change in the ConfigMap reaches the router config without a restart.
        kubectl.apply(catalog_config_map(soon, "1.75"), namespace=namespace)
        eventually(
            lambda: (
                json.loads(
                    kubectl.get_json("configmap", "tierwise-email-triage", namespace=namespace)[
                        "data"
                    ][CONFIG_KEY]
                )["tiers"]["sonnet"]["pricing"]["input"]
                == "1.75"
            ),
            "the new price in the router config",
        )
        # A broken catalog keeps the last good prices and says so in a metric.
        broken = json.loads(catalog_config_map(soon, "1.75"))
        broken["data"]["catalog.yaml"] = "date: nope\n"
        kubectl.apply(json.dumps(broken), namespace=namespace)
        eventually(
            lambda: "tierwise_operator_price_catalog_invalid 1.0" in operator.metrics(),
            "the invalid-catalog metric",
        )
        tier = kubectl.get_json("modeltier", "sonnet", namespace=namespace)
        assert tier["status"]["pricing"]["input"] == "1.75"
    finally:
        operator.stop()
