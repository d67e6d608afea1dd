"""Issue 17 point 9, end to end: `tierwise eval --emulator` on a task that is not the example's.

tests/data/ticket-priority has its own dataset (``messages`` items), its own answer shape (the
priority at ``ticket.priority``, the model's certainty in ``certainty``) and its own policy
and namespace. The emulator follows the route's grader and escalation field, so the verdict
measures the cascade, not a schema mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tierwise.cli import main

pytestmark = pytest.mark.timeout(120)

EXAMPLE = Path(__file__).resolve().parents[2] / "tests" / "data" / "ticket-priority"


def test_point9_own_task_gets_a_sensible_verdict_with_the_emulator(capsys) -> None:
    code = main(["eval", "-f", str(EXAMPLE), "--emulator", "-q", "--json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)[0]
    route = report["routes"][0]
    assert report["policy"] == "helpdesk/ticket-priority"
    assert route["counted"] == route["items"] == 160 and route["errors"] == 0  # all graded
    assert 0.85 <= route["quality"][0] <= 1.0  # Sonnet-like quality, not a schema miss
    assert 0.2 < route["escalationRate"] < 0.9  # the certainty field drives the cascade
    tiers = {r["candidate"]["tier"] for r in route["results"]}
    assert tiers == {"haiku", "sonnet"}
    assert code == 0 and report["decision"] == "Promoted", report["reasons"]
    assert "note:" not in captured.err  # the emulator recognised every item


def test_point9_trusting_haiku_alone_is_not_promoted_on_the_own_task(
    tmp_path: Path, capsys
) -> None:
    """Threshold 0: Haiku's answers are all kept, confidently wrong ones included."""
    import shutil

    copy = tmp_path / "ticket-priority"
    shutil.copytree(EXAMPLE, copy)
    policy = copy / "policy.yaml"
    policy.write_text(policy.read_text().replace("threshold: 0.9", "threshold: 0"))
    assert main(["eval", "-f", str(copy), "--emulator", "-q"]) != 0
    out = capsys.readouterr().out
    assert "decision: Promoted" not in out and "escalation rate 0.0%" in out


def test_point9_calibrate_follows_the_routes_grader_and_confidence_field(capsys) -> None:
    from tierwise.cli import main as cli

    cli(["calibrate", "-f", str(EXAMPLE), "--emulator", "--target", "0.85", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["route"] == "priority" and result["tuningItems"] + result["heldOutItems"] == 160
    frontier = result["frontier"]
    rates = [p["escalationRate"] for p in frontier]
    assert min(rates) < 0.1 and max(rates) > 0.9  # the certainty field moves the escalations
    best = max(p["quality"][0] for p in frontier)
    assert best >= 0.85  # answers carry ticket.priority: graded right, not a schema miss
