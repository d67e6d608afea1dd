"""Input budgets: a route's ``maxInputTokens``, and what to do with a prompt over it.

Pure functions over request bodies; the router counts (the first step's model's
``count_tokens``, or the local estimate with ``ESTIMATE_MARGIN`` when the upstream cannot
count) and calls them. What trimming never does:

- touch ``tools`` or ``system`` (the stable prefix that prompt-cache breakpoints sit on), or
  the client's ``cache_control`` marks on the blocks it keeps;
- drop or edit the latest turn (the last message: the question being asked now, or the tool
  result the model is waiting for);
- separate a ``tool_use`` from its ``tool_result``: turns are dropped from the front up to
  the next user message that carries no ``tool_result``, so a kept result always has its
  call and a kept call always has its result;
- leave a conversation that starts with anything but a user turn.

When trimming cannot get under the budget, the request is rejected like ``reject`` would.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tierwise.router.request import CHARS_PER_TOKEN, estimate_prompt_tokens

# The local estimate (four characters per token) is inflated by this much before it is
# compared with a budget, so a prompt the estimate lets through is within it in practice.
ESTIMATE_MARGIN = 0.25
# A truncated tool result keeps at least this many characters of its start.
MIN_TOOL_RESULT_CHARS = 200
TRUNCATION_NOTE = "[... {cut} characters of this tool result were cut to fit the input budget]"


class BudgetExceeded(Exception):
    """The prompt is over the budget and cannot (or may not) be trimmed under it."""

    def __init__(self, tokens: int, budget: int) -> None:
        super().__init__(f"prompt is too long: {tokens} tokens > {budget} maximum")
        self.tokens = tokens
        self.budget = budget


@dataclass(frozen=True)
class Trimmed:
    body: dict[str, Any]
    removed_estimate: int  # estimated tokens removed (local estimate units)


def estimated_count(body: Mapping[str, Any]) -> int:
    """The local estimate with its margin: what a budget is checked against without upstream."""
    return with_margin(estimate_prompt_tokens(body))


def with_margin(estimate: int) -> int:
    """An estimated count inflated by ``ESTIMATE_MARGIN``: what is compared with a budget."""
    return math.ceil(estimate * (1 + ESTIMATE_MARGIN))


def allowed_tokens(limit: int, estimated: bool) -> int:
    """The most tokens a prompt may have under ``limit``: the limit itself for a counted
    prompt; for an estimated one, the largest estimate whose margin stays within it."""
    if not estimated:
        return limit
    allowed = math.floor(limit / (1 + ESTIMATE_MARGIN))
    while allowed > 0 and with_margin(allowed) > limit:  # float rounding at the edge
        allowed -= 1
    return allowed


def trim(body: Mapping[str, Any], strategy: str, over_tokens: int, scale: float) -> Trimmed:
    """``body`` with about ``over_tokens`` (counted) tokens removed by ``strategy``.

    ``scale`` converts local-estimate tokens to counted tokens (counted / estimated), so the
    amount to remove is worked out in the estimate's units.
    """
    target = max(1, math.ceil(over_tokens / max(scale, 1e-9)))
    if strategy == "dropOldestTurns":
        return drop_oldest_turns(body, target)
    if strategy == "truncateToolResults":
        return truncate_tool_results(body, target)
    raise ValueError(f"not a trimming strategy: {strategy!r}")


def drop_oldest_turns(body: Mapping[str, Any], target: int) -> Trimmed:
    """Drop whole turns from the front until ``target`` estimated tokens are gone.

    Raises ``BudgetExceeded`` (with placeholder numbers, the caller fills them) when only
    the latest turn would be left and that is still not enough.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or len(messages) < 2:
        raise BudgetExceeded(0, 0)
    before = estimate_prompt_tokens(body)
    start = 0
    while True:
        start = _next_clean_user_turn(messages, start + 1)
        if start is None:
            raise BudgetExceeded(0, 0)
        out = {**body, "messages": messages[start:]}
        removed = before - estimate_prompt_tokens(out)
        if removed >= target:
            return Trimmed(out, removed)


def _next_clean_user_turn(messages: list[Any], index: int) -> int | None:
    """The first index >= ``index`` (never past the last message) of a user message without
    ``tool_result`` blocks: a place a conversation may start."""
    for i in range(index, len(messages)):
        if _is_clean_user_turn(messages[i]):
            return i
    return None


def _is_clean_user_turn(message: Any) -> bool:
    if not isinstance(message, Mapping) or message.get("role") != "user":
        return False
    content = message.get("content")
    if not isinstance(content, list):
        return True
    return not any(isinstance(b, Mapping) and b.get("type") == "tool_result" for b in content)


def truncate_tool_results(body: Mapping[str, Any], target: int) -> Trimmed:
    """Cut the text of ``tool_result`` blocks, oldest first, until ``target`` tokens are gone.

    Each keeps its first ``MIN_TOOL_RESULT_CHARS`` characters and a note of how much was cut;
    its ``tool_use_id``, ``is_error`` and ``cache_control`` stay. The latest turn is never
    edited: it is what the model must answer now.

    Characters are cut in one pass, then the estimate is checked; a block's JSON escapes
    (quotes, newlines) make its tokens more than its characters / 4, so when the first cut
    falls short the shortfall is cut too (from the original body, so no result carries
    two notes), a few times at most.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or len(messages) < 2:
        raise BudgetExceeded(0, 0)
    before = estimate_prompt_tokens(body)
    want = target * CHARS_PER_TOKEN
    for _ in range(4):
        out = {**body, "messages": [*_cut_results(messages[:-1], want), messages[-1]]}
        removed = before - estimate_prompt_tokens(out)
        if removed >= target:
            return Trimmed(out, removed)
        want += (target - removed) * CHARS_PER_TOKEN
    raise BudgetExceeded(0, 0)


def _cut_results(messages: list[Any], want: int) -> list[Any]:
    """``messages`` with up to ``want`` characters cut from their tool results, oldest first."""
    remaining = want
    out_messages = []
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if remaining <= 0 or not isinstance(content, list):
            out_messages.append(message)
            continue
        blocks = []
        for block in content:
            if remaining > 0 and isinstance(block, Mapping) and block.get("type") == "tool_result":
                block, cut = _truncate_block(block, remaining)
                remaining -= cut
            blocks.append(block)
        out_messages.append({**message, "content": blocks})
    return out_messages


def _truncate_block(block: Mapping[str, Any], want: int) -> tuple[dict[str, Any], int]:
    """The block with up to ``want`` characters cut from its text; and how many were cut."""
    content = block.get("content")
    if isinstance(content, str):
        text, cut = _cut(content, want)
        return {**block, "content": text}, cut
    if not isinstance(content, list):
        return dict(block), 0
    total = 0
    parts = []
    for part in content:
        if want - total > 0 and isinstance(part, Mapping) and part.get("type") == "text":
            text, cut = _cut(str(part.get("text", "")), want - total)
            part = {**part, "text": text}
            total += cut
        parts.append(part)
    return {**block, "content": parts}, total


def _cut(text: str, want: int) -> tuple[str, int]:
    spare = len(text) - MIN_TOOL_RESULT_CHARS
    if spare <= 0:
        return text, 0
    # Cut a little more than asked so the note itself is paid for.
    cut = min(spare, want + len(TRUNCATION_NOTE) + 8)
    note = TRUNCATION_NOTE.format(cut=cut)
    kept = text[: len(text) - cut]
    result = f"{kept}\n{note}"
    return result, max(0, len(text) - len(result))
