"""Prompt caching as the API documents it: timing, lookback, invalidation, pre-warming."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import pytest
from conformance_docs import BATCHES, PROMPT_CACHING, follows
from emulator_helpers import API_KEY, SONNET

from tierwise.emulator import EmulatorConfig, ModelProfile, running_emulator
from tierwise.emulator.cache import PromptCache
from tierwise.emulator.tokens import layout_prompt

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]

LONG = "The support policy covers refunds, shipping and warranty claims. " * 80  # ~1300 tok


def cached_system(text: str = LONG) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]


def ask(client: anthropic.Anthropic, question: str, **extra: Any) -> Any:
    return client.messages.create(
        model=SONNET,
        max_tokens=50,
        system=extra.pop("system", cached_system()),
        messages=extra.pop("messages", [{"role": "user", "content": question}]),
        **extra,
    ).usage


@follows(PROMPT_CACHING, "a cache entry is available only after the first response begins")
async def test_concurrent_requests_with_one_prefix_each_write() -> None:
    slow = ModelProfile(name=SONNET, ttft_seconds=0.4, output_tokens_per_second=1000.0)
    config = EmulatorConfig(profiles={SONNET: slow})
    async with running_emulator(config) as emu:
        client = anthropic.AsyncAnthropic(base_url=emu.base_url, api_key=API_KEY, max_retries=0)

        async def one(n: int) -> Any:
            message = await client.messages.create(
                model=SONNET,
                max_tokens=20,
                system=cached_system(),
                messages=[{"role": "user", "content": f"question {n}"}],
            )
            return message.usage

        burst = await asyncio.gather(*(one(n) for n in range(4)))
        # All four were in flight before the first response began: each paid for a write.
        assert [u.cache_read_input_tokens for u in burst] == [0, 0, 0, 0]
        assert all(u.cache_creation_input_tokens > 1000 for u in burst)
        after = await one(99)
        assert after.cache_read_input_tokens == burst[0].cache_creation_input_tokens
        await client.close()


@follows(PROMPT_CACHING, "hits are checked at block boundaries up to 20 blocks before a breakpoint")
def test_lookback_covers_twenty_block_positions() -> None:
    def conversation(turns: int) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        for i in range(turns):
            role = "user" if i % 2 == 0 else "assistant"
            text = chr(ord("a") + i % 26) * 1200
            messages.append({"role": role, "content": [{"type": "text", "text": text}]})
        messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
        return {"system": "You are helpful.", "messages": messages}

    def read_after(first: int, later: int) -> int:
        cache = PromptCache(lambda: 1000.0)
        cache.account(SONNET, layout_prompt(conversation(first)), 1024)
        return cache.account(
            SONNET, layout_prompt(conversation(later)), 1024
        ).cache_read_input_tokens

    # The old breakpoint (block 5) is 19 positions back: inside a 20-position window.
    assert read_after(5, 5 + 19) > 0
    # 20 positions back is outside it: nothing is read.
    assert read_after(5, 5 + 20) == 0


@follows(PROMPT_CACHING, "changing tool_choice invalidates the message cache, not tools/system")
def test_tool_choice_change_invalidates_messages_only(client: anthropic.Anthropic) -> None:
    tools = [
        {"name": "lookup", "description": "Look up an order", "input_schema": {"type": "object"}}
    ]
    history = [
        {"role": "user", "content": "first " + LONG},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "ok", "cache_control": {"type": "ephemeral"}}],
        },
        {"role": "user", "content": "next"},
    ]
    ask(client, "", messages=history, tools=tools)
    same = ask(client, "", messages=history, tools=tools)
    assert same.cache_creation_input_tokens == 0 and same.cache_read_input_tokens > 1000
    changed = ask(client, "", messages=history, tools=tools, tool_choice={"type": "any"})
    # The system prompt's entry is still read; the messages' entry is written again.
    assert 0 < changed.cache_read_input_tokens < same.cache_read_input_tokens
    assert changed.cache_creation_input_tokens > 1000


@follows(PROMPT_CACHING, "enabling or changing thinking invalidates the message cache")
def test_thinking_change_invalidates_messages(client: anthropic.Anthropic) -> None:
    history = [
        {
            "role": "user",
            "content": [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}],
        },
    ]
    plain = {"max_tokens": 3000, "messages": history, "system": "Be brief."}
    client.messages.create(model=SONNET, **plain)
    hit = client.messages.create(model=SONNET, **plain).usage
    assert hit.cache_read_input_tokens > 1000
    thinking = client.messages.create(
        model=SONNET, thinking={"type": "enabled", "budget_tokens": 1024}, **plain
    ).usage
    assert thinking.cache_read_input_tokens == 0
    assert thinking.cache_creation_input_tokens > 1000


@follows(PROMPT_CACHING, "adding or removing images invalidates the message cache")
def test_image_presence_invalidates_messages(client: anthropic.Anthropic) -> None:
    marked = {"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    first = [{"role": "user", "content": [marked]}, {"role": "assistant", "content": "ok"}]
    client.messages.create(
        model=SONNET, max_tokens=20, messages=[*first, {"role": "user", "content": "q"}]
    )
    text_only = client.messages.create(
        model=SONNET, max_tokens=20, messages=[*first, {"role": "user", "content": "q2"}]
    ).usage
    assert text_only.cache_read_input_tokens > 1000  # the same prefix is read without images
    with_image = client.messages.create(
        model=SONNET,
        max_tokens=20,
        messages=[*first, {"role": "user", "content": [image, {"type": "text", "text": "q"}]}],
    ).usage
    assert with_image.cache_read_input_tokens == 0


@follows(PROMPT_CACHING, "pre-warming the cache with max_tokens: 0")
def test_max_tokens_zero_prewarms_without_generating(client: anthropic.Anthropic) -> None:
    warm = client.messages.create(
        model=SONNET,
        max_tokens=0,
        system=cached_system(),
        messages=[{"role": "user", "content": "warm"}],
    )
    assert warm.content == [] and warm.stop_reason == "max_tokens"
    assert warm.usage.output_tokens == 0
    assert warm.usage.cache_creation_input_tokens > 1000
    assert ask(client, "real question").cache_read_input_tokens > 1000


@follows(BATCHES, "cache hits in batches are best-effort: items run concurrently")
def test_batch_items_do_not_read_each_others_writes(client: anthropic.Anthropic) -> None:
    requests = [
        {
            "custom_id": f"item-{n}",
            "params": {
                "model": SONNET,
                "max_tokens": 20,
                "system": cached_system(),
                "messages": [{"role": "user", "content": f"question {n}"}],
            },
        }
        for n in range(5)
    ]
    batch = client.messages.batches.create(requests=requests)
    usages = [r.result.message.usage for r in client.messages.batches.results(batch.id)]
    assert [u.cache_read_input_tokens for u in usages] == [0] * 5
    assert all(u.service_tier == "batch" for u in usages)
    # Once the batch is processed, its entries are readable.
    assert ask(client, "later").cache_read_input_tokens > 1000
