"""The router config format has one owner: golden files, round trips and import boundaries.

Golden files under tests/golden/render/ are the documents ``tierwise render`` writes for the
manifests beside them (and for examples/). A change to the format shows up as a diff there;
after checking it, refresh them with ``UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_routerconfig.py``.
"""

from __future__ import annotations

import ast
import json
import os
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierwise.api import load_manifests
from tierwise.pricing import catalog_prices
from tierwise.render import render_all
from tierwise.routerconfig import (
    CONFIG_KEY,
    MODEL_ALIAS_PREFIX,
    SCHEMA_VERSION,
    AnswerProbabilitySignal,
    CacheConfig,
    ConfigError,
    Fallback,
    InvalidJSONSignal,
    JSONFieldBelowSignal,
    JSONFieldNotInSignal,
    PolicyRef,
    PromptCaching,
    ResponseCacheConfig,
    RetryPolicy,
    Route,
    RouterConfig,
    Step,
    StopReasonSignal,
    Tier,
    TierLimits,
    content_hash,
    dump_document,
    parse,
)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "render"
PACKAGE = ROOT / "operator" / "tierwise"

CASES = {
    **{p.stem: p for p in sorted(GOLDEN.glob("*.yaml"))},
    "example-support-triage": ROOT / "examples" / "support-triage",
}


def rendered(source: Path) -> str:
    [(_, result)] = render_all(load_manifests([str(source)]))
    assert result.ok, result.problems
    return dump_document(result.document)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_matches_golden_file(case: str) -> None:
    golden = GOLDEN / f"{case}.json"
    text = rendered(CASES[case])
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden}; run with UPDATE_GOLDEN=1"
    assert text == golden.read_text(), f"{case}: render output changed (UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_documents_round_trip_through_the_typed_classes(case: str) -> None:
    doc = json.loads((GOLDEN / f"{case}.json").read_text())
    config = parse(doc)
    assert config.hash == doc["hash"] == content_hash(doc) and config.hash_matches
    assert config.to_document() == doc


def test_golden_cases_cover_every_signal_and_section() -> None:
    doc = json.loads((GOLDEN / "everything.json").read_text())
    signals = {
        s["signal"] for r in doc["routes"] for st_ in r["steps"] for s in st_["escalateWhen"]
    }
    assert signals == {"stopReason", "invalidJSON", "jsonFieldBelow", "jsonFieldNotIn", "regex"}
    assert doc["fallback"] and doc["cache"]["responseCache"]["backend"] == "redis"
    steps = [st_ for r in doc["routes"] for st_ in r["steps"]]
    assert {st_.get("effort") for st_ in steps} >= {"low", "max"}
    assert {st_["thinking"]["type"] for st_ in steps if "thinking" in st_} == {
        "adaptive",
        "enabled",
        "disabled",
    }
    assert {r["responseCache"] for r in doc["routes"]} == {"auto", "never"}
    assert doc["routes"][0]["steps"][0]["hedgeAfterSeconds"] == "0.75"
    assert doc["schemaVersion"] == SCHEMA_VERSION


def test_parse_fills_the_formats_defaults_in_one_place() -> None:
    doc = {
        "schemaVersion": SCHEMA_VERSION,
        "policy": {"namespace": "ns", "name": "p"},
        "routes": [{"name": "chat", "steps": [{"tier": "t"}]}],
        "tiers": {"t": {"model": "m", "pricing": catalog_prices("claude-haiku-4-5").to_document()}},  # type: ignore[union-attr]
    }
    config = parse(doc)
    assert config.retry == RetryPolicy()
    assert config.cache == CacheConfig()
    assert config.tiers["t"].limits == TierLimits()
    assert config.routes[0].models == (MODEL_ALIAS_PREFIX + "chat",)
    # Written back, the defaults are explicit, and the result parses to the same values.
    again = parse(config.to_document())
    assert again.to_document() == config.to_document()
    assert CONFIG_KEY == "router-config.json"


