"""Prompt-cache usage through the real SDK: writes per TTL, reads, minimums, expiry."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from emulator_helpers import HAIKU, OPUS, SONNET, user

from tierwise.emulator import EmulatorThread

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]

# 2,000 tokens under the emulator's 4-characters rule: above Sonnet's 1,024 minimum,
# below Haiku's and Opus's 4,096.
DOCUMENT = "Policy clause. " * 533 + "Final"


def cached_system(ttl: str | None = None, text: str = DOCUMENT) -> list[dict[str, Any]]:
    marker: dict[str, Any] = {"type": "ephemeral"}
    if ttl:
        marker["ttl"] = ttl
    return [{"type": "text", "text": text, "cache_control": marker}]


def total(usage: Any) -> int:
    return usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens


def test_write_then_read_on_the_second_identical_request(client: anthropic.Anthropic) -> None:
    kwargs = {"model": SONNET, "max_tokens": 50, "system": cached_system(), "messages": user("Q1")}
    prefix = client.messages.count_tokens(model=SONNET, system=cached_system(), messages=user("Q1"))
    first = client.messages.create(**kwargs).usage
    assert first.cache_creation_input_tokens == 2000
    assert first.cache_creation.ephemeral_5m_input_tokens == 2000
    assert first.cache_creation.ephemeral_1h_input_tokens == 0
    assert first.cache_read_input_tokens == 0
    assert total(first) == prefix.input_tokens
    second = client.messages.create(**kwargs).usage
    assert second.cache_read_input_tokens == 2000
    assert second.cache_creation_input_tokens == 0
    assert second.input_tokens == first.input_tokens
    assert total(second) == prefix.input_tokens


def test_one_hour_ttl_is_reported_as_a_one_hour_write(client: anthropic.Anthropic) -> None:
    usage = client.messages.create(
        model=SONNET, max_tokens=50, system=cached_system("1h"), messages=user("Q")
    ).usage
    assert usage.cache_creation.ephemeral_1h_input_tokens == 2000
    assert usage.cache_creation.ephemeral_5m_input_tokens == 0
    assert usage.cache_creation_input_tokens == 2000


def test_mixed_ttls_split_the_write(client: anthropic.Anthropic) -> None:
    system = [
        {"type": "text", "text": DOCUMENT, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": "x" * 2000, "cache_control": {"type": "ephemeral", "ttl": "5m"}},
    ]
    usage = client.messages.create(
        model=SONNET, max_tokens=50, system=system, messages=user("Q")
    ).usage
    assert usage.cache_creation.ephemeral_1h_input_tokens == 2000
    assert usage.cache_creation.ephemeral_5m_input_tokens == 500


@pytest.mark.parametrize("model", [HAIKU, OPUS])
def test_below_the_model_minimum_nothing_is_cached(client: anthropic.Anthropic, model: str) -> None:
    for _ in range(2):
        usage = client.messages.create(
            model=model, max_tokens=50, system=cached_system(), messages=user("Q")
        ).usage
        assert usage.cache_creation_input_tokens == 0
        assert usage.cache_read_input_tokens == 0
        assert (
            usage.input_tokens
            == client.messages.count_tokens(
                model=model, system=cached_system(), messages=user("Q")
            ).input_tokens
        )


def test_haiku_caches_above_its_minimum(client: anthropic.Anthropic) -> None:
    big = DOCUMENT * 3  # 6,000 tokens
    usage = client.messages.create(
        model=HAIKU, max_tokens=50, system=cached_system(text=big), messages=user("Q")
    ).usage
    assert usage.cache_creation_input_tokens == 6000


def test_tools_breakpoint_caches_the_tools_prefix(client: anthropic.Anthropic) -> None:
    tools = [
        {
            "name": f"tool_{i}",
            "description": "d" * 1200,
            "input_schema": {"type": "object", "properties": {}},
        }
        for i in range(4)
    ]
    tools[-1]["cache_control"] = {"type": "ephemeral"}
    first = client.messages.create(
        model=SONNET, max_tokens=20, tools=tools, messages=user("a")
    ).usage
    second = client.messages.create(
        model=SONNET, max_tokens=20, tools=tools, messages=user("b")
    ).usage
    assert first.cache_creation_input_tokens > 1024
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert total(first) == total(second)


def test_cache_expires_with_the_emulator_clock(
    emu: EmulatorThread, client: anthropic.Anthropic
) -> None:
    kwargs = {"model": SONNET, "max_tokens": 50, "system": cached_system(), "messages": user("Q")}
    client.messages.create(**kwargs)
    emu.advance_clock(299)
    assert client.messages.create(**kwargs).usage.cache_read_input_tokens == 2000
    emu.advance_clock(301)
    again = client.messages.create(**kwargs).usage
    assert again.cache_read_input_tokens == 0
    assert again.cache_creation.ephemeral_5m_input_tokens == 2000


def test_streaming_reports_cache_usage_in_message_start(client: anthropic.Anthropic) -> None:
    kwargs = {"model": SONNET, "max_tokens": 50, "system": cached_system(), "messages": user("Q")}
    client.messages.create(**kwargs)
    events = list(client.messages.create(stream=True, **kwargs))
    start_usage = events[0].message.usage
    assert start_usage.cache_read_input_tokens == 2000
    delta_usage = events[-2].usage
    assert delta_usage.cache_read_input_tokens == 2000
    with client.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert final.usage.cache_read_input_tokens == 2000
    assert final.usage.cache_creation.ephemeral_5m_input_tokens == 0


def test_top_level_cache_control_caches_the_whole_prompt(client: anthropic.Anthropic) -> None:
    kwargs = {
        "model": SONNET,
        "max_tokens": 20,
        "system": DOCUMENT,
        "messages": user("question"),
        "extra_body": {"cache_control": {"type": "ephemeral"}},
    }
    first = client.messages.create(**kwargs).usage
    assert first.input_tokens == 0 and first.cache_creation_input_tokens == total(first)
    assert client.messages.create(**kwargs).usage.cache_read_input_tokens == total(first)


def test_more_than_four_breakpoints_is_rejected(client: anthropic.Anthropic) -> None:
    system = [
        {"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}}
        for i in range(5)
    ]
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=SONNET, max_tokens=10, system=system, messages=user("Q"))
    assert caught.value.type == "invalid_request_error"
    assert "A maximum of 4 blocks with cache_control may be provided. Found 5." in str(caught.value)


def test_one_hour_after_five_minutes_is_rejected(client: anthropic.Anthropic) -> None:
    system = [
        {"type": "text", "text": "a", "cache_control": {"type": "ephemeral", "ttl": "5m"}},
        {"type": "text", "text": "b", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ]
    with pytest.raises(anthropic.BadRequestError, match="ttl='1h'"):
        client.messages.create(model=SONNET, max_tokens=10, system=system, messages=user("Q"))


def test_reset_can_keep_or_clear_the_cache(
    emu: EmulatorThread, client: anthropic.Anthropic
) -> None:
    kwargs = {"model": SONNET, "max_tokens": 50, "system": cached_system(), "messages": user("Q")}
    client.messages.create(**kwargs)
    emu.reset(cache=False)
    assert client.messages.create(**kwargs).usage.cache_read_input_tokens == 2000
    emu.reset()
    assert client.messages.create(**kwargs).usage.cache_read_input_tokens == 0
