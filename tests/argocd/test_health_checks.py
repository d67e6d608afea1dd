"""Argo CD health checks: each kind's health_test.yaml, exactly as Argo CD's own test runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from lua_health import CUSTOMIZATIONS, KINDS, health

CASES = [
    (kind, case)
    for kind in KINDS
    for case in yaml.safe_load((CUSTOMIZATIONS / kind / "health_test.yaml").read_text())["tests"]
]


@pytest.mark.parametrize(
    ("kind", "case"), CASES, ids=[f"{k}-{Path(c['inputPath']).stem}" for k, c in CASES]
)
def test_health_test_yaml(kind: str, case: dict) -> None:
    directory = CUSTOMIZATIONS / kind
    obj = yaml.safe_load((directory / case["inputPath"]).read_text())
    assert obj["kind"] == kind
    assert health(directory / "health.lua", obj) == case["healthStatus"]


def test_layout_is_argo_cds_contribution_layout() -> None:
    for kind in KINDS:
        directory = CUSTOMIZATIONS / kind
        assert (directory / "health.lua").is_file()
        tests = yaml.safe_load((directory / "health_test.yaml").read_text())["tests"]
        statuses = {t["healthStatus"]["status"] for t in tests}
        assert {"Healthy", "Degraded", "Progressing"} <= statuses, kind
        # Every testdata file is used by a test, and every test's input exists.
        used = {(directory / t["inputPath"]).resolve() for t in tests}
        assert used == {p.resolve() for p in (directory / "testdata").glob("*.yaml")}


def test_the_three_kinds_share_one_script() -> None:
    """The kinds follow the same status conventions; one script, copied per kind for Argo CD."""
    scripts = {(CUSTOMIZATIONS / kind / "health.lua").read_text() for kind in KINDS}
    assert len(scripts) == 1


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        # An unknown future condition False is a problem, with its own message.
        (
            [
                {"type": "Ready", "status": "True"},
                {"type": "Quota", "status": "False", "reason": "OverBudget", "message": "m"},
            ],
            ("Degraded", "Quota: OverBudget: m"),
        ),
        # Degraded=True wins over Progressing=True.
        (
            [
                {"type": "Progressing", "status": "True"},
                {"type": "Degraded", "status": "True", "reason": "R"},
            ],
            ("Degraded", "Degraded: R"),
        ),
        # A newer change being evaluated supersedes an earlier rejection.
        (
            [
                {"type": "Promoted", "status": "False", "reason": "Rejected"},
                {"type": "Progressing", "status": "True", "reason": "Evaluating"},
            ],
            ("Progressing", "Progressing: Evaluating"),
        ),
        # No conditions yet.
        ([], ("Progressing", "Waiting for the Ready condition")),
        # Progressing=False alone is not a failure.
        (
            [
                {"type": "Progressing", "status": "False", "reason": "Done"},
                {"type": "Ready", "status": "True", "reason": "Ok"},
            ],
            ("Healthy", "Ready: Ok"),
        ),
    ],
)
def test_conditions_are_read_generally(conditions: list, expected: tuple[str, str]) -> None:
    obj = {
        "kind": "CascadePolicy",
        "metadata": {"name": "p", "generation": 1},
        "status": {"observedGeneration": 1, "conditions": conditions},
    }
    result = health(CUSTOMIZATIONS / "CascadePolicy" / "health.lua", obj)
    assert (result["status"], result["message"]) == expected
