"""Building upstream requests: caps, format instruction, cache breakpoints (no network)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierwise.emulator import count_prompt_tokens
from tierwise.pricing import catalog_prices
from tierwise.router.request import (
    MAX_BREAKPOINTS,
    build_count_tokens_request,
    build_step_request,
    effective_max_tokens,
    estimate_prompt_tokens,
    existing_breakpoints,
    insert_breakpoints,
    output_limits,
)
from tierwise.routerconfig import PromptCaching, Route, Step, Tier, TierLimits

PRICES = catalog_prices("claude-haiku-4-5")


def make_tier(max_output: int | None = None, min_cache: int = 10) -> Tier:
    return Tier(
        name="haiku",
        model="claude-haiku-4-5",
        endpoint="http://x",
        api_key_env=None,
        prices=PRICES,  # type: ignore[arg-type]
        limits=TierLimits(max_output_tokens=max_output),
        min_cacheable_tokens=min_cache,
    )


ROUTE = Route(name="r", models=("tierwise/r",), steps=(Step("haiku", 256),))
NO_CACHE = PromptCaching()
ALL = PromptCaching(True, frozenset({"tools", "system", "history"}), "5m")
LONG = "x" * 400  # 100 tokens


@pytest.mark.parametrize(
    ("client", "step_cap", "tier_cap", "expected"),
    [
        (1000, 256, None, 256),
        (100, 256, None, 100),
        (1000, None, None, 1000),
        (1000, 512, 300, 300),
        (1000, None, 300, 300),
        (None, 256, None, None),  # caps are ceilings, never a default
        (None, None, None, None),
    ],
)
def test_effective_max_tokens_is_the_minimum(
    client: int | None, step_cap: int | None, tier_cap: int | None, expected: int | None
) -> None:
    assert effective_max_tokens(client, Step("t", step_cap), make_tier(tier_cap)) == expected


def test_step_request_sets_model_cap_and_keeps_client_body_intact() -> None:
    body = {
        "model": "tierwise/r",
        "max_tokens": 1000,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0,
    }
    before = copy.deepcopy(body)
    out = build_step_request(body, ROUTE, ROUTE.steps[0], make_tier(), NO_CACHE, stream=False)
    assert out["model"] == "claude-haiku-4-5"
    assert out["max_tokens"] == 256
    assert "stream" not in out
    assert out["temperature"] == 0
    assert body == before
    live = build_step_request(body, ROUTE, ROUTE.steps[0], make_tier(), NO_CACHE, stream=True)
    assert live["stream"] is True


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        (None, "JSON only"),
        ("Be brief.", "Be brief.\n\nJSON only"),
        (
            [{"type": "text", "text": "Be brief."}],
            [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "JSON only"}],
        ),
    ],
)
def test_format_instruction_is_appended_to_system(system: Any, expected: Any) -> None:
    route = Route("r", ("tierwise/r",), (Step("haiku", None),), format_instruction="JSON only")
    body: dict[str, Any] = {"model": "m", "max_tokens": 5, "messages": []}
    if system is not None:
        body["system"] = system
    out = build_step_request(body, route, route.steps[0], make_tier(), NO_CACHE, stream=False)
    assert out["system"] == expected
    counted = build_count_tokens_request(body, route, make_tier())
    assert counted["system"] == expected and counted["model"] == "claude-haiku-4-5"


def conversation() -> dict[str, Any]:
    return {
        "model": "m",
        "max_tokens": 10,
        "tools": [{"name": "a", "description": LONG, "input_schema": {"type": "object"}}],
        "system": [{"type": "text", "text": LONG}],
        "messages": [
            {"role": "user", "content": LONG},
            {"role": "assistant", "content": [{"type": "text", "text": LONG}]},
            {"role": "user", "content": "next question"},
        ],
    }


def markers(body: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for tool in body.get("tools", []):
        if "cache_control" in tool:
            found.append(("tools", tool["cache_control"]))
    system = body.get("system")
    if isinstance(system, list):
        found += [("system", b["cache_control"]) for b in system if "cache_control" in b]
    for i, m in enumerate(body["messages"]):
        if isinstance(m["content"], list):
            found += [(f"msg{i}", b["cache_control"]) for b in m["content"] if "cache_control" in b]
    return found


def test_breakpoints_on_last_tool_last_system_block_and_stable_history() -> None:
    body = conversation()
    out = insert_breakpoints(body, ALL, 10)
    control = {"type": "ephemeral", "ttl": "5m"}
    assert markers(out) == [("tools", control), ("system", control), ("msg1", control)]
    assert markers(body) == []  # the client's body is untouched


def test_string_system_and_string_history_become_blocks() -> None:
    body = conversation()
    body["system"] = LONG
    body["messages"][1]["content"] = LONG
    out = insert_breakpoints(body, ALL, 10)
    assert out["system"] == [
        {"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": "5m"}}
    ]
    assert out["messages"][1]["content"][0]["cache_control"]["ttl"] == "5m"


def test_short_prefixes_are_skipped() -> None:
    body = conversation()
    # tools ~ 110 tokens, + system 100, + history ~ 206: a minimum of 250 leaves only history.
    out = insert_breakpoints(body, ALL, 250)
    assert [kind for kind, _ in markers(out)] == ["msg1"]
    assert markers(insert_breakpoints(body, ALL, 100_000)) == []


def test_only_configured_kinds_are_inserted() -> None:
    out = insert_breakpoints(conversation(), PromptCaching(True, frozenset({"system"}), "1h"), 10)
    assert markers(out) == [("system", {"type": "ephemeral", "ttl": "1h"})]


def test_never_more_than_four_counting_the_clients_own() -> None:
    body = conversation()
    body["messages"][0]["content"] = [
        {"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}},
    ]
    body["messages"][2]["content"] = [
        {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}},
    ]
    assert len(existing_breakpoints(body)) == 3
    out = insert_breakpoints(body, ALL, 10)
    assert len(existing_breakpoints(out)) == MAX_BREAKPOINTS
    # The first candidate in prompt order (tools) got the one breakpoint left.
    assert "cache_control" in out["tools"][0]


def test_max_breakpoints_counts_the_clients_own() -> None:
    body = conversation()
    body["messages"][0]["content"] = [
        {"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}},
    ]
    two = PromptCaching(True, frozenset({"tools", "system", "history"}), "5m", max_breakpoints=2)
    out = insert_breakpoints(body, two, 10)
    assert len(existing_breakpoints(out)) == 2
    assert "cache_control" in out["tools"][0]
    one = PromptCaching(True, frozenset({"tools", "system", "history"}), "5m", max_breakpoints=1)
    assert insert_breakpoints(body, one, 10) is body


def test_a_1h_breakpoint_never_follows_a_5m_one() -> None:
    body = conversation()
    body["system"][0]["cache_control"] = {"type": "ephemeral"}  # the client's, 5m
    out = insert_breakpoints(body, PromptCaching(True, frozenset({"tools", "history"}), "1h"), 10)
    kinds = [kind for kind, _ in markers(out)]
    assert kinds == ["tools", "system"]  # history (after the 5m one) was skipped


def test_a_5m_breakpoint_never_precedes_a_1h_one() -> None:
    body = conversation()
    body["messages"][1]["content"][0]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    out = insert_breakpoints(body, PromptCaching(True, frozenset({"tools", "system"}), "5m"), 10)
    assert [kind for kind, _ in markers(out)] == ["msg1"]


def test_the_clients_own_breakpoint_at_the_same_place_is_not_duplicated() -> None:
    body = conversation()
    body["system"][0]["cache_control"] = {"type": "ephemeral", "ttl": "5m"}
    out = insert_breakpoints(body, PromptCaching(True, frozenset({"system"}), "5m"), 10)
    assert len(existing_breakpoints(out)) == 1


def test_top_level_automatic_cache_control_counts() -> None:
    body = conversation()
    body["cache_control"] = {"type": "ephemeral"}
    assert len(existing_breakpoints(body)) == 1


def test_thinking_blocks_are_not_marked() -> None:
    body = conversation()
    body["messages"][1]["content"] = [{"type": "thinking", "thinking": LONG, "signature": "s"}]
    out = insert_breakpoints(body, PromptCaching(True, frozenset({"history"}), "5m"), 10)
    assert markers(out) == []


def test_estimate_agrees_with_the_emulators_count() -> None:
    body = conversation()
    body["messages"].append(
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "a", "input": {"q": "é" * 33}}],
        }
    )
    assert estimate_prompt_tokens(body) == count_prompt_tokens(body)


texts = st.text(alphabet="abcdefgh ", min_size=0, max_size=300)
blocks = st.lists(
    st.builds(
        lambda t, cc, ttl: {
            "type": "text",
            "text": t or "x",
            **({"cache_control": {"type": "ephemeral", "ttl": ttl}} if cc else {}),
        },
        texts,
        st.booleans(),
        st.sampled_from(["5m", "1h"]),
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=200, deadline=None)
@given(
    system=st.one_of(st.none(), texts, blocks),
    contents=st.lists(st.one_of(texts.map(lambda t: t or "x"), blocks), min_size=1, max_size=5),
    kinds=st.sets(st.sampled_from(["tools", "system", "history"])),
    ttl=st.sampled_from(["5m", "1h"]),
    limit=st.integers(1, 4),
    min_tokens=st.integers(0, 200),
    with_tools=st.booleans(),
)
def test_breakpoint_invariants(
    system: Any,
    contents: list[Any],
    kinds: set[str],
    ttl: str,
    limit: int,
    min_tokens: int,
    with_tools: bool,
) -> None:
    body: dict[str, Any] = {
        "model": "m",
        "max_tokens": 1,
        "messages": [
            {"role": "user" if i % 2 == 0 else "assistant", "content": c}
            for i, c in enumerate(contents)
        ],
    }
    if system:
        body["system"] = system
    if with_tools:
        body["tools"] = [{"name": "t", "input_schema": {"type": "object"}}]
    before = copy.deepcopy(body)
    out = insert_breakpoints(body, PromptCaching(True, frozenset(kinds), ttl, limit), min_tokens)
    assert body == before
    theirs = existing_breakpoints(before)
    ours = existing_breakpoints(out)
    assert len(ours) <= max(min(limit, MAX_BREAKPOINTS), len(theirs))
    assert set(theirs) <= set(ours)
    added = [b for b in ours if b not in theirs]
    for position, added_ttl in added:
        assert added_ttl == ttl
        # No new breakpoint breaks the 1h-before-5m order against any other breakpoint.
        for other_position, other_ttl in ours:
            if other_position < position:
                assert not (added_ttl == "1h" and other_ttl == "5m")
            if other_position > position:
                assert not (added_ttl == "5m" and other_ttl == "1h")
    # Stripping cache_control gives back the client's prompt (modulo string -> block form).
    assert estimate_prompt_tokens(out) == estimate_prompt_tokens(before)


@pytest.mark.parametrize(
    ("client", "budget", "step_cap", "tier_cap", "expected_max", "expected_thinking"),
    [
        # No thinking: the plain minimum.
        (1000, None, 256, None, 256, None),
        # The step cap bounds the answer; the budget comes on top (capped by the client).
        (4000, 2000, 256, None, 2256, {"type": "enabled", "budget_tokens": 2000}),
        (2100, 2000, 256, None, 2100, {"type": "enabled", "budget_tokens": 2000}),
        # The tier's own limit is below the budget: the budget is halved to fit.
        (8000, 6000, 256, 3000, 3000, {"type": "enabled", "budget_tokens": 1500}),
        # ... and when half of it would be under the API's 1,024 minimum, thinking is off.
        (8000, 6000, 256, 1500, 256, {"type": "disabled"}),
        # An invalid client request (budget >= max_tokens) is left for the API to reject.
        (1000, 2000, 256, None, 1000, {"type": "enabled", "budget_tokens": 2000}),
        # Without max_tokens, the cap still leaves the budget room.
        (None, 2000, 256, None, 2256, {"type": "enabled", "budget_tokens": 2000}),
    ],
)
def test_output_limits_keep_thinking_requests_valid(
    client: int | None,
    budget: int | None,
    step_cap: int | None,
    tier_cap: int | None,
    expected_max: int,
    expected_thinking: dict | None,
) -> None:
    body: dict = {"max_tokens": client}
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    max_tokens, thinking = output_limits(body, Step("t", step_cap), make_tier(tier_cap))
    assert (max_tokens, thinking) == (expected_max, expected_thinking)
    if thinking and thinking.get("type") == "enabled" and (client or 10**9) > budget:  # type: ignore[operator]
        assert thinking["budget_tokens"] < max_tokens  # the API's rule holds
