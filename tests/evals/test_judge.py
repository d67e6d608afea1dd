"""The judge grader end to end: a ModelTier grades open-ended answers through the same engine."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import yaml

from tierwise.emulator import EmulatorConfig, EmulatorThread
from tierwise.evals.local import local_evals, point_at
from tierwise.evals.plan import strongest_tier_config
from tierwise.evals.runner import run_eval

MANIFESTS = """
apiVersion: tierwise.dev/v1alpha1
kind: ModelTier
metadata: {name: haiku}
spec: {model: claude-haiku-4-5, apiKeySecretRef: {name: keys, key: anthropic}}
---
apiVersion: tierwise.dev/v1alpha1
kind: ModelTier
metadata: {name: opus}
spec: {model: claude-opus-4-5, apiKeySecretRef: {name: keys, key: judge}}
---
apiVersion: tierwise.dev/v1alpha1
kind: CascadePolicy
metadata: {name: summaries}
spec:
  routes:
    - name: summarize
      steps: [{tier: haiku, maxTokens: 200}]
  evaluation:
    dataset:
      configMapRef: {name: summaries-eval}
      template: "Summarize this ticket in one line:\\n{{input}}"
    grader: {type: judge, tier: opus, criteria: "One line, faithful to the ticket."}
    routes: [{name: summarize}]
    gate: {minQuality: 0.5, minItems: 20}
"""


def _name(i: int) -> str:
    """A distinct word per item (repeated items would be counted once)."""
    return chr(97 + i % 26) + chr(97 + i // 26) + "report"


def write(tmp_path: Path, items: int) -> Path:
    lines = [
        json.dumps(
            {
                "input": f"Ticket: the export button of the {_name(i)} page does nothing",
                "expected": "Export broken",
            }
        )
        for i in range(items)
    ]
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "summaries-eval"},
        "data": {"dataset.jsonl": "\n".join(lines) + "\n"},
    }
    (tmp_path / "policy.yaml").write_text(MANIFESTS + "---\n" + yaml.safe_dump(config_map))
    return tmp_path


def test_the_judge_tier_grades_and_its_verdicts_decide(tmp_path: Path):
    (found,) = local_evals([str(write(tmp_path, 30))])
    assert set(found.plan.judge_tiers) == {"opus"}
    with EmulatorThread(EmulatorConfig(zero_latency=True)) as emu:
        # The judge passes two answers in three; the route's own answers are echoes.
        verdicts = ['{"pass": true, "reason": "ok"}', '{"pass": true}', '{"pass": false}'] * 20
        emu.script("claude-opus-4-5", [{"text": v} for v in verdicts])
        plan = found.plan
        plan = type(plan)(**{**plan.__dict__, "judge_tiers": {
            name: {**tier, "endpoint": emu.base_url} for name, tier in plan.judge_tiers.items()
        }})  # fmt: skip
        candidate = point_at(found.candidate, emu.base_url)
        env = {"TIERWISE_TIER_HAIKU_API_KEY": "k", "TIERWISE_TIER_OPUS_API_KEY": "judge-key"}
        report = asyncio.run(
            run_eval(plan, candidate, strongest_tier_config(candidate), found.datasets, env)
        )
        judged = emu.recorded_requests(model="claude-opus-4-5")
    route = report.routes[0]
    measured = route.measured()
    assert measured.counted == 30
    baseline = route.baseline_set
    assert baseline is not None
    # Exactly the judge's 40 passes among the 60 verdicts, however they were interleaved.
    assert measured.correct + sum(r.correct for r in baseline.results) == 40
    assert len(judged) == 60  # candidate and baseline answers, each judged once
    prompt = judged[0].body["messages"][0]["content"]
    assert "One line, faithful to the ticket." in prompt and "Export broken" in prompt
    assert {r.api_key for r in judged} == {"judge-key"}
    assert report.judge_cost > 0
