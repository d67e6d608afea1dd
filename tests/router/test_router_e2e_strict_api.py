"""What the strict emulator exposed: the router must send only requests the API accepts,
stop retrying what waiting cannot fix, match batch results by custom_id, and price what
the API bills (thinking, the tool-use system prompt, server tools)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anthropic
import pytest
from router_builder import HAIKU_MODEL, SONNET_MODEL, config, route, step, tier, triage_route
from router_helpers import raw_request, recorded_cost, sdk, sse_comments, user

from tierwise.pricing import Usage, catalog_prices, cost_usd

pytestmark = pytest.mark.timeout(60)

GOOD = '{"label": "bug", "confidence": 0.93}'


def triage_doc(endpoint: str) -> dict[str, Any]:
    return config(endpoint, routes=[triage_route()], default_route="triage")


def test_thinking_budget_above_a_step_cap_stays_valid(emu: Any, make_router: Any) -> None:
    router = make_router(triage_doc(emu.base_url))
    emu.script(HAIKU_MODEL, [{"text": GOOD}])
    message = sdk(router).messages.create(
        model="tierwise/triage",
        max_tokens=4000,
        thinking={"type": "enabled", "budget_tokens": 2000},
        messages=user("my invoice is wrong"),
    )
    assert message.content[0].type == "thinking"
    sent = emu.recorded_requests(model=HAIKU_MODEL)[-1].body
    # The 256-token cap bounds the answer; the client's thinking budget comes on top.
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2000}
    assert sent["max_tokens"] == 2000 + 256
    assert message.usage.output_tokens_details.thinking_tokens == 2000


def test_tier_output_limit_below_the_budget_lowers_it(emu: Any, make_router: Any) -> None:
    doc = config(
        emu.base_url,
        routes=[route("small", [step("haiku", 256)], counterfactual=None)],
        default_route="small",
        tiers={
            "haiku": tier(HAIKU_MODEL, emu.base_url, name="haiku", max_output_tokens=3000),
            "sonnet": tier(SONNET_MODEL, emu.base_url, name="sonnet"),
        },
    )
    router = make_router(doc)
    message = sdk(router).messages.create(
        model="tierwise/small",
        max_tokens=8000,
        thinking={"type": "enabled", "budget_tokens": 6000},
        messages=user("hello"),
    )
    sent = emu.recorded_requests(model=HAIKU_MODEL)[-1].body
    assert sent["max_tokens"] == 3000 and sent["thinking"]["budget_tokens"] == 1500
    assert message.stop_reason in ("end_turn", "max_tokens")


def test_spend_limit_429_is_not_retried(emu: Any, make_router: Any) -> None:
    router = make_router(triage_doc(emu.base_url))
    emu.script(HAIKU_MODEL, [{"spend_limit": True}, {"text": GOOD}])
    with pytest.raises(anthropic.RateLimitError) as failure:
        sdk(router).messages.create(
            model="tierwise/triage", max_tokens=100, messages=user("my invoice is wrong")
        )
    assert "limit" in failure.value.message
    # One attempt only: a 429 without retry-after is not worth waiting for.
    assert len(emu.recorded_requests(model=HAIKU_MODEL)) == 1


def test_rate_limit_429_with_retry_after_is_retried(emu: Any, make_router: Any) -> None:
    router = make_router(triage_doc(emu.base_url))
    emu.script(HAIKU_MODEL, [{"error": 429, "retry_after": 0}, {"text": GOOD}])
    message = sdk(router).messages.create(
        model="tierwise/triage", max_tokens=100, messages=user("my invoice is wrong")
    )
    assert message.content[0].text == GOOD
    assert len(emu.recorded_requests(model=HAIKU_MODEL)) == 2


def test_thinking_and_tool_prompt_tokens_are_priced(emu: Any, make_router: Any) -> None:
    router = make_router(triage_doc(emu.base_url))
    emu.script(HAIKU_MODEL, [{"text": GOOD}])
    raw = sdk(router).messages.with_raw_response.create(
        model="tierwise/triage",
        max_tokens=4000,
        thinking={"type": "enabled", "budget_tokens": 1500},
        tools=[{"name": "lookup", "input_schema": {"type": "object"}}],
        messages=user("my invoice is wrong"),
    )
    message = raw.parse()
    usage = Usage.from_anthropic(message.usage)
    assert usage.thinking_tokens == 1500 and usage.output_tokens > 1500
    assert usage.input_tokens > 346  # the hidden tool-use system prompt is billed input
    prices = catalog_prices(HAIKU_MODEL)
    expected = cost_usd(usage, prices)  # type: ignore[arg-type]
    assert Decimal(raw.headers["x-tierwise-cost-usd"]) == expected
    assert recorded_cost(emu.recorded_requests(model=HAIKU_MODEL)) == expected


def test_batch_results_reach_the_client_matched_by_custom_id(emu: Any, make_router: Any) -> None:
    doc = config(
        emu.base_url,
        routes=[route("nightly", [step("haiku", 64)], mode="batch")],
        default_route="nightly",
    )
    router = make_router(doc)
    client = sdk(router)
    requests = [
        {
            "custom_id": f"item-{i:02d}",
            "params": {
                "model": "tierwise/nightly",
                "max_tokens": 100,
                "messages": [{"role": "user", "content": f"question number {i}"}],
            },
        }
        for i in range(12)
    ]
    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    results = list(client.messages.batches.results(batch.id))
    order = [r.custom_id for r in results]
    assert order != sorted(order)  # the API returns results in any order
    by_id = {r.custom_id: r.result for r in results}
    for i in range(12):
        answer = by_id[f"item-{i:02d}"].message.content[0].text
        assert f"question number {i}" in answer


def test_live_thinking_stream_is_priced_in_full(emu: Any, make_router: Any) -> None:
    doc = config(emu.base_url, routes=[route("triage", [step("sonnet", 512)])])
    router = make_router(doc)
    body = {
        "model": "tierwise/triage",
        "max_tokens": 4000,
        "stream": True,
        "thinking": {"type": "enabled", "budget_tokens": 3000},
        "messages": user("think, then answer"),
    }
    status, _headers, raw = raw_request(router.base_url, "/v1/messages", body)
    assert status == 200
    assert b'"thinking_delta"' in raw and b'"signature_delta"' in raw
    (comment,) = sse_comments(raw)
    (record,) = emu.recorded_requests(model=SONNET_MODEL)
    assert record.body["max_tokens"] == 3000 + 512  # the budget plus the step's answer cap
    assert record.usage["output_tokens_details"]["thinking_tokens"] == 3000
    # The stream's cost covers every billed thinking token, not the short summary shown.
    assert Decimal(comment.split(": ")[1]) == recorded_cost([record])


def test_synthesized_stream_keeps_thinking_and_billing_details(emu: Any, make_router: Any) -> None:
    router = make_router(triage_doc(emu.base_url))
    emu.script(HAIKU_MODEL, [{"text": GOOD}])
    with sdk(router).messages.stream(
        model="tierwise/triage",
        max_tokens=4000,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=user("my invoice is wrong"),
    ) as stream:
        final = stream.get_final_message()
    # Haiku's answer was accepted and replayed as a stream: nothing of the bill is lost.
    assert final.content[0].type == "thinking" and final.content[0].signature
    assert final.usage.output_tokens_details.thinking_tokens == 1024
