"""Model-specific request rules: thinking, effort, sampling, beta headers, model ids."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from conformance_docs import (
    ADAPTIVE_THINKING,
    BETA_HEADERS,
    EFFORT,
    EXTENDED_THINKING,
    MIGRATING_4_5,
    MODELS,
    follows,
)
from emulator_helpers import HAIKU, OPUS, SONNET, raw_request, user

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]

SONNET_46 = "claude-sonnet-4-6"
OPUS_46 = "claude-opus-4-6"
OPUS_47 = "claude-opus-4-7"


def status_and_message(emu: Any, body: dict[str, Any], **headers: str) -> tuple[int, str]:
    status, _headers, raw = raw_request(emu.base_url, "/v1/messages", body, headers=headers)
    text = raw.decode()
    return status, text


def body(model: str = SONNET, max_tokens: int = 2000, **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": max_tokens, "messages": user("think"), **extra}


@follows(EXTENDED_THINKING, "budget_tokens must be at least 1,024 and less than max_tokens")
def test_thinking_budget_rules(emu: Any) -> None:
    too_big = body(max_tokens=100, thinking={"type": "enabled", "budget_tokens": 50_000})
    status, text = status_and_message(emu, too_big)
    assert status == 400 and "budget_tokens" in text
    equal = body(max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 2048})
    assert status_and_message(emu, equal)[0] == 400
    small = body(thinking={"type": "enabled", "budget_tokens": 512})
    assert status_and_message(emu, small)[0] == 400
    ok = body(max_tokens=2049, thinking={"type": "enabled", "budget_tokens": 2048})
    assert status_and_message(emu, ok)[0] == 200


@follows(EXTENDED_THINKING, "thinking is incompatible with temperature/top_k changes, forced tools")
def test_thinking_rejects_sampling_changes_and_forced_tools(emu: Any) -> None:
    thinking = {"type": "enabled", "budget_tokens": 1024}
    assert status_and_message(emu, body(thinking=thinking, temperature=0.2))[0] == 400
    assert status_and_message(emu, body(thinking=thinking, top_k=5))[0] == 400
    assert status_and_message(emu, body(thinking=thinking, top_p=0.5))[0] == 400
    assert status_and_message(emu, body(thinking=thinking, top_p=0.97))[0] == 200
    assert status_and_message(emu, body(thinking=thinking, temperature=1))[0] == 200
    tools = [{"name": "t", "input_schema": {"type": "object"}}]
    forced = body(thinking=thinking, tools=tools, tool_choice={"type": "any"})
    assert status_and_message(emu, forced)[0] == 400
    auto = body(thinking=thinking, tools=tools, tool_choice={"type": "auto"})
    assert status_and_message(emu, auto)[0] == 200


@follows(EXTENDED_THINKING, "thinking blocks with signatures; full thinking tokens are billed")
def test_thinking_block_and_billed_tokens(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=SONNET,
        max_tokens=3000,
        thinking={"type": "enabled", "budget_tokens": 2000},
        messages=user("why is the sky blue?"),
    )
    first, second = message.content
    assert first.type == "thinking" and first.signature and first.thinking
    assert second.type == "text"
    thought = message.usage.output_tokens_details.thinking_tokens
    assert thought == 2000  # the whole budget is billed, not the short summary shown
    assert len(first.thinking) / 4 < thought
    assert message.usage.output_tokens == thought + (len(second.text) + 3) // 4


@follows(EXTENDED_THINKING, "thinking counts toward max_tokens")
def test_thinking_leaves_less_room_for_the_answer(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=SONNET,
        max_tokens=1030,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=user("[[emulator:tokens=100]]"),
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 1030


@follows(EXTENDED_THINKING, "streaming: thinking_delta then signature_delta before the text")
def test_thinking_streams_thinking_and_signature_deltas(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=SONNET,
        max_tokens=3000,
        thinking={"type": "enabled", "budget_tokens": 1500},
        messages=user("stream it"),
    ) as stream:
        kinds = [event.delta.type for event in stream if event.type == "content_block_delta"]
        final = stream.get_final_message()
    assert "thinking_delta" in kinds and "signature_delta" in kinds
    assert kinds.index("signature_delta") < kinds.index("text_delta")
    assert final.content[0].type == "thinking" and final.content[0].signature
    assert final.usage.output_tokens_details.thinking_tokens == 1500


@follows(ADAPTIVE_THINKING, "adaptive thinking only on models that support it")
def test_thinking_types_per_model(emu: Any) -> None:
    adaptive = {"type": "adaptive"}
    assert status_and_message(emu, body(SONNET, thinking=adaptive))[0] == 400
    assert status_and_message(emu, body(SONNET_46, max_tokens=8000, thinking=adaptive))[0] == 200
    manual = {"type": "enabled", "budget_tokens": 1024}
    status, text = status_and_message(emu, body(OPUS_47, thinking=manual))
    assert status == 400 and "enabled" in text
    assert status_and_message(emu, body(OPUS_47, thinking={"type": "disabled"}))[0] == 200


@follows(EFFORT, "output_config.effort is supported on some models, max on fewer")
def test_effort_levels_per_model(emu: Any) -> None:
    def effort(model: str, level: str) -> int:
        return status_and_message(emu, body(model, output_config={"effort": level}))[0]

    assert effort(HAIKU, "low") == 400
    assert effort(SONNET, "medium") == 400
    assert effort(OPUS, "low") == 200
    assert effort(OPUS, "max") == 400
    assert effort(OPUS_46, "max") == 200
    assert effort(OPUS_47, "xhigh") == 200
    assert effort(OPUS_47, "extreme") == 400


@follows(MIGRATING_4_5, "Claude 4.5 models take temperature or top_p, not both")
def test_sampling_rules_per_model(emu: Any) -> None:
    both = {"temperature": 0.5, "top_p": 0.9}
    status, text = status_and_message(emu, body(SONNET, **both))
    assert status == 400 and "top_p" in text
    assert status_and_message(emu, body(SONNET, temperature=0.5))[0] == 200
    # Opus 4.7 rejects non-default sampling parameters.
    assert status_and_message(emu, body(OPUS_47, temperature=0.2))[0] == 400
    assert status_and_message(emu, body(OPUS_47, temperature=1))[0] == 200


@follows(BETA_HEADERS, "unknown anthropic-beta values are rejected")
def test_unknown_beta_header_is_rejected(emu: Any) -> None:
    status, text = status_and_message(emu, body(), **{"anthropic-beta": "made-up-2099-01-01"})
    assert status == 400 and "made-up-2099-01-01" in text
    known = {"anthropic-beta": "context-1m-2025-08-07,interleaved-thinking-2025-05-14"}
    assert status_and_message(emu, body(), **known)[0] == 200


@follows(MODELS, "only published model ids and snapshots are served")
def test_model_ids(emu: Any) -> None:
    assert status_and_message(emu, body("claude-haiku-4-5-20251001"))[0] == 200
    status, text = status_and_message(emu, body("claude-haiku-4-5-20990101"))
    assert status == 404 and "not_found_error" in text
