"""Input-budget trimming: the invariants, on bodies built to break them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierwise.router.input_budget import (
    ESTIMATE_MARGIN,
    BudgetExceeded,
    drop_oldest_turns,
    estimated_count,
    trim,
    truncate_tool_results,
)
from tierwise.router.request import estimate_prompt_tokens

SYSTEM = [
    {
        "type": "text",
        "text": "You are a support agent. " * 40,
        "cache_control": {"type": "ephemeral"},
    }
]
TOOLS = [{"name": "lookup", "description": "Look up an order", "input_schema": {"type": "object"}}]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def tool_call(call_id: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": call_id, "name": "lookup", "input": {}}],
    }


def tool_result(call_id: str, text: str) -> dict[str, Any]:
    return {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call_id, "content": text}],
    }


def conversation() -> dict[str, Any]:
    return {
        "model": "m",
        "max_tokens": 100,
        "system": SYSTEM,
        "tools": TOOLS,
        "messages": [
            user("first question " * 50),
            tool_call("a"),
            tool_result("a", "order a " * 400),
            assistant("answer one " * 50),
            user("second question " * 50),
            tool_call("b"),
            tool_result("b", "order b " * 400),
            assistant("answer two"),
            user("the latest question"),
        ],
    }


def check_invariants(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert after["system"] == before["system"] and after["tools"] == before["tools"]
    assert after["messages"][-1] == before["messages"][-1]
    first = after["messages"][0]
    assert first["role"] == "user"
    calls = {
        b["id"]
        for m in after["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "tool_use"
    }
    results = {
        b["tool_use_id"]
        for m in after["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "tool_result"
    }
    assert calls == results  # every kept call has its result and every result its call


def test_drop_oldest_turns_keeps_system_latest_turn_and_tool_pairs() -> None:
    body = conversation()
    trimmed = drop_oldest_turns(body, 10)
    check_invariants(body, trimmed.body)
    # The first clean user turn after the front is "second question": the whole first
    # exchange, tool call and result included, went together.
    assert trimmed.body["messages"][0] == body["messages"][4]
    assert trimmed.removed_estimate == estimate_prompt_tokens(body) - estimate_prompt_tokens(
        trimmed.body
    )


def test_dropping_everything_but_the_latest_turn_and_still_over_is_an_error() -> None:
    body = conversation()
    with pytest.raises(BudgetExceeded):
        drop_oldest_turns(body, estimate_prompt_tokens(body))  # more than all history


def test_truncate_tool_results_cuts_oldest_first_and_keeps_ids_and_marks() -> None:
    body = conversation()
    body["messages"][2]["content"][0]["cache_control"] = {"type": "ephemeral"}
    trimmed = truncate_tool_results(body, 300)
    check_invariants(body, trimmed.body)
    first = trimmed.body["messages"][2]["content"][0]
    second = trimmed.body["messages"][6]["content"][0]
    assert first["tool_use_id"] == "a" and first["cache_control"] == {"type": "ephemeral"}
    assert "characters of this tool result were cut" in first["content"]
    assert second == body["messages"][6]["content"][0]  # the newer result untouched
    assert trimmed.removed_estimate >= 300
    assert len(trimmed.body["messages"]) == len(body["messages"])


def test_truncating_list_content_and_running_out() -> None:
    body = conversation()
    body["messages"][2]["content"][0]["content"] = [{"type": "text", "text": "x" * 4000}]
    trimmed = truncate_tool_results(body, 500)
    text = trimmed.body["messages"][2]["content"][0]["content"][0]["text"]
    assert len(text) < 4000 and text.startswith("x" * 200)
    with pytest.raises(BudgetExceeded):
        truncate_tool_results(body, 100_000)


def test_estimate_carries_its_stated_margin() -> None:
    body = conversation()
    assert estimated_count(body) >= estimate_prompt_tokens(body) * (1 + ESTIMATE_MARGIN)


def test_unknown_strategy_is_a_bug_not_a_silent_pass() -> None:
    with pytest.raises(ValueError):
        trim(conversation(), "reject", 10, 1.0)


turns = st.lists(st.sampled_from(["user", "assistant", "call", "result"]), min_size=1, max_size=14)


@settings(max_examples=200, deadline=None)
@given(turns, st.integers(min_value=1, max_value=5000))
def test_drop_oldest_turns_invariants_hold_for_any_conversation(
    kinds: list[str], target: int
) -> None:
    messages: list[dict[str, Any]] = [user("start " * 30)]
    open_call = None
    for i, kind in enumerate(kinds):
        if kind == "call" and open_call is None:
            open_call = f"t{i}"
            messages.append(tool_call(open_call))
            messages.append(tool_result(open_call, "r " * 100))
            open_call = None
        elif kind == "assistant":
            messages.append(assistant("a " * 60))
        else:
            messages.append(user("u " * 60))
    body = {"system": SYSTEM, "tools": TOOLS, "messages": messages}
    try:
        trimmed = drop_oldest_turns(body, target)
    except BudgetExceeded:
        return
    check_invariants(body, trimmed.body)
    assert trimmed.removed_estimate >= target