def test_problems_are_all_reported_with_their_paths() -> None:
    with pytest.raises(ConfigError) as info:
        parse(
            {
                "schemaVersion": SCHEMA_VERSION,
                "policy": {"namespace": "ns", "name": ""},
                "routes": [
                    {"name": "a", "steps": [{"tier": "ghost", "maxTokens": 0}]},
                    {
                        "name": "b",
                        "responseCache": "sometimes",
                        "steps": [
                            {"tier": "t", "effort": "extreme", "thinking": {"type": "enabled"}}
                        ],
                    },
                ],
                "tiers": {"t": {"model": "m", "pricing": {}}},
                "cache": {"promptCaching": {"breakpoints": ["nope"], "maxBreakpoints": 9}},
            }
        )
    text = "; ".join(info.value.problems)
    for expected in (
        "policy.name",
        "routes[0].steps[0].tier: names no tier: 'ghost'",
        "routes[0].steps[0].maxTokens",
        "tiers.t.pricing",
        "cache.promptCaching.breakpoints",
        "cache.promptCaching.maxBreakpoints",
        "routes[1].responseCache",
        "routes[1].steps[0].effort",
        "routes[1].steps[0].thinking.budgetTokens: required with type enabled",
    ):
        assert expected in text


names = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)
decimals = st.decimals(min_value=0, max_value=1, places=3, allow_nan=False)


@st.composite
def configs(draw: st.DrawFn) -> RouterConfig:
    tier_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    prices = catalog_prices("claude-haiku-4-5")
    tiers = {
        n: Tier(
            name=n,
            model=draw(names),
            prices=prices,  # type: ignore[arg-type]
            endpoint=draw(st.sampled_from(["http://127.0.0.1:9", "https://api.anthropic.com/"])),
            api_key_env=draw(st.none() | st.just(f"KEY_{i}")),
            limits=TierLimits(
                max_output_tokens=draw(st.none() | st.integers(1, 10**6)),
                timeout_seconds=draw(st.integers(1, 3600)),
                max_concurrency=draw(st.integers(1, 1000)),
            ),
        )
        for i, n in enumerate(tier_names)
    }
    route_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    routes = tuple(
        Route(
            name=r,
            models=(),
            steps=tuple(
                Step(
                    tier=draw(st.sampled_from(tier_names)),
                    max_tokens=draw(st.none() | st.integers(1, 10**5)),
                    escalate_when=(
                        StopReasonSignal(("max_tokens",)),
                        JSONFieldBelowSignal(("a", "b"), draw(decimals)),
                    ),
                )
                for _ in range(draw(st.integers(1, 3)))
            ),
            mode=draw(st.sampled_from(["interactive", "batch"])),
            format_instruction=draw(st.none() | st.text(min_size=1, max_size=20)),
        )
        for r in route_names
    )
    return RouterConfig(
        policy=PolicyRef(namespace=draw(names), name=draw(names)),
        routes=routes,
        tiers=tiers,
        default_route=draw(st.none() | st.sampled_from(route_names)),
        fallback=draw(st.none() | st.just(Fallback(tier=tier_names[0], on=("timeout",)))),
        retry=RetryPolicy(
            max_attempts=draw(st.integers(1, 10)),
            initial_backoff_seconds=float(draw(decimals)),
            max_backoff_seconds=8.0,
        ),
        cache=CacheConfig(
            profile=draw(st.none() | names),
            prompt_caching=PromptCaching(
                enabled=True,
                breakpoints=("system", "tools"),
                ttl=draw(st.sampled_from(["5m", "1h"])),
            ),
            response_cache=ResponseCacheConfig(enabled=draw(st.booleans())),
        ),
    ).with_hash()


