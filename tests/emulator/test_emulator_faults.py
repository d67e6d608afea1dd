"""Scripted answers, injected errors, mid-stream errors and client disconnects."""

from __future__ import annotations

import asyncio
import json
import time

import anthropic
import pytest
from emulator_helpers import API_KEY, HAIKU, OPUS, SONNET, raw_request, user

from tierwise.emulator import EmulatorThread, ScriptStep, running_emulator
from tierwise.emulator.config import EmulatorConfig

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]


def ask(
    client: anthropic.Anthropic, model: str = HAIKU, text: str = "q"
) -> anthropic.types.Message:
    return client.messages.create(model=model, max_tokens=100, messages=user(text))


def test_scripted_answers_are_consumed_in_order_per_model(
    emu: EmulatorThread, client: anthropic.Anthropic
) -> None:
    emu.script(HAIKU, [{"text": "first"}, {"text": "no", "stop_reason": "refusal"}])
    emu.script(SONNET, [{"text": "sonnet says"}])
    assert ask(client, SONNET).content[0].text == "sonnet says"
    first = ask(client)
    assert first.content[0].text == "first" and first.stop_reason == "end_turn"
    refusal = ask(client, "claude-haiku-4-5-20251001")  # dated ids share the alias's queue
    assert refusal.stop_reason == "refusal" and refusal.content[0].text == "no"
    assert "You asked" in ask(client).content[0].text  # queue empty: normal behaviour


def test_wildcard_script_applies_to_any_model(
    emu: EmulatorThread, client: anthropic.Anthropic
) -> None:
    emu.script("*", [{"text": "anyone"}])
    emu.script(OPUS, [{"text": "opus own"}])
    assert ask(client, OPUS).content[0].text == "opus own"
    assert ask(client, SONNET).content[0].text == "anyone"


def test_scripted_answer_respects_max_tokens(
    emu: EmulatorThread, client: anthropic.Anthropic
) -> None:
    emu.script(HAIKU, [{"text": "x" * 400}])
    message = client.messages.create(model=HAIKU, max_tokens=10, messages=user("q"))
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 10


def test_scripted_tool_use(emu: EmulatorThread, client: anthropic.Anthropic) -> None:
    emu.script(
        HAIKU, [{"text": "Let me look.", "tool_use": {"name": "lookup", "input": {"q": "x"}}}] * 2
    )
    message = ask(client)
    assert message.stop_reason == "tool_use"
    assert [b.type for b in message.content] == ["text", "tool_use"]
    assert message.content[1].name == "lookup" and message.content[1].input == {"q": "x"}
    with client.messages.stream(model=HAIKU, max_tokens=100, messages=user("q")) as stream:
        final = stream.get_final_message()
    assert final.content[1].type == "tool_use" and final.content[1].input == {"q": "x"}


def test_scripted_usage_override(emu: EmulatorThread, client: anthropic.Anthropic) -> None:
    emu.script(HAIKU, [{"text": "ok", "usage": {"input_tokens": 1234}, "output_tokens": 7}])
    usage = ask(client).usage
    assert usage.input_tokens == 1234 and usage.output_tokens == 7


def test_scripted_429_carries_retry_after(emu: EmulatorThread, client: anthropic.Anthropic) -> None:
    emu.script(HAIKU, [{"error": 429, "retry_after": 3}])
    with pytest.raises(anthropic.RateLimitError) as caught:
        ask(client)
    assert caught.value.type == "rate_limit_error"
    assert caught.value.response.headers["retry-after"] == "3"


def test_scripted_529_and_500(emu: EmulatorThread, client: anthropic.Anthropic) -> None:
    emu.script(HAIKU, [{"error": 529}, {"error": 500, "message": "boom"}])
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        ask(client)
    assert overloaded.value.status_code == 529
    assert overloaded.value.type == "overloaded_error"
    with pytest.raises(anthropic.InternalServerError) as internal:
        ask(client)
    assert internal.value.status_code == 500
    assert internal.value.type == "api_error" and internal.value.api_message == "boom"
    assert emu.stats()["injected_errors"] == 2


