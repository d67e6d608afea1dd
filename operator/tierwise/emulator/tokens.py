"""The emulator's token approximation and the block layout of a prompt.

One deterministic rule counts tokens everywhere (``count_tokens``, ``usage``, the minimum
cacheable length), so the numbers always add up:

* a text block (system or message) is ``ceil(len(text) / 4)`` tokens;
* an image block is a flat ``IMAGE_TOKENS``;
* any other block (a tool definition, ``tool_use``, ``tool_result``, ``document``, ...) is
  ``ceil(len(canonical_json(block)) / 4)`` tokens, where the canonical JSON has sorted keys,
  no whitespace, and no ``cache_control`` field;
* each message adds ``MESSAGE_OVERHEAD_TOKENS`` for its role marker, counted with its
  first block;
* a request with ``tools`` carries the model's hidden tool-use system prompt
  (``tool_prompt_tokens``, counted before the tools), as the API bills it;
* thinking blocks of earlier assistant turns are dropped from the context and not counted,
  as the API does; only the last assistant turn of an ongoing tool loop keeps them.

The settings that the API documents as invalidating the *messages* cache (``tool_choice``,
the thinking settings, whether the prompt has images) are folded into the prefix keys at the
start of the messages, so changing them misses the messages' entries but still reads the
tools' and system's.

The prompt is laid out in the API's order, tools, then system, then messages, as a
sequence of blocks. Prefix sizes and (when the request has cache breakpoints) prefix
digests are computed at every block boundary, because that is where the API can read or
write a cache entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 3
IMAGE_TOKENS = 1_500
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


def text_tokens(text: str) -> int:
    """Tokens of a piece of text: four characters per token, rounded up."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def canonical_json(block: Mapping[str, Any]) -> str:
    """The block as compact, key-sorted JSON without its ``cache_control`` marker."""
    if "cache_control" in block:
        block = {k: v for k, v in block.items() if k != "cache_control"}
    return json.dumps(block, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def block_tokens(block: Mapping[str, Any]) -> int:
    kind = block.get("type")
    if kind == "text":
        return text_tokens(block.get("text", ""))
    if kind == "image":
        return IMAGE_TOKENS
    return text_tokens(canonical_json(block))


@dataclass(frozen=True, slots=True)
class Breakpoint:
    """A ``cache_control`` marker: the prefix up to and including block ``index``."""

    index: int
    ttl: str


@dataclass(frozen=True, slots=True)
class PromptLayout:
    """Token positions of a prompt's block boundaries.

    ``boundaries[i]`` is the number of prompt tokens up to and including block ``i``;
    ``keys[i]`` identifies that exact prefix (empty when there are no breakpoints, since
    nothing can be cached then and hashing would be wasted work).
    """

    total_tokens: int
    boundaries: tuple[int, ...]
    keys: tuple[bytes, ...]
    breakpoints: tuple[Breakpoint, ...]


THINKING_BLOCKS = frozenset({"thinking", "redacted_thinking"})


def iter_blocks(body: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any], bool]]:
    """(section, block, starts_message) for every block, in prompt order.

    A string ``system`` or message ``content`` is one text block, as the API treats it.
    Thinking blocks of earlier turns are left out (see the module docstring).
    """
    blocks: list[tuple[str, Mapping[str, Any], bool]] = []
    for tool in body.get("tools") or ():
        blocks.append(("tool", tool, False))
    system = body.get("system")
    if isinstance(system, str):
        if system:
            blocks.append(("system", {"type": "text", "text": system}, False))
    elif system:
        for block in system:
            blocks.append(("system", block, False))
    messages = list(body.get("messages") or ())
    keep_thinking = _tool_loop_turn(messages)
    for number, message in enumerate(messages):
        role = message.get("role", "user")
        content = message.get("content")
        if isinstance(content, str):
            blocks.append((role, {"type": "text", "text": content}, True))
            continue
        kept = [
            b
            for b in content or ()
            if number == keep_thinking or b.get("type") not in THINKING_BLOCKS
        ]
        for position, block in enumerate(kept):
            blocks.append((role, block, position == 0))
    return blocks


