"""The shadow document the operator writes beside the live router config."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tierwise.routerconfig import ConfigError
from tierwise.routerconfig.shadow import SHADOW_SCHEMA_VERSION, parse_shadow, parse_shadow_bytes

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "render"


def candidate() -> dict[str, Any]:
    """A rendered router config (the golden example policy's) as the candidate."""
    return json.loads((GOLDEN / "example-support-triage.json").read_text())


def doc(**settings: Any) -> dict[str, Any]:
    config = candidate()
    out = {
        "schemaVersion": SHADOW_SCHEMA_VERSION,
        "sampleRate": 0.25,
        "maxConcurrency": 2,
        "timeoutSeconds": 30,
        "spendLimitPerHourUSD": "0.50",
        "routes": [{"name": config["routes"][0]["name"], "field": "result.label"}],
        "config": config,
    }
    out.update(settings)
    return out


def test_a_valid_document_round_trips() -> None:
    settings = parse_shadow(doc())
    assert settings.sample_rate == 0.25
    assert settings.spend_limit_per_hour_usd == Decimal("0.50")
    route = next(iter(settings.routes.values()))
    assert route.comparison == "graderField" and route.field == ("result", "label")
    again = parse_shadow_bytes(json.dumps(settings.to_document()))
    assert again.routes == settings.routes
    assert again.candidate_hash == settings.candidate_hash


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"sampleRate": 0}, "sampleRate must be above 0 and at most 1"),
        ({"sampleRate": 1.5}, "sampleRate must be above 0 and at most 1"),
        ({"maxConcurrency": 0}, "maxConcurrency must be an integer of at least 1"),
        ({"timeoutSeconds": "soon"}, "timeoutSeconds must be a number"),
        ({"spendLimitPerHourUSD": -1}, "spendLimitPerHourUSD must be zero or more"),
        ({"routes": []}, "routes must be a non-empty list"),
        ({"routes": [{"name": "nope"}]}, "route 'nope' is not in the candidate config"),
        ({"routes": [{"name": "x", "comparison": "vote"}]}, "comparison must be one of"),
        ({"routes": [{"name": "x", "comparison": "judge"}]}, "judgeTier must name the tier"),
        (
            {"routes": [{"name": "x", "comparison": "judge", "judgeTier": "opus"}]},
            "judgeConfig has no route 'judge-opus'",
        ),
        ({"schemaVersion": "v0"}, "schemaVersion must be"),
        ({"config": {"schemaVersion": "x"}}, "config: "),
    ],
)
def test_every_bad_setting_is_named(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_shadow(doc(**change))
    assert problem in str(caught.value)


def test_a_route_listed_twice_is_refused() -> None:
    d = doc()
    d["routes"] = [copy.deepcopy(d["routes"][0])] * 2
    with pytest.raises(ConfigError, match="listed twice"):
        parse_shadow(d)


def test_not_json_is_refused_clearly() -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_shadow_bytes(b"{ nope")


def test_a_judge_comparison_round_trips_with_its_judge_config() -> None:
    from tierwise.evals.plan import judge_config

    config = candidate()
    tier = next(iter(config["tiers"]))
    judged = {"name": "triage", "comparison": "judge", "judgeTier": tier, "criteria": "Same."}
    settings = parse_shadow(
        doc(routes=[judged], judgeConfig=judge_config(config, {tier: config["tiers"][tier]}))
    )
    route = settings.routes["triage"]
    assert (route.judge_tier, route.criteria) == (tier, "Same.")
    assert settings.judge_config is not None
    assert f"judge-{tier}" in settings.judge_config.routes_by_name
    again = parse_shadow_bytes(json.dumps(settings.to_document()))
    assert again.routes == settings.routes
    assert again.judge_config is not None
    assert again.judge_config.routes == settings.judge_config.routes
    assert again.judge_config.tiers == settings.judge_config.tiers
