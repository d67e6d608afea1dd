"""Prompt-cache accounting (pure module, manual clock)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tierwise.emulator.cache import CacheUsage, PromptCache, split_usage
from tierwise.emulator.tokens import layout_prompt

MIN = 1024
MODEL = "claude-sonnet-4-5"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def text(n_tokens: int, fill: str = "x") -> str:
    return fill * (4 * n_tokens)


def block(n_tokens: int, ttl: str | None = None, fill: str = "x") -> dict[str, Any]:
    b: dict[str, Any] = {"type": "text", "text": text(n_tokens, fill)}
    if ttl is not None:
        b["cache_control"] = {"type": "ephemeral", "ttl": ttl}
    return b


def request(system: list[dict[str, Any]], question: str = "question?") -> dict[str, Any]:
    return {"system": system, "messages": [{"role": "user", "content": question}]}


def account(
    cache: PromptCache, body: dict[str, Any], model: str = MODEL, minimum: int = MIN
) -> CacheUsage:
    return cache.account(model, layout_prompt(body), minimum)


def test_without_breakpoints_everything_is_input() -> None:
    cache = PromptCache(Clock())
    usage = account(cache, request([block(2000)]))
    assert usage == CacheUsage(input_tokens=2000 + 3 + 3)
    assert len(cache) == 0


def test_write_then_read_of_the_same_prefix() -> None:
    cache = PromptCache(Clock())
    body = request([block(2000, "5m")])
    first = account(cache, body)
    assert first == CacheUsage(input_tokens=6, cache_creation_5m_input_tokens=2000)
    second = account(cache, request([block(2000, "5m")], question="another question"))
    assert second.cache_read_input_tokens == 2000
    assert second.cache_creation_input_tokens == 0
    assert second.input_tokens == second.prompt_tokens - 2000


def test_one_hour_write_is_reported_separately() -> None:
    cache = PromptCache(Clock())
    usage = account(cache, request([block(1500, "1h")]))
    assert usage.cache_creation_1h_input_tokens == 1500
    assert usage.cache_creation_5m_input_tokens == 0


def test_prefix_below_the_minimum_is_not_cached() -> None:
    cache = PromptCache(Clock())
    body = request([block(MIN - 1, "5m")])
    for _ in range(2):
        usage = account(cache, body)
        assert usage == CacheUsage(input_tokens=MIN - 1 + 6)
    assert len(cache) == 0


def test_minimum_is_per_model_profile() -> None:
    cache = PromptCache(Clock())
    body = request([block(2000, "5m")])
    assert (
        account(cache, body, model="claude-haiku-4-5", minimum=4096).cache_creation_input_tokens
        == 0
    )
    assert account(cache, body, model=MODEL, minimum=1024).cache_creation_input_tokens == 2000


def test_models_do_not_share_entries() -> None:
    cache = PromptCache(Clock())
    body = request([block(5000, "5m")])
    account(cache, body, model="claude-opus-4-5", minimum=4096)
    other = account(cache, body, model=MODEL)
    assert other.cache_read_input_tokens == 0 and other.cache_creation_input_tokens == 5000


def test_mixed_ttls_follow_the_a_b_c_rule() -> None:
    # 1h breakpoint at 2000, 5m breakpoint at 3000: writes 2000 at 1h and 1000 at 5m.
    cache = PromptCache(Clock())
    system = [block(2000, "1h"), block(1000, "5m", fill="y")]
    first = account(cache, request(system))
    assert (first.cache_creation_1h_input_tokens, first.cache_creation_5m_input_tokens) == (
        2000,
        1000,
    )
    # The second request changes the 5m part: reads the 1h prefix, writes the new 5m part.
    second = account(cache, request([block(2000, "1h"), block(1000, "5m", fill="z")]))
    assert second.cache_read_input_tokens == 2000
    assert (second.cache_creation_1h_input_tokens, second.cache_creation_5m_input_tokens) == (
        0,
        1000,
    )


def test_five_minute_entry_expires_and_reading_refreshes_it() -> None:
    clock = Clock()
    cache = PromptCache(clock)
    body = request([block(2000, "5m")])
    account(cache, body)
    clock.now += 200
    assert account(cache, body).cache_read_input_tokens == 2000  # refreshed at t+200
    clock.now += 200
    assert account(cache, body).cache_read_input_tokens == 2000  # 200s after the refresh
    clock.now += 301
    expired = account(cache, body)
    assert expired.cache_read_input_tokens == 0
    assert expired.cache_creation_5m_input_tokens == 2000


def test_one_hour_entry_outlives_five_minutes() -> None:
    clock = Clock()
    cache = PromptCache(clock)
    body = request([block(2000, "1h")])
    account(cache, body)
    clock.now += 3000
    assert account(cache, body).cache_read_input_tokens == 2000
    clock.now += 3601
    assert account(cache, body).cache_read_input_tokens == 0


def conversation(turns: int, breakpoint_at_end: bool = True) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for i in range(turns):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": [block(300, fill=chr(ord("a") + i % 26))]})
    if breakpoint_at_end:
        messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return {"system": "You are helpful.", "messages": messages}


def test_moving_breakpoint_reads_the_previous_turn_by_lookback() -> None:
    cache = PromptCache(Clock())
    first = account(cache, conversation(5))
    assert first.cache_creation_5m_input_tokens == first.prompt_tokens
    second = account(cache, conversation(7))
    # The previous breakpoint's prefix is two blocks back: read it, write the two new turns.
    assert second.cache_read_input_tokens == first.prompt_tokens
    assert second.cache_creation_5m_input_tokens == 2 * (300 + 3)
    assert second.input_tokens == 0


def test_lookback_is_limited_to_twenty_blocks() -> None:
    cache = PromptCache(Clock())
    account(cache, conversation(5))
    far = account(cache, conversation(5 + 21))
    assert far.cache_read_input_tokens == 0
    near = PromptCache(Clock())
    account(near, conversation(5))
    assert account(near, conversation(5 + 19)).cache_read_input_tokens > 0


def test_entries_are_bounded() -> None:
    cache = PromptCache(Clock(), max_entries=3)
    for fill in "abcde":
        account(cache, request([block(2000, "5m", fill=fill)]))
    assert len(cache) == 3


def test_purge_expired() -> None:
    clock = Clock()
    cache = PromptCache(clock)
    account(cache, request([block(2000, "5m")]))
    account(cache, request([block(2000, "1h", fill="b")]))
    clock.now += 400
    assert cache.purge_expired() == 1
    assert len(cache) == 1


def test_split_usage_matches_the_documented_example() -> None:
    # Hit at 5000; 1h breakpoint at 8000; last (5m) breakpoint at 10000; prompt 10500.
    usage = split_usage(10500, 5000, [(3000, "1h"), (8000, "1h"), (10000, "5m")])
    assert usage == CacheUsage(
        input_tokens=500,
        cache_read_input_tokens=5000,
        cache_creation_5m_input_tokens=2000,
        cache_creation_1h_input_tokens=3000,
    )


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=8),
    marks=st.lists(st.sampled_from([None, "5m", "1h"]), min_size=8, max_size=8),
    repeats=st.integers(min_value=1, max_value=3),
)
def test_usage_always_adds_up_to_the_prompt(
    sizes: list[int], marks: list[str | None], repeats: int
) -> None:
    chosen = [m for m in marks[: len(sizes)]]
    # The API requires 1h breakpoints before 5m ones, and at most four.
    seen_5m = False
    count = 0
    for i, mark in enumerate(chosen):
        if mark is None:
            continue
        if (mark == "1h" and seen_5m) or count == 4:
            chosen[i] = None
            continue
        seen_5m = seen_5m or mark == "5m"
        count += 1
    system = [block(n, chosen[i], fill=chr(97 + i)) for i, n in enumerate(sizes)]
    body = request(system)
    cache = PromptCache(Clock())
    total = layout_prompt(body).total_tokens
    for _ in range(repeats):
        usage = account(cache, body)
        assert usage.prompt_tokens == total
        assert (
            min(
                usage.input_tokens,
                usage.cache_read_input_tokens,
                usage.cache_creation_5m_input_tokens,
                usage.cache_creation_1h_input_tokens,
            )
            >= 0
        )
    if repeats > 1:
        # An identical request reads everything it wrote the first time.
        assert usage.cache_creation_input_tokens == 0