@settings(max_examples=60, deadline=None)
@given(configs())
def test_any_config_round_trips_through_its_document(config: RouterConfig) -> None:
    doc = json.loads(dump_document(config.to_document()))
    again = parse(doc)
    assert again.to_document() == doc
    assert again.hash == config.hash and again.hash_matches
    assert isinstance(again.retry.initial_backoff_seconds, float)
    assert Decimal(doc["retry"]["initialBackoffSeconds"]) == Decimal(
        repr(config.retry.initial_backoff_seconds)
    )


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_router_reads_the_format_without_importing_render() -> None:
    for path in (PACKAGE / "router").rglob("*.py"):
        assert not any(m.startswith("tierwise.render") for m in _imports(path)), path


def test_routerconfig_is_pure() -> None:
    forbidden = ("kubernetes", "kopf", "aiohttp", "redis", "tierwise.render", "tierwise.api")
    for path in (PACKAGE / "routerconfig").rglob("*.py"):
        bad = [
            m
            for m in _imports(path)
            if m.startswith(forbidden) or m == "tierwise.router" or m.startswith("tierwise.router.")
        ]
        assert not bad, f"{path} imports {bad}"


def test_omitted_retry_fields_take_the_defaults() -> None:
    doc = json.loads((GOLDEN / "minimal.json").read_text())
    doc["retry"] = {"maxAttempts": 1}
    assert parse(doc).retry == RetryPolicy(max_attempts=1)


def test_a_token_probability_signal_on_an_anthropic_tier_is_refused() -> None:
    doc = json.loads((GOLDEN / "self-hosted.json").read_text())
    doc["routes"][0]["steps"][0]["tier"], doc["routes"][0]["steps"][1]["tier"] = "sonnet", "local"
    doc["routes"][0]["steps"][1]["escalateWhen"] = []
    doc["hash"] = content_hash(doc)
    with pytest.raises(ConfigError) as error:
        parse(doc)
    assert "routes[0].steps[0].escalateWhen" in str(error.value)
    assert "tier 'sonnet' (provider anthropic) cannot return" in str(error.value)


def test_a_steps_answer_schema_is_the_fields_its_signals_read() -> None:
    labels = JSONFieldNotInSignal(("label",), ("bug", "other"))
    confidence = JSONFieldBelowSignal(("meta", "confidence"), Decimal("0.5"))
    probability = AnswerProbabilitySignal(Decimal("0.5"), ("label",))
    schema = Step("local", escalate_when=(InvalidJSONSignal(), probability, labels, confidence))
    assert schema.answer_schema == {
        "type": "object",
        "properties": {
            # The enum of jsonFieldNotIn wins over answerProbabilityBelow's plain string.
            "label": {"type": "string", "enum": ["bug", "other"]},
            "meta": {
                "type": "object",
                "properties": {"confidence": {"type": "number"}},
                "required": ["confidence"],
                "additionalProperties": False,
            },
        },
        "required": ["label", "meta"],
        "additionalProperties": False,
    }
    assert Step("local", escalate_when=(InvalidJSONSignal(),)).answer_schema == {"type": "object"}
    free_text = (StopReasonSignal(("max_tokens",)), AnswerProbabilitySignal(Decimal("0.2")))
    assert Step("local", escalate_when=free_text).answer_schema is None


def test_structured_output_is_written_only_when_set_and_only_for_openai_tiers() -> None:
    doc = json.loads((GOLDEN / "self-hosted.json").read_text())
    assert doc["tiers"]["local"]["structuredOutput"] == "jsonSchema"
    assert parse(doc).tiers["local"].structured_output == "jsonSchema"
    assert "structuredOutput" not in doc["tiers"]["sonnet"]  # hashes of other tiers stay put
    doc["tiers"]["sonnet"]["structuredOutput"] = "jsonObject"
    doc["tiers"]["local"]["structuredOutput"] = "grammar"
    doc["hash"] = content_hash(doc)
    with pytest.raises(ConfigError) as error:
        parse(doc)
    assert "tiers.sonnet.structuredOutput: only a tier with provider openai" in str(error.value)
    assert "tiers.local.structuredOutput: must be one of" in str(error.value)
