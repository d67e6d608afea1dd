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
    route = report["routes"][0]
    assert route["lines"] == 60 and len(route["results"]) == route["items"]
    assert code == {"Promoted": 0, "Rejected": 1, "Inconclusive": 3}[report["decision"]]


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
    assert summary["routes"]["triage"]["counted"] == 400
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


def test_point7_exit_codes_tell_fail_bad_input_and_inconclusive_apart(tmp_path: Path, capsys):
    from tierwise.evals.command import EXIT, EXIT_BAD_INPUT, worst

    assert (EXIT["Promoted"], EXIT["Rejected"], EXIT_BAD_INPUT, EXIT["Inconclusive"]) == (
        0,
        1,
        2,
        3,
    )
    assert worst([0, 3, 1]) == 1 and worst([3, 2, 1]) == 2 and worst([0, 3]) == 3
    # 20 distinct items: fewer than minItems (30) -> inconclusive, exit 3.
    few = tmp_path / "few.jsonl"
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota",
             "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon"]  # fmt: skip
    lines = [json.dumps({"input": f"Ticket: please help with problem {w}", "label": "bug"})
             for w in words]  # fmt: skip
    few.write_text("\n".join(lines) + "\n")
    assert main(["eval", "-f", str(EXAMPLES), "--emulator", "-q", "--dataset", str(few)]) == 3
    assert "decision: Inconclusive" in capsys.readouterr().out
    # Items without a label for a jsonField grader: bad input, found before any model call.
    unlabelled = tmp_path / "unlabelled.jsonl"
    unlabelled.write_text(
        "\n".join(json.dumps({"input": f"Ticket {w}: help"}) for w in "abcdefgh") + "\n"
    )
    assert main(["eval", "-f", str(EXAMPLES), "-q", "--dataset", str(unlabelled)]) == 2
    err = capsys.readouterr().err
    assert "jsonField grader: 8/8 items have no `label`: nothing can be graded" in err


def test_point1_a_changed_route_without_a_dataset_is_named(examples: Path, capsys):
    policy = examples / "support-triage/policy.yaml"
    text = policy.read_text()
    chat = text.index("    - name: chat")
    switched = text[:chat] + text[chat:].replace("tier: sonnet", "tier: haiku", 1)
    assert switched != text
    policy.write_text(switched)
    code = main(
        ["eval", "-f", str(examples), "--baseline", str(EXAMPLES), "--emulator", "-q", "--json"]
    )
    report = json.loads(capsys.readouterr().out)[0]
    assert code == 3
    assert report["decision"] == "Inconclusive"
    assert "route chat changed and has no dataset" in report["reasons"]
    assert "chat" in report["decidingRoutes"]
    assert report["changes"] == {"triage": "unchanged", "chat": "changed, not evaluated"}
    # Saying so in the policy promotes it on the evaluated routes' evidence, named.
    policy.write_text(
        switched.replace(
            "    onNewPolicy: Promote", "    onNewPolicy: Promote\n    unevaluatedRoutes: Promote"
        )
    )
    main(["eval", "-f", str(examples), "--baseline", str(EXAMPLES), "--emulator", "-q", "--json"])
    report = json.loads(capsys.readouterr().out)[0]
    assert "route chat changed and has no dataset" not in report["reasons"]
    assert report["decision"] == "Promoted" or "chat" not in report["decidingRoutes"]
    if report["decision"] == "Promoted":
        assert any("unevaluatedRoutes: Promote" in r for r in report["reasons"])


def test_point7_summary_keeps_the_deciding_route_when_trimmed():
    from tierwise.evals.report import dump_summary, fit

    routes = {f"route-{i}": {"decision": "Promoted", "pad": "y" * 200} for i in range(32)}
    doc = {
        "decision": "Rejected",
        "decidingRoutes": ["route-0"],
        "reasons": ["route-0: below minQuality"],
        "changes": {f"route-{i}": "unchanged" if i else "changed, evaluated" for i in range(32)},
        "routes": {"route-0": {"decision": "Rejected"}, **{k: v for k, v in routes.items() if k != "route-0"}},
    }  # fmt: skip
    trimmed = fit(doc)
    assert len(dump_summary(trimmed).encode()) <= 4096
    assert trimmed["routes"]["route-0"] == {"decision": "Rejected"}
    assert trimmed["changes"]["route-0"] == "changed, evaluated"
