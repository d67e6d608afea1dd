"""Stop reasons, errors, rate limits, usage fields, tool-use tokens and batches."""

from __future__ import annotations

import json

import anthropic
import pytest
from conformance_docs import (
    BATCHES,
    DATA_RESIDENCY,
    ERRORS,
    RATE_LIMITS,
    STOP_REASONS,
    TOOL_USE,
    follows,
)
from emulator_helpers import API_KEY, HAIKU, SONNET, raw_request, user

from tierwise.emulator import EmulatorConfig, EmulatorThread, ModelProfile, RateLimits
from tierwise.emulator.ratelimit import RateLimiter

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]


@follows(STOP_REASONS, "model_context_window_exceeded instead of a 400 on newer models")
def test_context_window_exceeded_is_a_stop_reason() -> None:
    small = ModelProfile(name="tiny-window", context_window=1000, max_output_tokens=900)
    with EmulatorThread(EmulatorConfig(zero_latency=True, profiles={"tiny-window": small})) as emu:
        client = anthropic.Anthropic(base_url=emu.base_url, api_key=API_KEY, max_retries=0)
        prompt = "x" * 2000  # ~500 tokens: 500 + 900 > 1000, but the prompt fits
        message = client.messages.create(
            model="tiny-window", max_tokens=900, messages=user(prompt + " [[emulator:long]]")
        )
        assert message.stop_reason == "model_context_window_exceeded"
        room = 1000 - (message.usage.input_tokens)
        assert message.usage.output_tokens == room
        with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
            client.messages.create(model="tiny-window", max_tokens=10, messages=user("y" * 5000))


@follows(STOP_REASONS, "pause_turn and refusal (with stop_details) are possible stop reasons")
def test_scripted_pause_turn_and_refusal_details(
    emu: EmulatorThread, client: anthropic.Anthropic
) -> None:
    emu.script(
        SONNET,
        [
            {"text": "searching", "stop_reason": "pause_turn"},
            {
                "text": "",
                "stop_reason": "refusal",
                "stop_details": {"type": "refusal", "category": "cyber", "explanation": "no"},
            },
        ],
    )
    paused = client.messages.create(model=SONNET, max_tokens=50, messages=user("go"))
    assert paused.stop_reason == "pause_turn" and paused.stop_details is None
    refused = client.messages.create(model=SONNET, max_tokens=50, messages=user("go"))
    assert refused.stop_reason == "refusal"
    assert refused.stop_details.category == "cyber"
    marker = client.messages.create(
        model=SONNET, max_tokens=50, messages=user("[[emulator:refusal]]")
    )
    assert marker.stop_details is not None and marker.stop_details.type == "refusal"


@follows(ERRORS, "413 request_too_large is a JSON error with a request id")
def test_oversized_body_is_a_json_413(emu: EmulatorThread) -> None:
    huge = json.dumps({"model": HAIKU, "max_tokens": 5, "messages": user("x" * (33 * 2**20))})
    status, headers, raw = raw_request(emu.base_url, "/v1/messages", data=huge.encode())
    assert status == 413
    doc = json.loads(raw)
    assert doc["error"]["type"] == "request_too_large"
    assert doc["request_id"].startswith("req_") and headers["request-id"] == doc["request_id"]


@follows(ERRORS, "429 rate_limit_error: retry-after on rate limits, none on spend limits")
def test_rate_limit_and_spend_limit_429s(emu: EmulatorThread, client: anthropic.Anthropic) -> None:
    emu.script(HAIKU, [{"error": 429}, {"spend_limit": True}, {"error": 429, "retry_after": None}])
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model=HAIKU, max_tokens=5, messages=user("a"))
    assert limited.value.response.headers.get("retry-after") == "1"
    with pytest.raises(anthropic.RateLimitError) as capped:
        client.messages.create(model=HAIKU, max_tokens=5, messages=user("b"))
    assert "retry-after" not in capped.value.response.headers
    assert "limit" in capped.value.message
    with pytest.raises(anthropic.RateLimitError) as bare:
        client.messages.create(model=HAIKU, max_tokens=5, messages=user("c"))
    assert "retry-after" not in bare.value.response.headers


@follows(RATE_LIMITS, "token bucket: capacity replenishes continuously, not at a window edge")
def test_rate_limits_refill_continuously() -> None:
    now = [1_000_000.0]
    limiter = RateLimiter(RateLimits(requests_per_minute=60), wall_clock=lambda: now[0])
    for _ in range(60):
        limiter.record(HAIKU, 10, 10)
    assert limiter.headers(HAIKU)["anthropic-ratelimit-requests-remaining"] == "0"
    assert limiter.retry_after(HAIKU) is not None
    now[0] += 10.0  # a sixth of a minute later, a sixth of the capacity is back
    assert limiter.headers(HAIKU)["anthropic-ratelimit-requests-remaining"] == "10"
    assert limiter.retry_after(HAIKU) is None


