"""Retries, fallback, timeouts, concurrency limits and error shapes."""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

import anthropic
import pytest
from router_builder import HAIKU_MODEL, OPUS_MODEL, SONNET_MODEL, config, route, step, with_hash
from router_helpers import metric, metrics, raw_request, sdk, user

pytestmark = pytest.mark.timeout(60)


def single(endpoint: str, **kwargs: Any) -> dict[str, Any]:
    return config(endpoint, routes=[route("triage", [step("haiku", 100)])], **kwargs)


def test_retries_529_then_succeeds(emu: Any, make_router: Any) -> None:
    router = make_router(single(emu.base_url))
    emu.script(HAIKU_MODEL, [{"error": 529}, {"error": 500}, {"text": "finally"}])
    raw = sdk(router).messages.with_raw_response.create(
        model="tierwise/triage", max_tokens=10, messages=user("x")
    )
    assert raw.parse().content[0].text == "finally"
    assert [r.status for r in emu.recorded_requests()] == [529, 500, 200]
    samples = metrics(router.metrics_url)
    assert metric(samples, "tierwise_router_upstream_errors_total", type="overloaded") == 1
    assert metric(samples, "tierwise_router_upstream_errors_total", type="server_error") == 1
    assert metric(samples, "tierwise_router_upstream_retries_total", tier="haiku") == 2


def test_retry_after_is_honoured(emu: Any, make_router: Any) -> None:
    router = make_router(single(emu.base_url))
    emu.script(HAIKU_MODEL, [{"error": 429, "retry_after": 0.6}, {"text": "ok"}])
    started = time.monotonic()
    sdk(router).messages.create(model="tierwise/triage", max_tokens=10, messages=user("x"))
    assert time.monotonic() - started >= 0.6  # the configured backoff is only 10-50 ms
    first, second = emu.recorded_requests()
    assert second.received_at - first.received_at >= 0.55


def test_exhausted_retries_return_the_upstream_error(emu: Any, make_router: Any) -> None:
    router = make_router(single(emu.base_url))
    emu.script(HAIKU_MODEL, [{"error": 529}] * 3)
    with pytest.raises(anthropic.APIStatusError) as info:
        sdk(router).messages.create(model="tierwise/triage", max_tokens=10, messages=user("x"))
    assert info.value.status_code == 529
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert len(emu.recorded_requests()) == 3
    assert info.value.response.headers["x-tierwise-route"] == "triage"
    assert info.value.response.headers["x-tierwise-tier"] == "haiku"
    samples = metrics(router.metrics_url)
    assert (
        metric(samples, "tierwise_router_requests_total", tier="haiku", outcome="upstream_error")
        == 1
    )


def test_fallback_tier_answers_after_retries(emu: Any, make_router: Any) -> None:
    router = make_router(single(emu.base_url, fallback={"tier": "opus", "on": ["overloaded"]}))
    emu.script(HAIKU_MODEL, [{"error": 529}] * 3)
    emu.script(OPUS_MODEL, [{"text": "from the fallback"}])
    raw = sdk(router).messages.with_raw_response.create(
        model="tierwise/triage", max_tokens=10, messages=user("x")
    )
    assert raw.parse().content[0].text == "from the fallback"
    assert raw.headers["x-tierwise-tier"] == "opus"
    assert [r.model for r in emu.recorded_requests()] == [HAIKU_MODEL] * 3 + [OPUS_MODEL]
    assert emu.recorded_requests()[-1].body["max_tokens"] == 10
    samples = metrics(router.metrics_url)
    assert metric(samples, "tierwise_router_fallbacks_total", tier="opus") == 1
    assert metric(samples, "tierwise_router_requests_total", tier="opus", outcome="success") == 1


def test_fallback_is_tried_once_and_only_for_listed_failures(emu: Any, make_router: Any) -> None:
    router = make_router(single(emu.base_url, fallback={"tier": "opus", "on": ["overloaded"]}))
    emu.script(HAIKU_MODEL, [{"error": 500}] * 3)
    with pytest.raises(anthropic.InternalServerError):
        sdk(router).messages.create(model="tierwise/triage", max_tokens=10, messages=user("x"))
    assert OPUS_MODEL not in [r.model for r in emu.recorded_requests()]
    emu.reset()
    emu.script(HAIKU_MODEL, [{"error": 529}] * 3)
    emu.script(OPUS_MODEL, [{"error": 529}, {"text": "never reached"}])
    with pytest.raises(anthropic.APIStatusError) as info:
        sdk(router).messages.create(model="tierwise/triage", max_tokens=10, messages=user("x"))
    assert info.value.status_code == 529
    assert [r.model for r in emu.recorded_requests()].count(OPUS_MODEL) == 1


