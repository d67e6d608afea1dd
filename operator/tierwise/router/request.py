"""Building the upstream request of one cascade step from the client's request.

Pure functions over the request body (a dict). The client's body is never mutated: every
changed container is copied on write, everything else is shared, so building several
steps' requests from one body is cheap and safe.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tierwise.router.errors import invalid_request
from tierwise.routerconfig import (
    CACHE_TTLS,
    MAX_BREAKPOINTS,
    MIN_THINKING_BUDGET,
    PromptCaching,
    Route,
    Step,
    Tier,
    canonical_json,
)

CHARS_PER_TOKEN = 4  # cheap prompt-length estimate; only gates breakpoints
# Per-model request rules that a cascade step or a fallback can run into (docs/router.md,
# "Across tiers: per-model rules"). Sources, read 2026-12-06: "What's new in Claude Opus 5.5"
# and "What's new in Claude Sonnet 5.5" (platform.claude.com/docs/en/models/...): on these
# models thinking cannot be turned off or given a manual budget, forced tool use
# (tool_choice any/tool) is a 400, and thinking blocks are tied to the model (and the
# conversation) that produced them; the Opus 5.5 page says the first three also hold on
# Claude Fable 5.1. Matched by prefix so dated snapshot ids follow their model.
ADAPTIVE_ONLY_MODELS = (
    "claude-opus-5-5",
    "claude-sonnet-5-5",
    "claude-haiku-5-5",
    "claude-fable-5-1",
)
THINKING_BLOCKS = frozenset({"thinking", "redacted_thinking"})
MESSAGE_OVERHEAD_TOKENS = 3
IMAGE_TOKENS = 1_500
_UNCACHEABLE_BLOCKS = frozenset({"thinking", "redacted_thinking"})


def check_messages_request(body: Mapping[str, Any]) -> None:
    """What the Messages API requires and the router relies on, with the API's 400 text.

    ``max_tokens`` is required, as the official SDKs and the API require it: a route's caps
    are ceilings on it, never a default. ``0`` is valid: the API then reads (and writes) the
    prompt cache without generating anything, which clients use to pre-warm it. Sampling
    numbers must be finite (``NaN`` would be forwarded as invalid JSON).
    """
    check_model(body.get("model"))
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise invalid_request("max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise invalid_request("max_tokens: Input should be a valid integer")
    if max_tokens < 0:
        raise invalid_request("max_tokens: Input should be greater than or equal to 0")
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if isinstance(value, float) and not math.isfinite(value):
            raise invalid_request(f"{name}: Input should be a finite number")


def check_model(model: object) -> None:
    """The API's 400 for a ``model`` that is present but not a string (``{"model": 5}``).

    A missing model is left to routing (the default route or the route header may serve it).
    """
    if model is not None and not isinstance(model, str):
        raise invalid_request("model: Input should be a valid string")


def effective_max_tokens(client: Any, step: Step, tier: Tier) -> int | None:
    """min(client's ``max_tokens``, the step's cap, the tier's ``maxOutputTokens``).

    ``None`` (leave the body as sent) when the client sent no integer: caps only lower.
    """
    if not isinstance(client, int) or isinstance(client, bool):
        return None
    caps = [c for c in (step.max_tokens, tier.limits.max_output_tokens) if c is not None]
    return min([client, *caps])


def thinking_budget(body: Mapping[str, Any]) -> int | None:
    """The client's manual thinking budget (``thinking.type: enabled``), if any."""
    thinking = body.get("thinking")
    if not isinstance(thinking, Mapping) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int):
        return None
    return budget


def output_limits(body: Mapping[str, Any], step: Step, tier: Tier) -> tuple[int | None, Any]:
    """``max_tokens`` and ``thinking`` for one step, never turning a valid request invalid.

    The API requires ``thinking.budget_tokens < max_tokens`` (thinking counts toward
    ``max_tokens``). A step's ``maxTokens`` caps the *answer*: with manual thinking, the
    step's limit is the client's budget plus the cap (still at most the client's
    ``max_tokens`` and the tier's ``maxOutputTokens``), so a 256-token triage cap does not
    make a thinking request a 400. Only the tier's ``maxOutputTokens`` (the model's own
    limit) can be below the budget; then the budget is lowered to half of that limit, or,
    when that is under the API's 1,024 minimum, thinking is turned off for the step.
    Returns the body's own ``thinking`` when it is unchanged.
    """
    client = body.get("max_tokens")
    thinking = body.get("thinking")
    budget = thinking_budget(body)
    not_an_int = client is not None and (isinstance(client, bool) or not isinstance(client, int))
    if budget is None or not_an_int:
        return effective_max_tokens(client, step, tier), thinking
    caps = [] if client is None else [client]
    if step.max_tokens is not None:
        caps.append(budget + step.max_tokens)
    if tier.limits.max_output_tokens is not None:
        caps.append(tier.limits.max_output_tokens)
    if not caps:
        return None, thinking
    limit = min(caps)
    if limit > budget or (client is not None and client <= budget):
        return limit, thinking  # fits (or the client's own request is invalid: left as is)
    lowered = limit // 2
    if lowered >= MIN_THINKING_BUDGET:
        return limit, {**thinking, "budget_tokens": lowered}
    return effective_max_tokens(client, step, tier), {"type": "disabled"}