@follows(RATE_LIMITS, "cache_read_input_tokens do not count toward input-token limits")
def test_cache_reads_are_not_rate_limited(emu: EmulatorThread) -> None:
    system = [{"type": "text", "text": "policy " * 1500, "cache_control": {"type": "ephemeral"}}]
    req = {"model": SONNET, "max_tokens": 5, "system": system, "messages": user("q")}

    def remaining() -> int:
        status, headers, _raw = raw_request(emu.base_url, "/v1/messages", req)
        assert status == 200
        return int(headers["anthropic-ratelimit-input-tokens-remaining"])

    first = remaining()
    second = remaining()  # reads ~1,500 cached tokens, pays for a handful of input tokens
    assert first - second < 100


@follows(DATA_RESIDENCY, "inference_geo: Opus/Sonnet 4.6 and later; usage says where it ran")
def test_usage_billing_fields(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=SONNET,
        max_tokens=20,
        messages=user("search"),
        tools=[{"type": "web_search_20250305", "name": "web_search"}],
    )
    usage = message.usage
    assert usage.service_tier == "standard"
    assert usage.server_tool_use is not None and usage.server_tool_use.web_search_requests == 0
    assert usage.inference_geo is None  # 4.5 models predate data residency
    newer = client.messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=user("x"))
    assert newer.usage.inference_geo == "global"
    us = client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=5,
        messages=user("x"),
        extra_body={"inference_geo": "us"},
    )
    assert us.usage.inference_geo == "us"
    with pytest.raises(anthropic.BadRequestError, match="inference_geo"):
        client.messages.create(
            model=SONNET, max_tokens=5, messages=user("x"), extra_body={"inference_geo": "us"}
        )


@follows(TOOL_USE, "tools add a hidden system prompt: 346 tokens (auto/none), 313 (any/tool)")
def test_tool_use_system_prompt_tokens(client: anthropic.Anthropic) -> None:
    tools = [{"name": "lookup", "input_schema": {"type": "object"}}]
    plain = client.messages.create(model=HAIKU, max_tokens=5, messages=user("hi"))
    auto = client.messages.create(model=HAIKU, max_tokens=5, messages=user("hi"), tools=tools)
    forced = client.messages.create(
        model=HAIKU,
        max_tokens=5,
        messages=user("hi"),
        tools=tools,
        tool_choice={"type": "any"},
    )
    tool_json = (len('{"input_schema":{"type":"object"},"name":"lookup"}') + 3) // 4
    assert auto.usage.input_tokens == plain.usage.input_tokens + 346 + tool_json
    assert forced.usage.input_tokens == plain.usage.input_tokens + 313 + tool_json
    counted = client.messages.count_tokens(model=HAIKU, messages=user("hi"), tools=tools)
    assert counted.input_tokens == auto.usage.input_tokens


@follows(BATCHES, "results may come in any order: match them by custom_id")
def test_batch_results_are_not_in_input_order(client: anthropic.Anthropic) -> None:
    requests = [
        {
            "custom_id": f"item-{n:02d}",
            "params": {"model": HAIKU, "max_tokens": 5, "messages": user(f"q{n}")},
        }
        for n in range(12)
    ]
    batch = client.messages.batches.create(requests=requests)
    order = [r.custom_id for r in client.messages.batches.results(batch.id)]
    assert sorted(order) == [r["custom_id"] for r in requests]
    assert order != sorted(order)


@follows(BATCHES, "cancel: canceling until in-flight work stops; finished items keep results")
def test_batch_cancel_keeps_finished_items() -> None:
    config = EmulatorConfig(zero_latency=True, batch_processing_seconds=100)
    with EmulatorThread(config) as emu:
        client = anthropic.Anthropic(base_url=emu.base_url, api_key=API_KEY, max_retries=0)
        requests = [
            {
                "custom_id": f"i{n}",
                "params": {"model": HAIKU, "max_tokens": 5, "messages": user("q")},
            }
            for n in range(4)
        ]
        batch = client.messages.batches.create(requests=requests)
        emu.advance_clock(55)  # two of four items have landed
        assert client.messages.batches.cancel(batch.id).processing_status == "canceling"
        emu.advance_clock(5)
        ended = client.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended"
        assert (ended.request_counts.succeeded, ended.request_counts.canceled) == (2, 2)


@follows(BATCHES, "a batch not finished within 24 hours expires its remaining requests")
def test_batch_expires_after_24_hours() -> None:
    config = EmulatorConfig(zero_latency=True, batch_processing_seconds=48 * 3600)
    with EmulatorThread(config) as emu:
        client = anthropic.Anthropic(base_url=emu.base_url, api_key=API_KEY, max_retries=0)
        requests = [
            {
                "custom_id": f"i{n}",
                "params": {"model": HAIKU, "max_tokens": 5, "messages": user("q")},
            }
            for n in range(4)
        ]
        batch = client.messages.batches.create(requests=requests)
        emu.advance_clock(24 * 3600 + 1)
        ended = client.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended"
        assert (ended.request_counts.succeeded, ended.request_counts.expired) == (2, 2)
        kinds = {r.result.type for r in client.messages.batches.results(batch.id)}
        assert kinds == {"succeeded", "expired"}