def _tool_loop_turn(messages: Sequence[Mapping[str, Any]]) -> int | None:
    """The index of the assistant turn whose thinking stays in context, if any.

    The last message when it is an assistant turn, or the assistant turn before a final
    user turn that returns tool results (the thinking of an ongoing tool loop).
    """
    if not messages:
        return None
    last = len(messages) - 1
    if messages[last].get("role") == "assistant":
        return last
    content = messages[last].get("content")
    returns_tools = isinstance(content, list) and any(
        isinstance(b, Mapping) and b.get("type") == "tool_result" for b in content
    )
    if returns_tools and last >= 1 and messages[last - 1].get("role") == "assistant":
        return last - 1
    return None


def tool_prompt_tokens(body: Mapping[str, Any], counts: tuple[int, int]) -> int:
    """The hidden tool-use system prompt of a request: ``counts`` = (auto/none, any/tool)."""
    if not body.get("tools"):
        return 0
    choice = body.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, Mapping) else None
    return counts[1] if kind in ("any", "tool") else counts[0]


def cache_settings(
    body: Mapping[str, Any], blocks: Sequence[tuple[str, Mapping[str, Any], bool]]
) -> bytes:
    """What invalidates the messages' cache entries when it changes (see module docstring)."""
    has_images = any(
        block.get("type") == "image" or _has_nested_image(block) for _s, block, _m in blocks
    )
    settings = {
        "tool_choice": body.get("tool_choice"),
        "thinking": body.get("thinking"),
        "images": has_images,
    }
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str).encode()


def _has_nested_image(block: Mapping[str, Any]) -> bool:
    content = block.get("content") if block.get("type") == "tool_result" else None
    return isinstance(content, list) and any(
        isinstance(b, Mapping) and b.get("type") == "image" for b in content
    )


def count_prompt_tokens(body: Mapping[str, Any], tool_prompt: int = 0) -> int:
    """Total prompt tokens of a (validated) request body, as ``count_tokens`` reports.

    ``tool_prompt``: the model's hidden tool-use system prompt (``tool_prompt_tokens``).
    """
    total = tool_prompt
    for _section, block, starts_message in iter_blocks(body):
        total += block_tokens(block)
        if starts_message:
            total += MESSAGE_OVERHEAD_TOKENS
    return total


def layout_prompt(body: Mapping[str, Any], tool_prompt: int = 0) -> PromptLayout:
    """Boundaries, prefix keys and cache breakpoints of a (validated) request body.

    ``tool_prompt``: the hidden tool-use system prompt, counted before the first block.
    """
    blocks = iter_blocks(body)
    breakpoints = _breakpoints(blocks, body.get("cache_control"))
    boundaries: list[int] = []
    total = tool_prompt
    for _section, block, starts_message in blocks:
        total += block_tokens(block) + (MESSAGE_OVERHEAD_TOKENS if starts_message else 0)
        boundaries.append(total)
    keys = _prefix_keys(blocks, cache_settings(body, blocks)) if breakpoints else ()
    return PromptLayout(total, tuple(boundaries), keys, breakpoints)


def _breakpoints(
    blocks: Sequence[tuple[str, Mapping[str, Any], bool]], automatic: Any
) -> tuple[Breakpoint, ...]:
    found = [
        Breakpoint(i, block["cache_control"].get("ttl") or "5m")
        for i, (_s, block, _m) in enumerate(blocks)
        if isinstance(block.get("cache_control"), Mapping)
    ]
    # Top-level cache_control (automatic caching) marks the last block of the prompt.
    if isinstance(automatic, Mapping) and blocks:
        last = len(blocks) - 1
        if not found or found[-1].index != last:
            found.append(Breakpoint(last, automatic.get("ttl") or "5m"))
    return tuple(found)


def _prefix_keys(
    blocks: Sequence[tuple[str, Mapping[str, Any], bool]], settings: bytes
) -> tuple[bytes, ...]:
    digest = hashlib.blake2b(digest_size=16)
    keys: list[bytes] = []
    in_messages = False
    for section, block, starts_message in blocks:
        if not in_messages and section in ("user", "assistant"):
            in_messages = True
            digest.update(b"\x1csettings\x1f" + settings)
        # Separators keep different block sequences from hashing the same byte stream.
        marker = b"\x1e" + section.encode() + (b"\x1d" if starts_message else b"") + b"\x1f"
        digest.update(marker)
        if block.get("type") == "text":
            digest.update(b"text\x1f" + str(block.get("text", "")).encode())
        else:
            digest.update(canonical_json(block).encode())
        keys.append(digest.copy().digest())
    return tuple(keys)
