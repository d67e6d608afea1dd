"""`tierwise calibrate` on the example dataset with the in-process emulator."""

from __future__ import annotations

import json
from pathlib import Path

from tierwise.cli import main
from tierwise.evals.dataset import load_dataset

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "support-triage"


def test_calibrate_proposes_a_threshold_that_holds_out(capsys):
    assert main(["calibrate", "-f", str(EXAMPLES), "--emulator", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["meetsTarget"] is True
    assert result["heldOut"]["quality"][1] >= result["target"]
    assert result["choice"]["quality"][1] >= result["target"]  # chosen on the tuning items
    distinct, _ = load_dataset(EXAMPLES / "dataset.jsonl").distinct()
    assert result["tuningItems"] + result["heldOutItems"] == len(distinct.items) == 400
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


def test_point8_no_patch_is_offered_after_a_failed_held_out_check():
    from decimal import Decimal
    from types import SimpleNamespace

    from tierwise.evals.calibrate import Point, _text
    from tierwise.evals.stats import wilson_interval

    choice = Point(0.7, wilson_interval(95, 100), Decimal("0.0001"), 0.2, 100)
    held = Point(0.7, wilson_interval(80, 100), Decimal("0.0001"), 0.2, 100)  # low 0.711
    fresh = Point(0.7, wilson_interval(90, 100), Decimal("0.0001"), 0.2, 100)
    result = {
        "route": "triage", "target": 0.85, "tuningItems": 100, "heldOutItems": 100,
        "resampleItems": 100, "meetsTarget": False, "resampleMeetsTarget": False, "patch": None,
    }  # fmt: skip
    policy = SimpleNamespace(name="email-triage", namespace="default")
    text = _text(result, [choice], choice, held, fresh, policy)
    assert "apply with" not in text and "kubectl" not in text
    assert "not confirmed: the held-out items do not meet the target" in text
    assert "held-out (100 items)" in text and "fresh resample (100 items)" in text


def test_point8_the_proposal_is_reported_on_a_fresh_resample(capsys):
    code = main(["calibrate", "-f", str(EXAMPLES), "--emulator", "--json", "--target", "0.8"])
    result = json.loads(capsys.readouterr().out)
    assert result["resample"] is not None and result["resampleItems"] > 0
    assert result["resample"]["threshold"] == result["choice"]["threshold"]
    assert (result["patch"] is not None) == result["meetsTarget"] == (code == 0)
    # Another seed draws another half of the items.
    main(["calibrate", "-f", str(EXAMPLES), "--emulator", "--json", "--target", "0.8",
          "--resample-seed", "other"])  # fmt: skip
    other = json.loads(capsys.readouterr().out)
    assert other["heldOut"] == result["heldOut"]
    assert (
        other["resample"] != result["resample"] or other["resampleItems"] != result["resampleItems"]
    )
