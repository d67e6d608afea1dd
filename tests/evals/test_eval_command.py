"""`tierwise eval` on the examples with the in-process emulator: exit 0, 1 and 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tierwise.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "support-triage"


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    copy = tmp_path / "examples"
    shutil.copytree(EXAMPLES, copy / "support-triage")
    return copy


def test_examples_pass_the_gate(capsys):
    assert main(["eval", "-f", str(EXAMPLES), "--emulator", "-q"]) == 0
    out = capsys.readouterr().out
    assert "route triage (jsonField grader): Promoted" in out
    assert "decision: Promoted" in out
    assert "confusion (candidate" in out and "saving" in out and "latency p95" in out


def test_threshold_dropped_to_zero_fails_with_exit_1(examples: Path, capsys):
    policy = examples / "support-triage/policy.yaml"
    policy.write_text(policy.read_text().replace("threshold: 0.9", "threshold: 0"))
    assert main(["eval", "-f", str(examples), "--emulator", "-q"]) == 1
    out = capsys.readouterr().out
    assert "decision: Rejected" in out and "below minQuality" in out


def test_malformed_dataset_line_exits_2_naming_the_line(examples: Path, capsys):
    config_map = examples / "support-triage/dataset-configmap.yaml"
    lines = config_map.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith('    {"input"')) + 6
    lines[index] = '    {"input": "I was charged twice", "label": '
    config_map.write_text("\n".join(lines) + "\n")
    assert main(["eval", "-f", str(examples), "--emulator", "-q"]) == 2
    err = capsys.readouterr().err
    assert "ConfigMap triage-eval-dataset key dataset.jsonl" in err
    assert "line 7: not valid JSON" in err


def test_dataset_file_option_and_json_output(tmp_path: Path, capsys):
    data = tmp_path / "few.jsonl"
    lines = (EXAMPLES / "dataset.jsonl").read_text().splitlines()[:60]
    data.write_text("\n".join(lines) + "\n")
    code = main(["eval", "-f", str(EXAMPLES), "--emulator", "-q", "--json", "--dataset", str(data)])
    report = json.loads(capsys.readouterr().out)[0]
    assert report["routes"][0]["items"] == 60 and len(report["routes"][0]["results"]) == 60
    assert code == {"Promoted": 0, "Rejected": 1, "Inconclusive": 2}[report["decision"]]


def test_baseline_manifests_are_the_promoted_config(examples: Path, capsys):
    policy = examples / "support-triage/policy.yaml"
    policy.write_text(policy.read_text().replace("threshold: 0.9", "threshold: 0.85"))
    code = main(
        ["eval", "-f", str(examples), "--baseline", str(EXAMPLES), "--emulator", "-q", "--json"]
    )
    report = json.loads(capsys.readouterr().out)[0]
    assert report["baseline"] == "promoted" and report["baselineHash"] != report["candidateHash"]
    assert code == 0, report["reasons"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["-f", "no/such/dir"], "no such file or directory"),
        (["-f", str(EXAMPLES), "--policy", "nope"], "no CascadePolicy named 'nope'"),
        (["-f", str(EXAMPLES), "--route", "chat"], "route 'chat' is not evaluated"),
        ([], "give manifests with -f"),
    ],
)
def test_bad_input_exits_2(args, says, capsys):
    assert main(["eval", *args, "--emulator", "-q"]) == 2
    assert says in capsys.readouterr().err


def test_a_policy_without_evaluation_is_bad_input(tmp_path: Path, capsys):
    plain = tmp_path / "plain"
    shutil.copytree(EXAMPLES, plain / "support-triage")
    policy = plain / "support-triage/policy.yaml"
    text = policy.read_text()
    policy.write_text(text[: text.index("  # Eval-gated rollout")])
    assert main(["eval", "-f", str(plain), "--emulator", "-q"]) == 2
    assert "no spec.evaluation" in capsys.readouterr().err


def test_the_installed_command_and_its_help():
    exe = Path(sys.executable).parent / "tierwise"
    result = subprocess.run([exe, "eval", "--help"], capture_output=True, text=True, check=True)
    assert "--emulator" in result.stdout and "Exit status" in result.stdout


def test_job_mode_writes_a_small_summary_to_the_termination_log(
    tmp_path: Path, capsys, monkeypatch
):
    from dataclasses import replace

    from tierwise.emulator import Dataset, EmulatorConfig, EmulatorThread
    from tierwise.evals.local import local_evals, point_at

    (found,) = local_evals([str(EXAMPLES)])
    for tier in ("HAIKU", "SONNET", "OPUS"):  # as the Job gets them through secretKeyRef
        monkeypatch.setenv(f"TIERWISE_TIER_{tier}_API_KEY", "key")
    emulated = Dataset.from_jsonl(EXAMPLES / "dataset.jsonl")
    with EmulatorThread(EmulatorConfig(zero_latency=True, dataset=emulated)) as emu:
        route = replace(found.plan.routes[0], dataset=str(EXAMPLES / "dataset.jsonl"))
        plan = replace(found.plan, routes=(route,))
        (tmp_path / "plan.json").write_text(json.dumps(plan.to_document()))
        (tmp_path / "candidate.json").write_text(
            json.dumps(point_at(found.candidate, emu.base_url))
        )
        log = tmp_path / "termination-log"
        code = main(
            [
                "eval",
                "--plan", str(tmp_path / "plan.json"),
                "--candidate", str(tmp_path / "candidate.json"),
                "--termination-log", str(log),
                "-q",
            ]
        )  # fmt: skip
    assert code == 0
    summary = json.loads(log.read_text())
    assert len(log.read_bytes()) < 4096
    assert summary["decision"] == "Promoted" and summary["baseline"] == "strongest"
    assert summary["routes"]["triage"]["graded"] == 400
    out = capsys.readouterr().out
    assert "decision: Promoted" in out and "full report: " in out


def test_summary_is_trimmed_to_fit_a_termination_message():
    from tierwise.evals.report import dump_summary, fit

    doc = {
        "decision": "Rejected",
        "reasons": [f"route-{i}: " + "x" * 300 for i in range(30)],
        "routes": {
            f"route-{i}": {"quality": [0.9, 0.8, 0.95], "pad": "y" * 200} for i in range(32)
        },
    }
    trimmed = fit(doc)
    assert len(dump_summary(trimmed).encode()) <= 4096
    assert trimmed["decision"] == "Rejected" and trimmed["reasons"]


def test_batch_mode_halves_the_cost_at_the_same_quality(examples: Path, capsys):
    assert main(["eval", "-f", str(examples), "--emulator", "-q", "--json"]) == 0
    interactive = json.loads(capsys.readouterr().out)[0]["routes"][0]
    policy = examples / "support-triage/policy.yaml"
    policy.write_text(policy.read_text().replace("    concurrency: 8", "    useBatchAPI: true"))
    assert main(["eval", "-f", str(examples), "--emulator", "-q", "--json"]) == 0
    batched = json.loads(capsys.readouterr().out)[0]["routes"][0]
    assert batched["batch"] is True and batched["p95Seconds"] is None
    assert batched["quality"] == interactive["quality"]
    assert batched["escalationRate"] == interactive["escalationRate"]
    assert Decimal(batched["costPerItem"]) * 2 == pytest.approx(
        Decimal(interactive["costPerItem"]), abs=Decimal("0.000002")
    )
