"""hedgeAfter: the next step starts when a step is slow; the winner is taken, the loser
cancelled and its spend counted."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
from router_builder import HAIKU_MODEL, SONNET_MODEL, config, route, step
from router_helpers import metric, metrics, recorded_cost, sdk, user

pytestmark = pytest.mark.timeout(60)

GOOD = '{"label": "bug", "confidence": 0.95}'
UNSURE = '{"label": "bug", "confidence": 0.2}'
SIGNAL = {"signal": "jsonFieldBelow", "field": "confidence", "threshold": 0.8}


def hedged(emu: Any, make_router: Any, after: str = "0.15") -> Any:
    first = {**step("haiku", 256, SIGNAL), "hedgeAfterSeconds": after}
    routes = [route("triage", [first, step("sonnet", 512)], counterfactual="sonnet")]
    return make_router(config(emu.base_url, routes))


def ask(router: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    raw = sdk(router).messages.with_raw_response.create(
        model="tierwise/triage", max_tokens=100, messages=user("my invoice is wrong")
    )
    return raw, time.perf_counter() - started


def cancelled_cost(router: Any, tier: str) -> float:
    return metric(
        metrics(router.metrics_url), "tierwise_router_hedge_cancelled_cost_usd_total", tier=tier
    )


def test_slow_step_is_hedged_the_winner_taken_the_loser_cancelled_and_counted(
    emu: Any, make_router: Any
) -> None:
    router = hedged(emu, make_router)
    emu.script(HAIKU_MODEL, [{"text": GOOD, "first_token_delay": 2.0}])
    emu.script(SONNET_MODEL, [{"text": GOOD}])
    raw, seconds = ask(router)
    assert raw.headers["x-tierwise-tier"] == "sonnet"
    assert raw.headers["x-tierwise-escalations"] == "1"
    assert seconds < 1.5  # did not wait for the slow haiku
    assert raw.parse().content[0].text == GOOD  # type: ignore[union-attr]

    samples = metrics(router.metrics_url)
    assert metric(samples, "tierwise_router_hedges_total", tier="haiku", result="hedge") == 1
    loser = cancelled_cost(router, "haiku")
    assert loser > 0
    sonnet_records = [r for r in emu.recorded_requests() if r.model == SONNET_MODEL and r.usage]
    winner = recorded_cost(sonnet_records)
    total = Decimal(raw.headers["x-tierwise-cost-usd"])
    assert float(total) == pytest.approx(float(winner) + loser)
    # ... and the loser's spend is in the cost metric too, under its own tier.
    assert metric(samples, "tierwise_router_cost_usd_total", tier="haiku") == pytest.approx(loser)


def test_a_step_that_answers_in_time_is_not_hedged(emu: Any, make_router: Any) -> None:
    router = hedged(emu, make_router, "1.0")
    emu.script(HAIKU_MODEL, [{"text": GOOD, "first_token_delay": 0.05}])
    raw, _ = ask(router)
    assert raw.headers["x-tierwise-tier"] == "haiku"
    assert [r.model for r in emu.recorded_requests()] == [HAIKU_MODEL]
    assert metric(metrics(router.metrics_url), "tierwise_router_hedges_total") == 0


def test_primary_answering_first_wins_and_the_hedge_is_cancelled(
    emu: Any, make_router: Any
) -> None:
    router = hedged(emu, make_router, "0.1")
    emu.script(HAIKU_MODEL, [{"text": GOOD, "first_token_delay": 0.4}])
    emu.script(SONNET_MODEL, [{"text": GOOD, "first_token_delay": 3.0}])
    raw, seconds = ask(router)
    assert (
        raw.headers["x-tierwise-tier"] == "haiku" and raw.headers["x-tierwise-escalations"] == "0"
    )
    assert seconds < 2.0
    samples = metrics(router.metrics_url)
    assert metric(samples, "tierwise_router_hedges_total", result="primary") == 1
    assert cancelled_cost(router, "sonnet") > 0


def test_primary_escalating_while_hedged_uses_the_hedge_once(emu: Any, make_router: Any) -> None:
    router = hedged(emu, make_router, "0.1")
    emu.script(HAIKU_MODEL, [{"text": UNSURE, "first_token_delay": 0.3}])
    emu.script(SONNET_MODEL, [{"text": GOOD, "first_token_delay": 0.6}])
    raw, _ = ask(router)
    assert (
        raw.headers["x-tierwise-tier"] == "sonnet" and raw.headers["x-tierwise-escalations"] == "1"
    )
    # Both answered: both were billed in full, nothing cancelled.
    records = [r for r in emu.recorded_requests() if r.usage]
    assert {r.model for r in records} == {HAIKU_MODEL, SONNET_MODEL}
    assert Decimal(raw.headers["x-tierwise-cost-usd"]) == recorded_cost(records)
    assert cancelled_cost(router, "haiku") == 0 and cancelled_cost(router, "sonnet") == 0
