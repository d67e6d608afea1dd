"""Effort and thinking per cascade step, and the route's response-cache mode, on the 5.5 models."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from router_builder import config, route, step, tier
from router_helpers import metric, metrics, sdk, user

from tierwise.pricing import Usage, catalog_prices, cost_usd

pytestmark = pytest.mark.timeout(60)

SONNET = "claude-sonnet-5-5"
OPUS = "claude-opus-5-5"
UNSURE = '{"label": "bug", "confidence": 0.4}'
SURE = '{"label": "bug", "confidence": 0.95}'


def current_models(emu: Any, routes: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    tiers = {
        "sonnet": tier(SONNET, emu.base_url, name="sonnet"),
        "opus": tier(OPUS, emu.base_url, name="opus"),
    }
    return config(emu.base_url, routes, tiers=tiers, default_route=None, **kwargs)


def review_route(**kwargs: Any) -> dict[str, Any]:
    low = {
        **step(
            "sonnet", 4096, {"signal": "jsonFieldBelow", "field": "confidence", "threshold": 0.8}
        ),
        "effort": "low",
        "thinking": {"type": "adaptive", "budgetTokens": None},
    }
    high = {**step("opus", 8192), "effort": "high", "thinking": {"type": "adaptive"}}
    return route("review", [low, high], counterfactual="opus", **kwargs)


def test_sonnet_at_low_effort_then_opus_at_high(emu: Any, make_router: Any) -> None:
    router = make_router(current_models(emu, [review_route()]))
    emu.script(SONNET, [{"text": UNSURE}])
    emu.script(OPUS, [{"text": SURE}])
    raw = sdk(router).messages.with_raw_response.create(
        model="tierwise/review",
        max_tokens=16_000,
        messages=user("Is this a bug?"),
        # The client's own settings: replaced by each step's.
        extra_body={"output_config": {"effort": "max"}, "thinking": {"type": "disabled"}},
    )
    message = raw.parse()
    assert raw.headers["x-tierwise-tier"] == "opus" and raw.headers["x-tierwise-escalations"] == "1"

    sent = {r.model: r.body for r in emu.recorded_requests()}
    assert sent[SONNET]["output_config"] == {"effort": "low"}
    assert sent[SONNET]["thinking"] == {"type": "adaptive"}
    assert sent[SONNET]["max_tokens"] == 4096
    assert sent[OPUS]["output_config"] == {"effort": "high"}
    assert sent[OPUS]["thinking"] == {"type": "adaptive"}

    # The SDK sees a valid message: a thinking block, then the answer.
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[1].text == SURE  # type: ignore[union-attr]

    # Thinking is billed as output: low effort thought far less than high.
    usages = {r.model: Usage.from_anthropic(r.usage) for r in emu.recorded_requests()}
    assert usages[SONNET].output_tokens < usages[OPUS].output_tokens
    expected = cost_usd(usages[SONNET], catalog_prices(SONNET)) + cost_usd(  # type: ignore[arg-type]
        usages[OPUS],
        catalog_prices(OPUS),  # type: ignore[arg-type]
    )
    assert Decimal(raw.headers["x-tierwise-cost-usd"]) == expected
    samples = metrics(router.metrics_url)
    assert metric(samples, "tierwise_router_tokens_total", tier="sonnet", type="output") == (
        usages[SONNET].output_tokens
    )
    # The counterfactual is the final answer's usage (its thinking included) on opus.
    counterfactual = metric(samples, "tierwise_router_counterfactual_cost_usd_total")
    assert counterfactual == pytest.approx(
        float(cost_usd(usages[OPUS], catalog_prices(OPUS)))  # type: ignore[arg-type]
    )


def test_escalation_reads_the_answer_not_the_thinking(emu: Any, make_router: Any) -> None:
    # The thinking summary is the emulator's filler text; the signal matches only it.
    regex = {"signal": "regex", "pattern": "deterministic filler"}
    first = {**step("sonnet", 4096, regex), "effort": "medium", "thinking": {"type": "adaptive"}}
    router = make_router(
        current_models(emu, [route("review", [first, step("opus")], counterfactual="opus")])
    )
    emu.script(SONNET, [{"text": SURE}])
    raw = sdk(router).messages.with_raw_response.create(
        model="tierwise/review", max_tokens=8000, messages=user("q")
    )
    message = raw.parse()
    thinking = message.content[0]
    assert thinking.type == "thinking" and "deterministic filler" in thinking.thinking  # type: ignore[union-attr]
    assert raw.headers["x-tierwise-tier"] == "sonnet"  # no escalation on the thinking text


def test_a_step_thinking_budget_on_an_adaptive_only_model_is_adapted(
    emu: Any, make_router: Any
) -> None:
    # Sonnet 5.5 refuses a manual budget (a 400 before): the router sends adaptive instead.
    budget = {**step("sonnet"), "thinking": {"type": "enabled", "budgetTokens": 2048}}
    router = make_router(current_models(emu, [route("review", [budget], counterfactual="sonnet")]))
    message = sdk(router).messages.create(
        model="tierwise/review", max_tokens=8000, messages=user("q")
    )
    assert message.type == "message"
    assert emu.recorded_requests()[-1].body["thinking"] == {"type": "adaptive"}


def test_a_step_effort_the_model_refuses_is_the_apis_400(emu: Any, make_router: Any) -> None:
    import anthropic

    bad = {**step("haiku"), "effort": "max"}  # Haiku 4.5 has no effort parameter
    tiers = {"haiku": tier("claude-haiku-4-5", emu.base_url, name="haiku")}
    routes = [route("review", [bad], counterfactual=None)]
    router = make_router(config(emu.base_url, routes, tiers=tiers, default_route=None))
    with pytest.raises(anthropic.BadRequestError) as info:
        sdk(router).messages.create(model="tierwise/review", max_tokens=8000, messages=user("q"))
    assert "effort" in str(info.value)


RESPONSE_CACHE = {
    "enabled": True,
    "ttlSeconds": 300,
    "maxEntries": 100,
    "backend": "memory",
    "redisURL": None,
    "allowNonDeterministic": False,
}


@pytest.mark.parametrize(
    ("mode", "header", "hits"),
    [
        ("always", None, 1),  # a classification route: every exact repeat
        ("never", None, 0),  # chat: never
        ("never", "allow", 0),  # ... not even when the client asks
        ("auto", None, 0),  # current models refuse temperature: nothing is deterministic
        ("auto", "allow", 1),  # ... unless the client opts in
        ("always", "bypass", 0),  # the client can always opt out
    ],
)
def test_route_response_cache_modes(
    emu: Any, make_router: Any, mode: str, header: str | None, hits: int
) -> None:
    routes = [
        {**route("classify", [step("sonnet")], counterfactual="sonnet"), "responseCache": mode}
    ]
    router = make_router(current_models(emu, routes, response_cache=RESPONSE_CACHE))
    emu.script(SONNET, [{"text": SURE}] * 2)
    headers = {"x-tierwise-cache": header} if header else {}
    statuses = []
    for _ in range(2):
        raw = sdk(router).messages.with_raw_response.create(
            model="tierwise/classify", max_tokens=100, messages=user("same"), extra_headers=headers
        )
        statuses.append(raw.headers.get("x-tierwise-cache"))
    assert statuses.count("hit") == hits
    assert len(emu.recorded_requests()) == 2 - hits
