"""Point 15: today's API across a cascade, against the emulator that enforces the same rules.

Rules and their sources (read 2026-12-06, recorded in docs/router.md "Across tiers"): on the
5.5 models and Claude Fable 5.1 thinking cannot be turned off or budgeted, forced tool use
is a 400, and thinking blocks are tied to the model that wrote them; a refusal carries a
``stop_details.category``; a server-side fallback reports ``usage.iterations``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import anthropic
import pytest
from recording_upstream import Answer, recording_upstream
from router_builder import TIER_KEYS, config, route, step, tier, with_hash
from router_helpers import metric, metrics, raw_request, sdk, sse_comments, until_ended, user

from tierwise.pricing import Usage, catalog_prices, cost_usd, format_usd

pytestmark = pytest.mark.timeout(60)

HAIKU_45, HAIKU_55, OPUS_55, FABLE = (
    "claude-haiku-4-5",
    "claude-haiku-5-5",
    "claude-opus-5-5",
    "claude-fable-5-1",
)
TOOLS = [{"name": "lookup", "description": "Look up an order", "input_schema": {"type": "object"}}]
REFUSAL = {
    "stop_reason": "refusal",
    "stop_details": {"type": "refusal", "category": "cyber", "explanation": "declined"},
}


def two_tiers(endpoint: str, cheap: str, strong: str, **options: Any) -> dict[str, Any]:
    tiers = {
        "cheap": tier(cheap, endpoint, name="haiku"),
        "strong": tier(strong, endpoint, name="opus"),
    }
    routes = [route("agent", [step("cheap"), step("strong")], counterfactual=None)]
    return config(endpoint, routes, tiers=tiers, default_route=None, **options)


def cheap_with_fallback(endpoint: str) -> dict[str, Any]:
    """One step on Haiku 4.5, falling back (on 529) to Opus 5.5."""
    doc = two_tiers(endpoint, HAIKU_45, OPUS_55, fallback={"tier": "strong", "on": ["overloaded"]})
    doc["routes"][0]["steps"] = [step("cheap")]
    return with_hash(doc)


def direct(emu: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=emu.base_url, api_key=TIER_KEYS["opus"], max_retries=0)


def sent_to(emu: Any, model: str) -> list[dict[str, Any]]:
    return [r.body for r in emu.recorded_requests(model=model) if r.path == "/v1/messages"]


def test_point15_the_emulator_refuses_what_the_adaptive_only_models_refuse(emu: Any) -> None:
    client = direct(emu)
    for model in (OPUS_55, FABLE):
        for thinking in ({"type": "disabled"}, {"type": "enabled", "budget_tokens": 2048}):
            with pytest.raises(anthropic.BadRequestError, match="is not supported for this model"):
                client.messages.create(
                    model=model, max_tokens=4096, thinking=thinking, messages=user("x")
                )
        with pytest.raises(anthropic.BadRequestError, match=r"tool_choice\.type"):
            client.messages.create(
                model=model,
                max_tokens=100,
                tools=TOOLS,
                tool_choice={"type": "any"},
                messages=user("x"),
            )
    # Thinking still works when left to the model, and older models accept what 5.5 refuses.
    assert client.messages.create(model=OPUS_55, max_tokens=100, messages=user("x")).content
    client.messages.create(
        model=HAIKU_45, max_tokens=100, thinking={"type": "disabled"}, messages=user("x")
    )


def test_point15_a_step_onto_an_adaptive_only_model_is_adapted_not_a_400(
    emu: Any, make_router: Any
) -> None:
    router = make_router(two_tiers(emu.base_url, HAIKU_45, OPUS_55))
    emu.script(HAIKU_45, [REFUSAL])  # the cheap tier declines: the cascade escalates
    raw = sdk(router).messages.with_raw_response.create(
        model="tierwise/agent",
        max_tokens=4096,
        thinking={"type": "disabled"},
        tools=TOOLS,
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        messages=user("look up order 7"),
    )
    assert raw.headers["x-tierwise-tier"] == "strong"
    assert raw.parse().type == "message"
    cheap, strong = sent_to(emu, HAIKU_45)[-1], sent_to(emu, OPUS_55)[-1]
    assert cheap["thinking"] == {"type": "disabled"} and cheap["tool_choice"]["type"] == "any"
    assert "thinking" not in strong  # adaptive, the model's default
    assert strong["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_point15_a_fallback_onto_an_adaptive_only_model_is_adapted(
    emu: Any, make_router: Any
) -> None:
    router = make_router(cheap_with_fallback(emu.base_url))
    emu.script(HAIKU_45, [{"error": 529}] * 3)
    message = sdk(router).messages.create(
        model="tierwise/agent",
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 2048, "display": "omitted"},
        messages=user("x"),
    )
    assert message.type == "message"
    assert sent_to(emu, OPUS_55)[-1]["thinking"] == {"type": "adaptive", "display": "omitted"}


def test_point15_thinking_blocks_another_tier_wrote_are_stripped_by_rule(
    emu: Any, make_router: Any
) -> None:
    first = direct(emu).messages.create(
        model=HAIKU_55,
        max_tokens=16_000,
        thinking={"type": "adaptive"},
        output_config={"effort": "low"},
        messages=user("q1"),
    )
    assert [b.type for b in first.content] == ["thinking", "text"]
    convo = [
        *user("q1"),
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        *user("q2"),
    ]
    # The emulator, like the API, refuses Haiku 5.5's thinking on Opus 5.5 ...
    with pytest.raises(anthropic.BadRequestError, match="bound to a different model"):
        direct(emu).messages.create(model=OPUS_55, max_tokens=100, messages=convo)
    # ... and a cascade Haiku 5.5 -> Opus 5.5 sends the conversation without them.
    router = make_router(two_tiers(emu.base_url, HAIKU_55, OPUS_55))
    emu.script(HAIKU_55, [REFUSAL])
    raw = sdk(router).messages.with_raw_response.create(
        model="tierwise/agent", max_tokens=4096, messages=convo
    )
    assert raw.headers["x-tierwise-tier"] == "strong"
    history = sent_to(emu, OPUS_55)[-1]["messages"][1]["content"]
    assert history == [first.content[1].model_dump()]  # the text kept, the thinking gone


def test_point15_a_refusal_escalates_with_its_category_without_a_signal(
    emu: Any, make_router: Any
) -> None:
    router = make_router(two_tiers(emu.base_url, HAIKU_45, OPUS_55))  # no escalation signals
    emu.script(HAIKU_45, [REFUSAL])
    raw = sdk(router).messages.with_raw_response.create(
        model="tierwise/agent", max_tokens=100, messages=user("x")
    )
    assert (
        raw.headers["x-tierwise-tier"] == "strong" and raw.headers["x-tierwise-escalations"] == "1"
    )
    samples = metrics(router.metrics_url)
    assert metric(samples, "tierwise_router_escalations_total", reason="refusal:cyber") == 1


def test_point15_a_refusal_on_the_last_step_falls_back_to_another_model(
    emu: Any, make_router: Any
) -> None:
    router = make_router(cheap_with_fallback(emu.base_url))
    emu.script(HAIKU_45, [REFUSAL])
    raw = sdk(router).messages.with_raw_response.create(
        model="tierwise/agent", max_tokens=100, messages=user("x")
    )
    assert raw.headers["x-tierwise-tier"] == "strong"
    assert raw.parse().stop_reason != "refusal"
    assert len(sent_to(emu, HAIKU_45)) == 1 and len(sent_to(emu, OPUS_55)) == 1


def served(model: str, usage: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
    ).encode()


def price(model: str, **tokens: int) -> Decimal:
    return cost_usd(Usage(**tokens), catalog_prices(model))  # type: ignore[arg-type]


def test_point15_a_server_side_fallback_is_priced_per_iteration_at_each_models_rates(
    make_router: Any,
) -> None:
    iterations = {
        "input_tokens": 1000,
        "output_tokens": 100,
        "iterations": [
            {"type": "message", "model": FABLE, "input_tokens": 1000, "output_tokens": 0},
            {
                "type": "fallback_message",
                "model": OPUS_55,
                "input_tokens": 1000,
                "output_tokens": 100,
            },
        ],
    }
    with recording_upstream(Answer(body=served(OPUS_55, iterations))) as up:
        tiers = {"fable": tier(FABLE, up.base_url, name="haiku")}
        routes = [route("agent", [step("fable")], counterfactual=None)]
        router = make_router(config(up.base_url, routes, tiers=tiers, default_route=None))
        raw = sdk(router).messages.with_raw_response.create(
            model="tierwise/agent", max_tokens=100, messages=user("x")
        )
        expected = price(FABLE, input_tokens=1000) + price(
            OPUS_55, input_tokens=1000, output_tokens=100
        )
        assert raw.headers["x-tierwise-cost-usd"] == format_usd(expected)
        # Without iterations, an answer served by another model is priced at its rates.
        up.answers = [Answer(body=served(OPUS_55, {"input_tokens": 1000, "output_tokens": 100}))]
        raw = sdk(router).messages.with_raw_response.create(
            model="tierwise/agent", max_tokens=100, messages=user("x")
        )
        assert raw.headers["x-tierwise-cost-usd"] == format_usd(
            price(OPUS_55, input_tokens=1000, output_tokens=100)
        )


def sse(*events: tuple[str, dict[str, Any]]) -> bytes:
    return b"".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events
    )


def test_point15_a_live_stream_served_by_a_fallback_model_is_priced_per_iteration(
    make_router: Any,
) -> None:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": OPUS_55,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 1000, "output_tokens": 1},
        },
    }
    usage = {
        "input_tokens": 1000,
        "output_tokens": 100,
        "iterations": [
            {"model": FABLE, "input_tokens": 1000, "output_tokens": 0},
            {"model": OPUS_55, "input_tokens": 1000, "output_tokens": 100},
        ],
    }
    body = sse(
        ("message_start", start),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "ok"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "usage": usage,
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    )
    with recording_upstream(Answer(body=body, content_type="text/event-stream")) as up:
        tiers = {"fable": tier(FABLE, up.base_url, name="haiku")}
        routes = [route("agent", [step("fable")], counterfactual=None)]
        router = make_router(config(up.base_url, routes, tiers=tiers, default_route=None))
        status, _headers, raw = raw_request(
            router.base_url,
            "/v1/messages",
            {"model": "tierwise/agent", "max_tokens": 100, "stream": True, "messages": user("x")},
        )
    assert status == 200
    expected = price(FABLE, input_tokens=1000) + price(
        OPUS_55, input_tokens=1000, output_tokens=100
    )
    assert sse_comments(raw) == [f"x-tierwise-cost-usd: {format_usd(expected)}"]


def test_point15_batch_items_drop_thinking_blocks_another_tier_wrote(
    emu: Any, make_router: Any
) -> None:
    # The batch cascade builds its step requests as the synchronous path does: a conversation
    # carrying Haiku 5.5's thinking reaches Opus 5.5 without it, not as an errored item.
    first = direct(emu).messages.create(
        model=HAIKU_55,
        max_tokens=16_000,
        thinking={"type": "adaptive"},
        output_config={"effort": "low"},
        messages=user("q1"),
    )
    convo = [
        *user("q1"),
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        *user("q2"),
    ]
    doc = two_tiers(emu.base_url, OPUS_55, HAIKU_55)
    doc["routes"][0]["mode"] = "batch"
    client = sdk(make_router(doc))
    batch = client.messages.batches.create(
        requests=[
            {
                "custom_id": "a",
                "params": {"model": "tierwise/agent", "max_tokens": 4096, "messages": convo},
            }
        ]  # type: ignore[list-item]
    )
    until_ended(client, batch.id)
    (result,) = list(client.messages.batches.results(batch.id))
    assert result.result.type == "succeeded", result.result
    assert result.result.message.model == OPUS_55
