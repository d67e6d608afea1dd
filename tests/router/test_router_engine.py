"""CascadeEngine: a config's cascade run without an HTTP server (what evals replay with)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest
from router_builder import HAIKU_MODEL, SONNET_MODEL, config, tier_env
from router_helpers import recorded_cost, user

from tierwise.pricing import cost_usd
from tierwise.router.engine import CascadeEngine
from tierwise.routerconfig import parse

pytestmark = pytest.mark.timeout(60)
GOOD = json.dumps({"label": "billing", "confidence": 0.95})


def run(doc: dict[str, Any], body: dict[str, Any], **options: Any) -> Any:
    async def go() -> Any:
        async with CascadeEngine(parse(doc), env=tier_env()) as engine:
            return await engine.run(body, **options)

    return asyncio.run(go())


def test_a_cascade_runs_without_a_server_and_reports_every_step(emu: Any) -> None:
    emu.script(HAIKU_MODEL, [{"text": "not json"}])
    emu.script(SONNET_MODEL, [{"text": GOOD}])
    body = {"model": "tierwise/triage", "max_tokens": 100, "messages": user("my invoice")}
    result = run(config(emu.base_url), body)
    assert result.ok and result.route == "triage" and result.tier == "sonnet"
    assert result.message["content"][0]["text"] == GOOD
    assert result.escalations == 1
    assert [(s.tier, s.escalation) for s in result.steps] == [
        ("haiku", "invalid_json"),
        ("sonnet", None),
    ]
    assert all(s.usage.output_tokens > 0 and s.seconds > 0 for s in result.steps)
    assert result.cost == sum((s.cost for s in result.steps), Decimal(0))
    assert result.cost == recorded_cost(emu.recorded_requests())  # exact, as billed
    assert result.seconds >= sum(s.seconds for s in result.steps)
    # The same request building as the server: the format instruction and the step's cap.
    first = emu.recorded_requests()[0].body
    assert first["max_tokens"] == 100 and "JSON only" in str(first["system"])


def test_a_route_can_be_named_and_errors_come_back_in_the_api_shape(emu: Any) -> None:
    body = {"model": "anything", "max_tokens": 10, "messages": user("x")}
    result = run(config(emu.base_url), body, route="triage")
    assert result.ok and result.route == "triage"
    missing = run(config(emu.base_url), {"model": "tierwise/triage", "messages": user("x")})
    assert missing.status == 400 and missing.message is None
    assert json.loads(missing.error)["error"]["message"] == "max_tokens: Field required"
    unknown = run(config(emu.base_url), body, route="nope")
    assert unknown.status == 404 and json.loads(unknown.error)["error"]["type"] == "not_found_error"


def test_upstream_failures_are_results_not_exceptions(emu: Any) -> None:
    emu.set_faults(HAIKU_MODEL, rate_529=1.0, retry_after=0)
    body = {"model": "tierwise/triage", "max_tokens": 10, "messages": user("x")}
    result = run(config(emu.base_url), body)
    assert result.status == 529 and result.tier == "haiku" and not result.ok


def run_batched(doc: dict[str, Any], bodies: list[dict[str, Any]]) -> Any:
    from tierwise.evals.batch import BatchCascadeEngine

    async def go() -> Any:
        async with BatchCascadeEngine(parse(doc), tier_env(), poll_seconds=0.01) as engine:
            return await engine.run_all("triage", bodies)

    return asyncio.run(go())


def test_the_batch_engine_accounts_a_cascade_as_the_router_does(emu: Any) -> None:
    # Two items: one escalates (haiku's answer is not JSON), one is accepted by haiku.
    emu.script(HAIKU_MODEL, [{"text": "not json"}, {"text": GOOD}])
    emu.script(SONNET_MODEL, [{"text": GOOD}])
    bodies = [
        {"model": "tierwise/triage", "max_tokens": 100, "messages": user(f"invoice {i}")}
        for i in range(2)
    ]
    results = run_batched(config(emu.base_url), bodies)
    escalated = next(r for r in results if r.escalations)
    accepted = next(r for r in results if not r.escalations)
    assert escalated.ok and escalated.tier == "sonnet"
    assert [(s.tier, s.escalation) for s in escalated.steps] == [
        ("haiku", "invalid_json"),
        ("sonnet", None),
    ]
    assert accepted.ok and [s.tier for s in accepted.steps] == ["haiku"]
    for result in results:
        assert result.message["content"][0]["text"] == GOOD
        assert result.cost == sum((s.cost for s in result.steps), Decimal(0))
    # Priced at batch prices: half of what the same usage costs one call at a time.
    tiers = parse(config(emu.base_url)).tiers
    for step in (s for r in results for s in r.steps):
        assert step.cost * 2 == cost_usd(step.usage, tiers[step.tier].prices)


def test_a_failed_batch_comes_back_as_api_errors(emu: Any) -> None:
    emu.set_faults("*", rate_500=1.0, seed=1)
    body = {"model": "tierwise/triage", "max_tokens": 100, "messages": user("x")}
    doc = config(emu.base_url)
    doc["retry"] = {"maxAttempts": 1}
    (result,) = run_batched(doc, [body])
    assert result.status == 500 and result.message is None and result.tier == "haiku"
    assert json.loads(result.error)["type"] == "error" and result.cost == 0
