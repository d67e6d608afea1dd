"""Input budgets end to end: the official SDK, the router, the emulator's count_tokens."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anthropic
import pytest
from router_builder import config, route, step, tier
from router_helpers import metric, metrics, sdk
from test_router_budget_unit import conversation

from tierwise.pricing import catalog_prices

pytestmark = pytest.mark.timeout(60)

SONNET = "claude-sonnet-5-5"


def budget_router(emu: Any, make_router: Any, budget: int, on_exceed: str) -> Any:
    routes = [
        {
            **route("agent", [step("sonnet")], counterfactual="sonnet"),
            "inputBudget": {"maxInputTokens": budget, "onExceed": on_exceed},
        }
    ]
    tiers = {"sonnet": tier(SONNET, emu.base_url, name="sonnet")}
    return make_router(config(emu.base_url, routes, tiers=tiers, default_route=None))


def counted(client: anthropic.Anthropic, body: dict[str, Any]) -> int:
    fields = {k: body[k] for k in ("system", "tools", "messages")}
    return client.messages.count_tokens(model="tierwise/agent", **fields).input_tokens


def send(router: Any, body: dict[str, Any]) -> Any:
    fields = {k: body[k] for k in ("system", "tools", "messages")}
    return sdk(router).messages.with_raw_response.create(
        model="tierwise/agent", max_tokens=100, **fields
    )


def test_within_budget_is_sent_unchanged(emu: Any, make_router: Any) -> None:
    body = conversation()
    router = budget_router(emu, make_router, 1_000_000, "reject")
    raw = send(router, body)
    assert "x-tierwise-input-trimmed-tokens" not in raw.headers
    assert emu.recorded_requests()[-1].body["messages"] == body["messages"]
    samples = metrics(router.metrics_url)
    assert (
        metric(
            samples, "tierwise_router_input_budget_total", result="within", counted="count_tokens"
        )
        == 1
    )


def test_reject_is_the_apis_400_with_the_count_and_the_budget(emu: Any, make_router: Any) -> None:
    body = conversation()
    router = budget_router(emu, make_router, 500, "reject")
    tokens = counted(sdk(router), body)  # the router's count_tokens: the same number
    with pytest.raises(anthropic.BadRequestError) as info:
        send(router, body)
    error = info.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"prompt is too long: {tokens} tokens > 500 maximum")
    assert not [r for r in emu.recorded_requests() if r.path == "/v1/messages"]
    samples = metrics(router.metrics_url)
    assert metric(samples, "tierwise_router_input_budget_total", result="rejected") == 1


@pytest.mark.parametrize("strategy", ["dropOldestTurns", "truncateToolResults"])
def test_trimming_strategies_fit_the_budget_and_count_the_saving(
    emu: Any, make_router: Any, strategy: str
) -> None:
    body = conversation()
    router = budget_router(emu, make_router, 1, "reject")
    total = counted(sdk(router), body)
    budget = total - 400
    router = budget_router(emu, make_router, budget, strategy)
    raw = send(router, body)
    message = raw.parse()
    assert message.type == "message" and message.content[0].type == "text"
    trimmed = int(raw.headers["x-tierwise-input-trimmed-tokens"])
    assert trimmed >= 400

    sent = [r for r in emu.recorded_requests() if r.path == "/v1/messages"][-1].body
    assert sent["system"] == body["system"] and sent["tools"] == body["tools"]
    assert sent["messages"][-1] == body["messages"][-1]
    assert message.usage.input_tokens <= budget and message.usage.input_tokens == total - trimmed
    if strategy == "dropOldestTurns":
        assert sent["messages"] == body["messages"][4:]
    else:
        assert len(sent["messages"]) == len(body["messages"])
        assert "were cut to fit the input budget" in str(sent["messages"][2])

    samples = metrics(router.metrics_url)
    assert metric(samples, "tierwise_router_input_budget_total", result="trimmed") == 1
    assert metric(samples, "tierwise_router_input_trimmed_tokens_total") == trimmed
    rate = catalog_prices(SONNET).rates.input  # type: ignore[union-attr]
    assert metric(samples, "tierwise_router_input_trim_saved_usd_total") == pytest.approx(
        float(Decimal(trimmed) * rate / 1_000_000)
    )


def test_a_prompt_that_cannot_be_trimmed_enough_is_rejected(emu: Any, make_router: Any) -> None:
    body = conversation()
    router = budget_router(emu, make_router, 50, "dropOldestTurns")
    with pytest.raises(anthropic.BadRequestError) as info:
        send(router, body)
    assert "> 50 maximum" in info.value.body["error"]["message"]  # type: ignore[index]
