"""Config parsing and validation (no network)."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from router_builder import config, route, step, with_hash

from tierwise.router import ConfigError, document_hash, load_config, parse_config
from tierwise.router.routing import RouteNotFound, select_route
from tierwise.routerconfig import (
    InvalidJSONSignal,
    JSONFieldBelowSignal,
    JSONFieldNotInSignal,
    RegexSignal,
    StopReasonSignal,
)

EP = "http://127.0.0.1:9"


def problems(doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    return "; ".join(info.value.problems)


def test_parses_the_documented_example_shape() -> None:
    cfg = parse_config(config(EP))
    assert cfg.policy.label == "support/email-triage"
    triage = cfg.routes_by_name["triage"]
    assert [s.tier for s in triage.steps] == ["haiku", "sonnet"]
    assert triage.steps[0].max_tokens == 256
    kinds = [type(s) for s in triage.steps[0].escalate_when]
    assert kinds == [
        StopReasonSignal,
        InvalidJSONSignal,
        JSONFieldBelowSignal,
        JSONFieldNotInSignal,
    ]
    below = triage.steps[0].escalate_when[2]
    assert isinstance(below, JSONFieldBelowSignal)
    assert below.threshold == Decimal("0.8") and below.field == ("confidence",)
    assert cfg.tiers["haiku"].prices.rates.output == Decimal("5")
    assert cfg.tiers["haiku"].api_key_env == "TIERWISE_TIER_HAIKU_API_KEY"
    assert cfg.hash_matches


def test_hash_is_sha256_of_canonical_json_without_hash() -> None:
    doc = config(EP)
    assert doc["hash"] == document_hash(doc)
    assert doc["hash"].startswith("sha256:") and len(doc["hash"]) == 7 + 64
    changed = copy.deepcopy(doc)
    changed["routes"][0]["steps"][0]["maxTokens"] = 128
    assert document_hash(changed) != doc["hash"]


def test_a_stale_hash_is_kept_as_declared_but_flagged() -> None:
    doc = config(EP)
    doc["routes"][0]["steps"][0]["maxTokens"] = 128
    cfg = parse_config(doc)
    assert cfg.hash == doc["hash"] and not cfg.hash_matches


def test_alias_always_selects_its_route() -> None:
    doc = config(EP)
    doc["routes"][0]["models"] = ["claude-haiku-4-5"]
    cfg = parse_config(with_hash(doc))
    assert cfg.routes_by_model["tierwise/triage"].name == "triage"
    assert cfg.routes_by_model["claude-haiku-4-5"].name == "triage"


def test_unknown_schema_version_is_refused() -> None:
    doc = config(EP)
    doc["schemaVersion"] = "tierwise.dev/router-config/v2"
    assert "unknown schema version" in problems(doc)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["routes"][0]["steps"][0].update(tier="nope"), "names no tier: 'nope'"),
        (lambda d: d.update(defaultRoute="nope"), "defaultRoute: names no route"),
        (lambda d: d["routes"][0].update(steps=[]), "steps: must be a non-empty list"),
        (lambda d: d["routes"][0].update(streamPolicy="fast"), "streamPolicy: must be one of"),
        (
            lambda d: d["routes"][0]["steps"][0]["escalateWhen"].append(
                {"signal": "regex", "pattern": "("}
            ),
            "not a valid regular expression",
        ),
        (
            lambda d: d["routes"][0]["steps"][0]["escalateWhen"].append({"signal": "judge"}),
            "unknown signal 'judge'",
        ),
        (
            lambda d: d["routes"][0]["steps"][0]["escalateWhen"].append(
                {"signal": "jsonFieldBelow", "field": "c", "threshold": "1.5"}
            ),
            "must be in [0, 1]",
        ),
        (lambda d: d["tiers"]["haiku"]["pricing"].pop("output"), "incomplete or invalid prices"),
        (lambda d: d["tiers"]["haiku"].update(provider="bedrock"), "unsupported provider"),
        (lambda d: d["tiers"]["haiku"]["limits"].update(maxConcurrency=0), "maxConcurrency"),
        (lambda d: d.update(fallback={"tier": "haiku", "on": ["sometimes"]}), "unknown failure"),
        (
            lambda d: d["cache"]["promptCaching"].update(breakpoints=["everything"]),
            "unknown breakpoint",
        ),
        (lambda d: d["cache"]["promptCaching"].update(ttl="2h"), "ttl: must be one of"),
        (lambda d: d["cache"]["promptCaching"].update(maxBreakpoints=5), "must be at most 4"),
        (lambda d: d["cache"]["promptCaching"].update(maxBreakpoints=0), "maxBreakpoints"),
        (
            lambda d: d["cache"]["responseCache"].update(enabled=True, backend="redis"),
            "redisURL: is required",
        ),
        (lambda d: d["routes"].append(copy.deepcopy(d["routes"][0])), "duplicate route name"),
    ],
)
def test_invalid_documents_name_the_problem(mutate: Any, expected: str) -> None:
    doc = config(EP)
    mutate(doc)
    assert expected in problems(doc)


def test_every_problem_is_reported_at_once() -> None:
    doc = config(EP)
    doc["routes"][0]["steps"][0]["tier"] = "nope"
    doc["defaultRoute"] = "missing"
    text = problems(doc)
    assert "names no tier" in text and "defaultRoute" in text


def test_one_model_cannot_select_two_routes() -> None:
    doc = config(
        EP,
        routes=[
            route("a", [step("haiku")], models=["claude-haiku-4-5"]),
            route("b", [step("sonnet")], models=["claude-haiku-4-5"]),
        ],
        default_route=None,
    )
    assert "selects both" in problems(doc)


def test_load_config_reads_files_and_reports_bad_json(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(config(EP)))
    assert load_config(good).routes[0].name == "triage"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")


def test_regex_signal_compiles() -> None:
    doc = config(
        EP,
        routes=[route("r", [step("haiku", None, {"signal": "regex", "pattern": "(?i)sorry"})])],
        default_route=None,
    )
    sig = parse_config(doc).routes[0].steps[0].escalate_when[0]
    assert isinstance(sig, RegexSignal) and sig.pattern.search("SORRY")


# --- route selection ------------------------------------------------------------------


def routing_config(default: str | None = "triage") -> Any:
    return parse_config(
        config(
            EP,
            routes=[
                route("triage", [step("haiku")]),
                route("summarize", [step("sonnet")], models=["claude-sonnet-5-5"]),
            ],
            default_route=default,
        )
    )


def test_header_wins_over_model() -> None:
    cfg = routing_config()
    assert select_route(cfg, "claude-sonnet-5-5", "triage").name == "triage"


def test_model_alias_and_mapped_real_model() -> None:
    cfg = routing_config()
    assert select_route(cfg, "tierwise/summarize", None).name == "summarize"
    assert select_route(cfg, "claude-sonnet-5-5", None).name == "summarize"


def test_default_route_catches_unknown_models() -> None:
    assert select_route(routing_config(), "gpt-9", None).name == "triage"


def test_no_match_and_no_default_is_not_found_naming_the_model() -> None:
    with pytest.raises(RouteNotFound, match="gpt-9"):
        select_route(routing_config(default=None), "gpt-9", None)


def test_unknown_route_header_is_not_found() -> None:
    with pytest.raises(RouteNotFound, match="'nope'"):
        select_route(routing_config(), "tierwise/triage", "nope")


def test_parses_what_tierwise_render_prints() -> None:
    """The contract from the other side: the operator's own rendering of the example."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tierwise.cli",
            "render",
            "-f",
            str(root / "examples" / "support-triage"),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rendered = json.loads(result.stdout)
    docs = rendered if isinstance(rendered, list) else [rendered]
    assert docs
    for doc in docs:
        cfg = parse_config(doc)
        assert cfg.hash_matches
        assert cfg.routes and all(route.steps for route in cfg.routes)