def test_scripted_error_on_a_stream_fails_before_streaming(
    emu: EmulatorThread, client: anthropic.Anthropic
) -> None:
    emu.script(HAIKU, [{"error": 529}])
    with pytest.raises(anthropic.InternalServerError) as caught:  # noqa: SIM117
        with client.messages.stream(model=HAIKU, max_tokens=100, messages=user("q")) as stream:
            stream.get_final_message()
    assert caught.value.status_code == 529


def test_sdk_retries_get_through_a_transient_overload(emu: EmulatorThread) -> None:
    emu.script(HAIKU, [{"error": 529}, {"error": 429, "retry_after": 0}])
    with anthropic.Anthropic(base_url=emu.base_url, api_key=API_KEY, max_retries=2) as retrying:
        message = ask(retrying)
    assert message.stop_reason == "end_turn"
    statuses = [r.status for r in emu.recorded_requests(path="/v1/messages")]
    assert statuses == [529, 429, 200]


def test_mid_stream_error_is_raised_by_the_sdk_stream(
    emu: EmulatorThread, client: anthropic.Anthropic
) -> None:
    emu.script(HAIKU, [{"stream_error_after_tokens": 5}])
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:  # noqa: SIM117
        with client.messages.stream(
            model=HAIKU, max_tokens=100, messages=user("a long enough question")
        ) as stream:
            for text in stream.text_stream:
                received.append(text)
    assert caught.value.type == "overloaded_error"
    assert len("".join(received)) == 5 * 4  # exactly five tokens arrived first
    (entry,) = emu.recorded_requests(path="/v1/messages")
    assert entry.error_type == "overloaded_error" and entry.stream


def test_mid_stream_error_step_is_a_529_without_streaming(
    emu: EmulatorThread, client: anthropic.Anthropic
) -> None:
    emu.script(HAIKU, [{"stream_error_after_tokens": 5}])
    with pytest.raises(anthropic.InternalServerError) as caught:
        ask(client)
    assert caught.value.status_code == 529


def test_fault_rates_are_seeded_and_roughly_as_configured(
    emu: EmulatorThread, client: anthropic.Anthropic
) -> None:
    def outcomes() -> list[int]:
        seen = []
        for _ in range(200):
            try:
                ask(client, SONNET)
                seen.append(200)
            except anthropic.APIStatusError as exc:
                seen.append(exc.status_code)
        return seen

    emu.set_faults(SONNET, rate_429=0.2, rate_529=0.1, seed=7)
    first = outcomes()
    emu.set_faults(SONNET, rate_429=0.2, rate_529=0.1, seed=7)
    assert outcomes() == first
    assert 20 <= first.count(429) <= 60
    assert 5 <= first.count(529) <= 35
    assert set(first) == {200, 429, 529}
    assert ask(client, HAIKU).content  # other models unaffected
    emu.set_faults(SONNET)  # all rates zero: removed
    assert ask(client, SONNET).content


def test_admin_http_api(emu: EmulatorThread, client: anthropic.Anthropic) -> None:
    base = emu.base_url
    status, _h, raw = raw_request(
        base,
        "/_emulator/script",
        {
            "model": "claude-haiku-4-5-20251001",
            "responses": [{"text": "via http"}, {"error": 429, "retry_after": 2}],
        },
    )
    assert status == 200 and json.loads(raw) == {"model": HAIKU, "queued": 2}
    status, _h, raw = raw_request(base, "/_emulator/script", method="GET")
    assert json.loads(raw) == {"pending": {HAIKU: 2}}
    assert ask(client).content[0].text == "via http"
    with pytest.raises(anthropic.RateLimitError):
        ask(client)

    status, _h, raw = raw_request(
        base, "/_emulator/faults", {"model": OPUS, "rate_500": 1.0, "seed": 1}
    )
    assert status == 200 and json.loads(raw)["faults"][OPUS]["rate_500"] == 1.0
    with pytest.raises(anthropic.InternalServerError):
        ask(client, OPUS)

    status, _h, raw = raw_request(base, "/_emulator/requests?path=/v1/messages", method="GET")
    recorded = json.loads(raw)["requests"]
    assert [r["status"] for r in recorded] == [200, 429, 500]
    assert recorded[0]["api_key"] == API_KEY
    assert recorded[0]["body"]["messages"] == user("q")
    assert recorded[0]["cancelled"] is False

    status, _h, raw = raw_request(base, "/_emulator/stats", method="GET")
    stats = json.loads(raw)
    assert stats["injected_errors"] == 2 and stats["by_status"]["200"] == 1

    status, _h, raw = raw_request(base, "/_emulator/reset", {})
    assert status == 200
    assert ask(client, OPUS).content
    _s, _h, raw = raw_request(base, "/_emulator/requests", method="GET")
    assert len(json.loads(raw)["requests"]) == 1