def build_step_request(
    body: Mapping[str, Any],
    route: Route,
    step: Step,
    tier: Tier,
    prompt_caching: PromptCaching,
    *,
    stream: bool,
    mixed_models: bool = False,
) -> dict[str, Any]:
    """The body sent to ``tier`` for ``step``: model, caps, effort and thinking, instruction,
    breakpoints, then the tier model's own rules (``adapt_to_model``).

    A step's ``effort`` and ``thinking`` replace the client's (they are the operator's cost
    lever); the step's caps then apply to the request as it will be sent. ``mixed_models``:
    the route's steps and fallback use more than one model, so the conversation's thinking
    blocks may come from another model than this tier's.
    """
    out = dict(body)
    out["model"] = tier.model
    source = apply_step_reasoning(body, step)
    if step.effort is not None:
        out["output_config"] = source["output_config"]
    cap, thinking = output_limits(source, step, tier)
    if cap is not None:
        out["max_tokens"] = cap
    if thinking is not body.get("thinking"):
        out["thinking"] = thinking
    if stream:
        out["stream"] = True
    else:
        out.pop("stream", None)
    if route.format_instruction:
        out["system"] = append_system_text(body.get("system"), route.format_instruction)
    out = adapt_to_model(out, tier.model, mixed_models=mixed_models)
    if prompt_caching.enabled and prompt_caching.breakpoints:
        out = insert_breakpoints(out, prompt_caching, tier.min_cacheable_tokens)
    return out


def adaptive_only(model: str) -> bool:
    """Whether ``model`` refuses turning thinking off, manual budgets and forced tool use,
    and binds thinking blocks to itself (``ADAPTIVE_ONLY_MODELS``)."""
    return model.startswith(ADAPTIVE_ONLY_MODELS)


def adapt_to_model(body: dict[str, Any], model: str, *, mixed_models: bool) -> dict[str, Any]:
    """``body`` adapted to what ``model`` accepts, instead of forwarding it into a 400.

    On an adaptive-only model: ``thinking: disabled`` is dropped (the model's default,
    adaptive thinking, applies; ``output_config.effort`` is the lever for less of it);
    ``thinking: enabled`` with a budget becomes ``adaptive`` (its ``display`` kept); a
    forced ``tool_choice`` (``any`` or a named tool) becomes ``auto`` (its
    ``disable_parallel_tool_use`` kept); and, when ``mixed_models``, thinking blocks of
    earlier assistant turns are removed, since another model may have written them and
    this one would refuse them (see ``strip_thinking_blocks``).
    """
    if not adaptive_only(model):
        return body
    out = body
    thinking = body.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") in ("disabled", "enabled"):
        out = dict(out)
        if thinking.get("type") == "disabled":
            out.pop("thinking")
        else:
            adaptive: dict[str, Any] = {"type": "adaptive"}
            if "display" in thinking:
                adaptive["display"] = thinking["display"]
            out["thinking"] = adaptive
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") in ("any", "tool"):
        out = dict(out) if out is body else out
        auto: dict[str, Any] = {"type": "auto"}
        if "disable_parallel_tool_use" in choice:
            auto["disable_parallel_tool_use"] = choice["disable_parallel_tool_use"]
        out["tool_choice"] = auto
    if mixed_models:
        out = strip_thinking_blocks(out)
    return out


