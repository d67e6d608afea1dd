"""Streaming: live pass-through, cascade + stream semantics, mid-stream errors, disconnects."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import anthropic
import pytest
from router_builder import HAIKU_MODEL, SONNET_MODEL, config, route, step, triage_route
from router_helpers import (
    CLIENT_KEY,
    metric,
    metrics,
    raw_request,
    recorded_cost,
    sdk,
    sse_comments,
    user,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)

GOOD = '{"label": "bug", "confidence": 0.93}'


def single(endpoint: str) -> dict[str, Any]:
    return config(endpoint, routes=[route("triage", [step("sonnet", 512)])])


def test_single_step_streams_live(emu: Any, make_router: Any) -> None:
    router = make_router(single(emu.base_url))
    emu.script(SONNET_MODEL, [{"text": "Hello there, this streams in pieces."}])
    with sdk(router).messages.stream(
        model="tierwise/triage", max_tokens=1000, messages=user("hi")
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        headers = stream.response.headers
    assert text == "Hello there, this streams in pieces."
    assert final.usage.output_tokens > 0
    assert headers["x-tierwise-tier"] == "sonnet"
    assert headers["x-tierwise-cache"] == "bypass"
    assert "x-tierwise-cost-usd" not in headers  # only known at the end of a live stream
    record = emu.recorded_requests()[0]
    assert record.body["stream"] is True and record.body["max_tokens"] == 512


def test_live_stream_ends_with_its_cost_as_an_sse_comment(emu: Any, make_router: Any) -> None:
    router = make_router(single(emu.base_url))
    emu.script(SONNET_MODEL, [{"text": "counted", "output_tokens": 40}])
    body = {"model": "tierwise/triage", "max_tokens": 100, "stream": True, "messages": user("x")}
    status, headers, raw = raw_request(router.base_url, "/v1/messages", body)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    (comment,) = sse_comments(raw)
    name, value = comment.split(": ")
    assert name == "x-tierwise-cost-usd"
    assert Decimal(value) == recorded_cost(emu.recorded_requests())
    assert raw.index(b"event: message_stop") < raw.index(b": x-tierwise-cost-usd")


def test_cascade_stream_accepted_early_step_is_synthesized(emu: Any, make_router: Any) -> None:
    router = make_router(config(emu.base_url))
    emu.script(HAIKU_MODEL, [{"text": GOOD}])
    with sdk(router).messages.stream(
        model="tierwise/triage", max_tokens=1000, messages=user("x")
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        headers = stream.response.headers
    assert text == GOOD
    assert headers["x-tierwise-tier"] == "haiku"
    assert headers["x-tierwise-escalations"] == "0"
    # The answer was known before streaming, so its cost is a header too.
    assert Decimal(headers["x-tierwise-cost-usd"]) == recorded_cost(emu.recorded_requests())
    assert final.usage.input_tokens == emu.recorded_requests()[0].usage["input_tokens"]
    (record,) = emu.recorded_requests()
    assert "stream" not in record.body  # earlier steps run buffered


def test_cascade_stream_escalated_streams_the_last_step_live(emu: Any, make_router: Any) -> None:
    router = make_router(config(emu.base_url))
    emu.script(HAIKU_MODEL, [{"text": "not json"}])
    emu.script(SONNET_MODEL, [{"text": GOOD}])
    with sdk(router).messages.stream(
        model="tierwise/triage", max_tokens=1000, messages=user("x")
    ) as stream:
        text = "".join(stream.text_stream)
        headers = stream.response.headers
    assert text == GOOD
    assert headers["x-tierwise-tier"] == "sonnet"
    assert headers["x-tierwise-escalations"] == "1"
    haiku, sonnet = emu.recorded_requests()
    assert "stream" not in haiku.body and sonnet.body["stream"] is True


def test_strongest_only_skips_the_cascade_when_streaming(emu: Any, make_router: Any) -> None:
    router = make_router(config(emu.base_url, routes=[triage_route(stream_policy="strongestOnly")]))
    emu.script(SONNET_MODEL, [{"text": GOOD}])
    with sdk(router).messages.stream(
        model="tierwise/triage", max_tokens=1000, messages=user("x")
    ) as stream:
        assert "".join(stream.text_stream) == GOOD
    assert [r.model for r in emu.recorded_requests()] == [SONNET_MODEL]
    # A non-streaming request on the same route still runs the cascade.
    emu.script(HAIKU_MODEL, [{"text": GOOD}])
    raw = sdk(router).messages.with_raw_response.create(
        model="tierwise/triage", max_tokens=1000, messages=user("x")
    )
    assert raw.headers["x-tierwise-tier"] == "haiku"


async def test_async_stream(emu: Any, make_router: Any) -> None:
    router = make_router(single(emu.base_url))
    emu.script(SONNET_MODEL, [{"text": "async words"}])
    async with (
        anthropic.AsyncAnthropic(
            base_url=router.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=15
        ) as client,
        client.messages.stream(
            model="tierwise/triage", max_tokens=100, messages=user("x")
        ) as stream,
    ):
        chunks = [t async for t in stream.text_stream]
    assert "".join(chunks) == "async words"


def test_mid_stream_upstream_error_reaches_the_client(emu: Any, make_router: Any) -> None:
    router = make_router(single(emu.base_url))
    emu.script(SONNET_MODEL, [{"text": "word " * 50, "stream_error_after_tokens": 5}])
    received: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as info,
        sdk(router).messages.stream(
            model="tierwise/triage", max_tokens=1000, messages=user("x")
        ) as stream,
    ):
        for text in stream.text_stream:
            received.append(text)
    assert "Overloaded" in str(info.value)
    assert 0 < len("".join(received)) < len("word " * 50)
    # The client raises on the error event; the router finishes its books just after.
    samples = wait_for(
        lambda: (
            (s := metrics(router.metrics_url))
            and metric(s, "tierwise_router_requests_total", outcome="upstream_error") == 1
            and s
        )
    )
    assert (
        metric(samples, "tierwise_router_upstream_errors_total", tier="sonnet", type="stream") == 1
    )


def test_client_disconnect_cancels_the_upstream_stream(emu: Any, make_router: Any) -> None:
    router = make_router(single(emu.base_url))
    emu.script(SONNET_MODEL, [{"text": "slow " * 100, "first_token_delay": 1.0}])
    client = sdk(router)
    with client.messages.stream(
        model="tierwise/triage", max_tokens=1000, messages=user("x")
    ) as stream:
        for event in stream:
            assert event.type == "message_start"
            break  # leave after the first event: the context exit closes the connection
    wait_for(lambda: emu.cancelled_streams == 1, timeout=10)
    (record,) = emu.recorded_requests()
    assert record.cancelled and not record.completed
    samples = wait_for(
        lambda: (
            (s := metrics(router.metrics_url))
            and metric(s, "tierwise_router_requests_total", outcome="cancelled") == 1
            and s
        )
    )
    assert metric(samples, "tierwise_router_in_flight_requests") == 0


def test_client_disconnect_cancels_a_buffered_call(emu: Any, make_router: Any) -> None:
    router = make_router(single(emu.base_url))
    emu.script(SONNET_MODEL, [{"text": "slow", "first_token_delay": 3.0}])
    started = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        sdk(router, timeout=0.5).messages.create(
            model="tierwise/triage", max_tokens=10, messages=user("x")
        )
    assert time.monotonic() - started < 2.5
    wait_for(lambda: emu.recorded_requests()[0].cancelled, timeout=10)


def test_ttft_is_measured_for_streams(emu: Any, make_router: Any) -> None:
    router = make_router(single(emu.base_url))
    emu.script(SONNET_MODEL, [{"text": "late", "first_token_delay": 0.3}])
    with sdk(router).messages.stream(
        model="tierwise/triage", max_tokens=100, messages=user("x")
    ) as stream:
        stream.until_done()
    samples = metrics(router.metrics_url)
    name = "tierwise_router_time_to_first_token_seconds"
    assert metric(samples, f"{name}_count", route="triage", tier="sonnet") == 1
    assert metric(samples, f"{name}_sum", route="triage", tier="sonnet") >= 0.3
    assert metric(samples, f"{name}_bucket", route="triage", tier="sonnet", le="0.25") == 0
