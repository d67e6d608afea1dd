"""`tierwise calibrate` on the example dataset with the in-process emulator."""

from __future__ import annotations

import json
from pathlib import Path

from tierwise.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "support-triage"


def test_calibrate_proposes_a_threshold_that_holds_out(capsys):
    assert main(["calibrate", "-f", str(EXAMPLES), "--emulator", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["meetsTarget"] is True
    assert result["heldOut"]["quality"][1] >= result["target"]
    assert result["choice"]["quality"][1] >= result["target"]  # chosen on the tuning items
    assert result["tuningItems"] + result["heldOutItems"] == 400
    (patch,) = result["patch"]
    assert patch == {
        "op": "replace",
        "path": "/spec/routes/0/steps/0/escalateWhen/2/threshold",
        "value": result["choice"]["threshold"],
    }
    # The choice is the cheapest point that meets the target on the tuning items.
    meeting = [p for p in result["frontier"] if p["quality"][1] >= result["target"]]
    assert float(result["choice"]["costPerItem"]) == min(float(p["costPerItem"]) for p in meeting)
    # Lower thresholds escalate less and cost less: the sweep moved the cascade.
    costs = [float(p["costPerItem"]) for p in result["frontier"]]
    assert costs[0] < costs[-1]


def test_calibrate_text_shows_the_frontier_and_the_patch(capsys):
    code = main(
        [
            "calibrate",
            "-f",
            str(EXAMPLES),
            "--emulator",
            "--thresholds",
            "0.5,0.8,0.9",
            "--target",
            "0.8",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "on the cost/quality frontier" in out and "proposed threshold 0.80" in out
    assert "kubectl -n default patch cascadepolicy email-triage --type=json" in out


def test_an_unreachable_target_exits_1(capsys):
    assert main(["calibrate", "-f", str(EXAMPLES), "--emulator", "--target", "0.999"]) == 1
    assert "no threshold reaches" in capsys.readouterr().out


def test_bad_input_exits_2(capsys):
    assert main(["calibrate", "-f", str(EXAMPLES), "--emulator", "--held-out", "0"]) == 2
    assert main(["calibrate", "-f", str(EXAMPLES), "--route", "chat", "--emulator"]) == 2
    assert main(["calibrate", "-f", str(EXAMPLES), "--thresholds", "2", "--emulator"]) == 2
    assert "error" in capsys.readouterr().err