def test_admin_rejects_bad_input(emu: EmulatorThread) -> None:
    status, _h, raw = raw_request(
        emu.base_url, "/_emulator/script", {"model": HAIKU, "responses": [{"colour": "red"}]}
    )
    assert status == 400 and "unknown keys" in json.loads(raw)["error"]["message"]
    status, _h, _raw = raw_request(
        emu.base_url, "/_emulator/faults", {"model": HAIKU, "rate_429": 2}
    )
    assert status == 400
    status, _h, _raw = raw_request(emu.base_url, "/_emulator/script", {"responses": []})
    assert status == 400


def test_admin_clock_advances_cache_expiry(emu: EmulatorThread) -> None:
    status, _h, raw = raw_request(emu.base_url, "/_emulator/clock", {"advance": 120})
    assert status == 200 and json.loads(raw)["offset"] == 120


def test_script_step_validation() -> None:
    with pytest.raises(ValueError, match="stop_reason"):
        ScriptStep.from_dict({"text": "x", "stop_reason": "bored"})
    with pytest.raises(ValueError, match="HTTP error"):
        ScriptStep.from_dict({"error": 200})


def test_client_timeout_is_recorded_as_cancelled(emu: EmulatorThread) -> None:
    emu.script(HAIKU, [{"first_token_delay": 5}])
    impatient = anthropic.Anthropic(
        base_url=emu.base_url, api_key=API_KEY, max_retries=0, timeout=0.3
    )
    with impatient, pytest.raises(anthropic.APITimeoutError):
        ask(impatient)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not emu.recorded_requests()[0].cancelled:
        time.sleep(0.02)
    (entry,) = emu.recorded_requests()
    assert entry.cancelled and not entry.completed
    assert emu.stats()["cancelled_requests"] == 1


def test_client_disconnect_mid_stream_is_counted(
    emu: EmulatorThread, client: anthropic.Anthropic
) -> None:
    emu.script(HAIKU, [{"first_token_delay": 5}])
    stream = client.messages.create(model=HAIKU, max_tokens=100, messages=user("q"), stream=True)
    with stream:
        assert next(iter(stream)).type == "message_start"
    # Closing the stream dropped the connection while the emulator waited for the first token.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and emu.cancelled_streams == 0:
        time.sleep(0.02)
    assert emu.cancelled_streams == 1
    (entry,) = emu.recorded_requests()
    assert entry.cancelled and entry.stream


async def test_async_disconnect_cancels_the_stream() -> None:
    async with running_emulator(EmulatorConfig(zero_latency=True)) as emu:
        emu.script(SONNET, [{"first_token_delay": 5}])
        assert emu.base_url is not None
        client = anthropic.AsyncAnthropic(base_url=emu.base_url, api_key=API_KEY, max_retries=0)
        async with (
            client,
            client.messages.stream(model=SONNET, max_tokens=50, messages=user("q")) as stream,
        ):
            async for event in stream:
                assert event.type == "message_start"
                break
        for _ in range(100):
            if emu.cancelled_streams:
                break
            await asyncio.sleep(0.02)
        assert emu.cancelled_streams == 1