def strip_thinking_blocks(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without ``thinking``/``redacted_thinking`` blocks in its assistant turns.

    The router cannot tell which tier wrote an earlier turn (the client holds the
    conversation, and signatures are opaque), so on a route that mixes models every such
    block is removed before a request goes to a model that binds them: the conversation is
    never refused for them, at the price of that model not seeing earlier reasoning (which
    it could not have read when another model wrote it). An assistant turn left with no
    content keeps a short text block, so the turns still alternate.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not any(_has_thinking(m) for m in messages):
        return body
    out_messages: list[Any] = []
    for message in messages:
        if not _has_thinking(message):
            out_messages.append(message)
            continue
        kept = [b for b in message["content"] if not _is_thinking(b)]
        out_messages.append({**message, "content": kept or [{"type": "text", "text": "..."}]})
    return {**body, "messages": out_messages}


def _is_thinking(block: Any) -> bool:
    return isinstance(block, Mapping) and block.get("type") in THINKING_BLOCKS


def _has_thinking(message: Any) -> bool:
    if not isinstance(message, Mapping) or message.get("role") != "assistant":
        return False
    content = message.get("content")
    return isinstance(content, list) and any(_is_thinking(b) for b in content)


def apply_step_reasoning(body: Mapping[str, Any], step: Step) -> Mapping[str, Any]:
    """``body`` with the step's ``thinking`` and ``output_config.effort``, when it sets them."""
    if step.effort is None and step.thinking is None:
        return body
    out = dict(body)
    if step.thinking is not None:
        out["thinking"] = step.thinking.to_request()
    if step.effort is not None:
        config = body.get("output_config")
        out["output_config"] = {
            **(config if isinstance(config, Mapping) else {}),
            "effort": step.effort,
        }
    return out


def build_count_tokens_request(body: Mapping[str, Any], route: Route, tier: Tier) -> dict[str, Any]:
    """A count_tokens body as the route's first step would send it (model, instruction)."""
    out = dict(body)
    out["model"] = tier.model
    if route.format_instruction:
        out["system"] = append_system_text(body.get("system"), route.format_instruction)
    return out


def append_system_text(system: Any, text: str) -> Any:
    """The system prompt with ``text`` appended, keeping the client's shape."""
    if system is None or system == "" or system == []:
        return text
    if isinstance(system, str):
        return f"{system}\n\n{text}"
    if isinstance(system, list):
        return [*system, {"type": "text", "text": text}]
    return system  # not a valid system prompt: left for the API to reject


# --- prompt-caching breakpoints ---------------------------------------------------------


def text_tokens(text: str) -> int:
    """Four characters per token, rounded up."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def block_tokens(block: Any) -> int:
    """Estimated tokens of one prompt block.

    The same rule the emulator counts with (text: its characters / 4; any other block: its
    compact key-sorted JSON without ``cache_control`` / 4), so breakpoint decisions made
    here agree with what the emulator then caches. Only gates breakpoints: cheap matters
    more than exact.
    """
    if isinstance(block, str):
        return text_tokens(block)
    if not isinstance(block, Mapping):
        return 0
    if block.get("type") == "text":
        text = block.get("text", "")
        return text_tokens(text if isinstance(text, str) else "")
    if block.get("type") == "image":
        return IMAGE_TOKENS
    plain = {k: v for k, v in block.items() if k != "cache_control"}
    return text_tokens(canonical_json(plain))


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    """Estimated prompt tokens of a request body (tools, system, messages)."""
    return sum(_section_tokens(body))


def _section_tokens(body: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """Estimated tokens of (tools, system, history = all messages but the last, last)."""
    tools = body.get("tools")
    tools_tokens = sum(block_tokens(t) for t in tools) if isinstance(tools, list) else 0
    system = body.get("system")
    if isinstance(system, list):
        system_tokens = sum(block_tokens(b) for b in system)
    else:
        system_tokens = block_tokens(system) if isinstance(system, str) else 0
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return tools_tokens, system_tokens, 0, 0
    history = sum(_message_tokens(m) for m in messages[:-1])
    return tools_tokens, system_tokens, history, _message_tokens(messages[-1])


def _message_tokens(message: Any) -> int:
    content = message.get("content") if isinstance(message, Mapping) else None
    if isinstance(content, list):
        blocks = sum(block_tokens(b) for b in content)
    else:
        blocks = block_tokens(content) if isinstance(content, str) else 0
    return blocks + MESSAGE_OVERHEAD_TOKENS


def _ttl(cache_control: Any) -> str:
    ttl = cache_control.get("ttl") if isinstance(cache_control, Mapping) else None
    return ttl if ttl in CACHE_TTLS else "5m"  # an omitted ttl is the API's default 5m


def existing_breakpoints(body: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(position in prompt order, ttl) of the client's own ``cache_control`` markers."""
    found: list[tuple[int, str]] = []
    blocks = _prompt_blocks(body)
    for position, block in enumerate(blocks):
        if isinstance(block, Mapping) and block.get("cache_control"):
            found.append((position, _ttl(block["cache_control"])))
    automatic = body.get("cache_control")
    if isinstance(automatic, Mapping) and blocks and (not found or found[-1][0] != len(blocks) - 1):
        # Top-level cache_control (automatic caching) marks the last block; it counts too.
        found.append((len(blocks) - 1, _ttl(automatic)))
    return found


def _prompt_blocks(body: Mapping[str, Any]) -> list[Any]:
    """Tools, system blocks and message content blocks in the order the API caches them."""
    blocks: list[Any] = []
    tools = body.get("tools")
    if isinstance(tools, list):
        blocks.extend(tools)
    system = body.get("system")
    if isinstance(system, list):
        blocks.extend(system)
    elif system:
        blocks.append(system)
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, Mapping) else None
            if isinstance(content, list):
                blocks.extend(content)
            else:
                blocks.append(content)
    return blocks


