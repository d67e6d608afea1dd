"""The parallel-calls example against a router rendered from examples/support-triage with --endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from router_helpers import metric, metrics

from tierwise.api import load_manifests
from tierwise.render import render_all, with_endpoint

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]


def test_fan_out_example_queues_at_the_tier_cap_and_the_metric_shows_it(
    emu: Any, make_router: Any
) -> None:
    [(_, result)] = render_all(load_manifests([str(ROOT / "examples/support-triage")]))
    document = with_endpoint(result.config, emu.base_url).to_document()  # type: ignore[arg-type]
    assert {t["endpoint"] for t in document["tiers"].values()} == {emu.base_url}
    document["tiers"]["haiku"]["limits"]["maxConcurrency"] = 2
    document["tiers"]["sonnet"]["limits"]["maxConcurrency"] = 2
    emu.script(
        "claude-haiku-5-5",
        [{"text": '{"label": "bug", "confidence": 0.95}', "first_token_delay": 0.2}] * 12,
    )
    emu.script("claude-sonnet-5-5", [{"text": "fine", "first_token_delay": 0.2}] * 24)
    router = make_router(document)
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/parallel-calls/fanout.py"),
            "--emails",
            "12",
            "--concurrency",
            "36",
            "--base-url",
            router.base_url,
        ],
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, "ANTHROPIC_API_KEY": "app"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("36 calls for 12 emails")
    samples = metrics(router.metrics_url)
    name = "tierwise_router_queue_wait_seconds"
    assert metric(samples, f"{name}_count", tier="haiku") == 12
    # 12 calls, 2 at a time, 0.2 s each: most waited for a slot, the last about a second.
    assert metric(samples, f"{name}_sum", tier="haiku") >= 12 * 0.2
    assert metric(samples, f"{name}_bucket", tier="haiku", le="0.1") <= 4
    report = subprocess.run(
        [
            str(Path(sys.executable).parent / "tierwise"),
            "report",
            "--metrics",
            router.metrics_url,
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(report.stdout)["queueWaitP95Seconds"]["haiku"] >= 0.4
