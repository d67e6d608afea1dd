"""The Messages API through the real SDK: shapes, streaming, count_tokens, headers."""

from __future__ import annotations

import anthropic
import pytest
from emulator_helpers import API_KEY, HAIKU, SONNET, raw_request, sse_events, user

from tierwise.emulator import Emulator, EmulatorThread

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]


def test_create_parses_with_every_usage_field(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=HAIKU, max_tokens=100, messages=user("Hello, who are you?")
    )
    assert message.id.startswith("msg_")
    assert message.type == "message" and message.role == "assistant"
    assert message.model == HAIKU
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.content[0].type == "text"
    assert "Hello, who are you?" in message.content[0].text
    usage = message.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_5m_input_tokens == 0
    assert usage.cache_creation.ephemeral_1h_input_tokens == 0
    assert usage.service_tier == "standard"


def test_dated_model_ids_are_accepted_and_echoed(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="claude-sonnet-4-5-20250929", max_tokens=50, messages=user("hi")
    )
    assert message.model == "claude-sonnet-4-5-20250929"
    assert "claude-sonnet-4-5" in message.content[0].text


def test_response_headers(client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(model=HAIKU, max_tokens=10, messages=user("hi"))
    headers = raw.headers
    assert headers["request-id"].startswith("req_")
    assert raw.request_id == headers["request-id"]
    for kind in ("requests", "tokens", "input-tokens", "output-tokens"):
        assert int(headers[f"anthropic-ratelimit-{kind}-limit"]) > 0
        assert int(headers[f"anthropic-ratelimit-{kind}-remaining"]) >= 0
        assert headers[f"anthropic-ratelimit-{kind}-reset"].endswith("Z")
    second = client.messages.with_raw_response.create(
        model=HAIKU, max_tokens=10, messages=user("hi")
    )
    # Token buckets: each request takes one from a bucket that refills continuously, so
    # right after a request the bucket is below its capacity, and never above it.
    for response in (raw, second):
        limit = int(response.headers["anthropic-ratelimit-requests-limit"])
        assert int(response.headers["anthropic-ratelimit-requests-remaining"]) <= limit - 1
    assert raw.parse().usage.output_tokens > 0


def test_count_tokens_matches_the_usage_of_the_same_prompt(client: anthropic.Anthropic) -> None:
    kwargs = {
        "model": SONNET,
        "system": "You are a terse assistant.",
        "messages": [
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": [{"type": "text", "text": "And 3 + 3?"}]},
        ],
    }
    counted = client.messages.count_tokens(**kwargs).input_tokens
    usage = client.messages.create(max_tokens=50, **kwargs).usage
    assert counted == usage.input_tokens > 0


def test_max_tokens_truncates_and_says_so(client: anthropic.Anthropic) -> None:
    short = client.messages.create(
        model=HAIKU, max_tokens=10, messages=user("[[emulator:tokens=50]]")
    )
    assert short.stop_reason == "max_tokens"
    assert short.usage.output_tokens == 10
    assert len(short.content[0].text) == 40
    full = client.messages.create(
        model=HAIKU, max_tokens=100, messages=user("[[emulator:tokens=50]]")
    )
    assert full.stop_reason == "end_turn"
    assert full.usage.output_tokens == 50


def test_long_answer_marker_hits_max_tokens(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=SONNET, max_tokens=1000, messages=user("[[emulator:long]]")
    )
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 1000


def test_stop_sequences(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=HAIKU, max_tokens=100, stop_sequences=["asked"], messages=user("anything")
    )
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "asked"
    assert "asked" not in message.content[0].text


def test_refusal_marker(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=HAIKU, max_tokens=100, messages=user("[[emulator:refusal]]")
    )
    assert message.stop_reason == "refusal"


def test_answers_are_deterministic(client: anthropic.Anthropic) -> None:
    first = client.messages.create(model=HAIKU, max_tokens=100, messages=user("same question"))
    second = client.messages.create(model=HAIKU, max_tokens=100, messages=user("same question"))
    assert first.content == second.content and first.id != second.id


def test_stream_event_sequence_and_final_message(client: anthropic.Anthropic) -> None:
    prompt = user("Stream me an answer that is long enough for a few deltas.")
    expected = client.messages.create(model=HAIKU, max_tokens=200, messages=prompt)
    events = list(client.messages.create(model=HAIKU, max_tokens=200, messages=prompt, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    deltas = [e for e in events if e.type == "content_block_delta"]
    assert len(deltas) >= 3 and set(kinds[2:-3]) == {"content_block_delta"}
    start = events[0].message
    assert start.content == [] and start.stop_reason is None
    assert start.usage.input_tokens == expected.usage.input_tokens
    assert start.usage.output_tokens == 1
    message_delta = events[-2]
    assert message_delta.delta.stop_reason == "end_turn"
    assert message_delta.usage.output_tokens == expected.usage.output_tokens
    assert "".join(d.delta.text for d in deltas) == expected.content[0].text

    with client.messages.stream(model=HAIKU, max_tokens=200, messages=prompt) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == expected.content[0].text
    assert final.content[0].text == expected.content[0].text
    assert final.usage.model_dump() == expected.usage.model_dump()
    assert final.stop_reason == "end_turn"


def test_stream_wire_format_has_ping_after_block_start(emu: EmulatorThread) -> None:
    status, headers, raw = raw_request(
        emu.base_url,
        "/v1/messages",
        {
            "model": HAIKU,
            "max_tokens": 5,
            "stream": True,
            "messages": user("[[emulator:tokens=20]]"),
        },
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["request-id"].startswith("req_")
    events = sse_events(raw)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-1] == "message_stop"
    assert all(name == data["type"] for name, data in events)
    delta = dict(events)["message_delta"]
    assert delta["delta"] == {
        "stop_reason": "max_tokens",
        "stop_sequence": None,
        "stop_details": None,
    }
    assert delta["usage"]["output_tokens"] == 5


async def test_async_client_create_and_stream(
    async_emu: Emulator, async_client: anthropic.AsyncAnthropic
) -> None:
    message = await async_client.messages.create(
        model=SONNET, max_tokens=64, messages=user("async hi")
    )
    assert message.stop_reason == "end_turn"
    async with async_client.messages.stream(
        model=SONNET, max_tokens=64, messages=user("async hi")
    ) as stream:
        chunks = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(chunks) == message.content[0].text == final.content[0].text
    counted = await async_client.messages.count_tokens(model=SONNET, messages=user("async hi"))
    assert counted.input_tokens == message.usage.input_tokens
    assert len(async_emu.recorded_requests(path="/v1/messages")) == 2


def test_requests_are_recorded_with_headers_and_body(
    emu: EmulatorThread, client: anthropic.Anthropic
) -> None:
    client.messages.create(model=HAIKU, max_tokens=77, messages=user("record me"))
    (entry,) = emu.recorded_requests(path="/v1/messages")
    # Recent SDKs send the key as a bearer token; either way it is recorded as api_key.
    assert entry.api_key == API_KEY
    assert API_KEY in (entry.headers.get("x-api-key"), entry.headers.get("authorization", "")[7:])
    assert entry.headers["anthropic-version"]
    assert entry.body["max_tokens"] == 77
    assert entry.model == HAIKU and entry.status == 200 and entry.completed
    assert entry.usage is not None and entry.usage["output_tokens"] > 0
    assert not entry.cancelled and not entry.stream
    assert emu.recorded_requests(model="claude-haiku-4-5-20251001") == [entry]
    assert emu.recorded_requests(model=SONNET) == []