def insert_breakpoints(
    body: dict[str, Any], caching: PromptCaching, min_cacheable_tokens: int
) -> dict[str, Any]:
    """Add ``cache_control`` breakpoints per the cache profile; returns a new body.

    Candidates in prompt order: the last tool, the last system block, the last content
    block of the second-to-last message (the history stable across turns). A candidate is
    skipped when the prefix it closes is shorter than ``min_cacheable_tokens`` (the API
    would not cache it and the breakpoint would be wasted), when it is already marked, when
    no breakpoint is left of ``maxBreakpoints`` (at most the API's 4, the client's own
    counted), or when it would break the API's rule
    that longer-TTL (1h) breakpoints come before shorter-TTL (5m) ones.
    """
    placed = existing_breakpoints(body)
    budget = min(caching.max_breakpoints, MAX_BREAKPOINTS) - len(placed)
    if budget <= 0:
        return body
    tools_tokens, system_tokens, history_tokens, _last = _section_tokens(body)
    tools = body.get("tools")
    system = body.get("system")
    messages = body.get("messages")
    tools_len = len(tools) if isinstance(tools, list) else 0
    system_len = len(system) if isinstance(system, list) else (1 if system else 0)
    candidates: list[tuple[str, int, int]] = []  # (kind, block position, prefix tokens)
    if tools_len:
        candidates.append(("tools", tools_len - 1, tools_tokens))
    if system_len:
        candidates.append(("system", tools_len + system_len - 1, tools_tokens + system_tokens))
    if isinstance(messages, list) and len(messages) >= 2:
        history_blocks = sum(_content_len(m) for m in messages[:-1])
        candidates.append(
            (
                "history",
                tools_len + system_len + history_blocks - 1,
                tools_tokens + system_tokens + history_tokens,
            )
        )
    control = {"type": "ephemeral", "ttl": caching.ttl}
    out = body
    for kind, position, prefix_tokens in candidates:
        if budget <= 0:
            break
        if kind not in caching.breakpoints or prefix_tokens < min_cacheable_tokens:
            continue
        if not _ttl_order_allows(placed, position, caching.ttl):
            continue
        marked = _MARKERS[kind](out, control)
        if marked is None:
            continue
        out = marked
        placed.append((position, caching.ttl))
        budget -= 1
    return out


def _ttl_order_allows(placed: list[tuple[int, str]], position: int, ttl: str) -> bool:
    """False if a breakpoint is already there, or the API's TTL order would break."""
    for p, t in placed:
        if p == position:
            return False  # the client's own breakpoint already closes this prefix
        if ttl == "1h" and t == "5m" and p < position:
            return False  # a 1h breakpoint may not follow a 5m one
        if ttl == "5m" and t == "1h" and p > position:
            return False
    return True


def _content_len(message: Any) -> int:
    content = message.get("content") if isinstance(message, Mapping) else None
    return len(content) if isinstance(content, list) else 1


def _mark_tools(body: dict[str, Any], control: dict[str, str]) -> dict[str, Any] | None:
    tools = list(body["tools"])
    if not isinstance(tools[-1], Mapping):
        return None
    tools[-1] = {**tools[-1], "cache_control": dict(control)}
    return {**body, "tools": tools}


def _mark_system(body: dict[str, Any], control: dict[str, str]) -> dict[str, Any] | None:
    system = body["system"]
    if isinstance(system, str):
        return {
            **body,
            "system": [{"type": "text", "text": system, "cache_control": dict(control)}],
        }
    if not isinstance(system, list) or not isinstance(system[-1], Mapping):
        return None
    blocks = list(system)
    blocks[-1] = {**blocks[-1], "cache_control": dict(control)}
    return {**body, "system": blocks}


def _mark_history(body: dict[str, Any], control: dict[str, str]) -> dict[str, Any] | None:
    messages = list(body["messages"])
    message = messages[-2]
    if not isinstance(message, Mapping):
        return None
    content = message.get("content")
    if isinstance(content, str):
        if not content:
            return None
        new_content: list[Any] = [{"type": "text", "text": content, "cache_control": dict(control)}]
    elif isinstance(content, list) and content and isinstance(content[-1], Mapping):
        if content[-1].get("type") in _UNCACHEABLE_BLOCKS:
            return None
        new_content = [*content[:-1], {**content[-1], "cache_control": dict(control)}]
    else:
        return None
    messages[-2] = {**message, "content": new_content}
    return {**body, "messages": messages}


_MARKERS = {"tools": _mark_tools, "system": _mark_system, "history": _mark_history}