def test_streaming_request_retries_and_falls_back_before_the_first_byte(
    emu: Any, make_router: Any
) -> None:
    router = make_router(single(emu.base_url, fallback={"tier": "sonnet", "on": ["rateLimited"]}))
    emu.script(HAIKU_MODEL, [{"error": 429, "retry_after": 0}] * 3)
    emu.script(SONNET_MODEL, [{"text": "streamed by the fallback"}])
    with sdk(router).messages.stream(
        model="tierwise/triage", max_tokens=10, messages=user("x")
    ) as stream:
        assert "".join(stream.text_stream) == "streamed by the fallback"
        assert stream.response.headers["x-tierwise-tier"] == "sonnet"


def test_client_errors_are_passed_through_without_retry(emu: Any, make_router: Any) -> None:
    router = make_router(single(emu.base_url))
    emu.script(HAIKU_MODEL, [{"error": 400, "message": "messages: bad"}])
    with pytest.raises(anthropic.BadRequestError, match="messages: bad"):
        sdk(router).messages.create(model="tierwise/triage", max_tokens=10, messages=user("x"))
    assert len(emu.recorded_requests()) == 1


def test_timeout_is_a_504_and_can_fall_back(emu: Any, make_router: Any) -> None:
    doc = single(
        emu.base_url,
        retry={"maxAttempts": 1, "initialBackoffSeconds": "0.01", "maxBackoffSeconds": "0.01"},
    )
    doc["tiers"]["haiku"]["limits"]["timeoutSeconds"] = 0.3
    router = make_router(with_hash(doc))
    emu.script(HAIKU_MODEL, [{"text": "too slow", "first_token_delay": 2.0}])
    started = time.monotonic()
    with pytest.raises(anthropic.APIStatusError) as info:
        sdk(router).messages.create(model="tierwise/triage", max_tokens=10, messages=user("x"))
    assert time.monotonic() - started < 1.5
    assert info.value.status_code == 504
    assert info.value.body["error"]["type"] == "timeout_error"  # type: ignore[index]

    doc["fallback"] = {"tier": "sonnet", "on": ["timeout"]}
    router = make_router(with_hash(doc))
    emu.script(HAIKU_MODEL, [{"text": "too slow", "first_token_delay": 2.0}])
    raw = sdk(router).messages.with_raw_response.create(
        model="tierwise/triage", max_tokens=10, messages=user("x")
    )
    assert raw.headers["x-tierwise-tier"] == "sonnet"


def test_unreachable_tier_is_a_502_api_error(emu: Any, make_router: Any) -> None:
    from router_helpers import free_port

    router = make_router(single(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(anthropic.APIStatusError) as info:
        sdk(router).messages.create(model="tierwise/triage", max_tokens=10, messages=user("x"))
    assert info.value.status_code == 502
    assert info.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_per_tier_concurrency_limit(emu: Any, make_router: Any) -> None:
    doc = single(emu.base_url)
    doc["tiers"]["haiku"]["limits"]["maxConcurrency"] = 2
    router = make_router(with_hash(doc))
    emu.script(HAIKU_MODEL, [{"text": "slow", "first_token_delay": 0.4}] * 6)
    body = {"model": "tierwise/triage", "max_tokens": 5, "messages": user("x")}
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(
            pool.map(lambda _: raw_request(router.base_url, "/v1/messages", body)[0], range(6))
        )
    assert results == [200] * 6
    starts = sorted(r.received_at for r in emu.recorded_requests())
    # Two at a time: the 3rd and 5th requests reach the tier only as slots free up.
    assert starts[2] - starts[0] >= 0.35
    assert starts[4] - starts[0] >= 0.75
    # The queue-wait histogram shows it: six waits, four of them at least one slow call long.
    samples = metrics(router.metrics_url)
    name = "tierwise_router_queue_wait_seconds"
    assert metric(samples, f"{name}_count", tier="haiku") == 6
    assert metric(samples, f"{name}_bucket", tier="haiku", le="0.25") <= 2
    assert metric(samples, f"{name}_sum", tier="haiku") >= 4 * 0.35


def test_escalation_after_failure_of_an_earlier_step_is_not_silent(
    emu: Any, make_router: Any
) -> None:
    router = make_router(config(emu.base_url))
    emu.script(HAIKU_MODEL, [{"error": 529}] * 3)
    with pytest.raises(anthropic.APIStatusError) as info:
        sdk(router).messages.create(model="tierwise/triage", max_tokens=10, messages=user("x"))
    assert info.value.status_code == 529
    assert SONNET_MODEL not in [r.model for r in emu.recorded_requests()]
