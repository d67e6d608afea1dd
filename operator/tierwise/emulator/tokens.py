"""The emulator's token approximation and the block layout of a prompt.

One deterministic rule counts tokens everywhere (``count_tokens``, ``usage``, the minimum
cacheable length), so the numbers always add up:

* a text block (system or message) is ``ceil(len(text) / 4)`` tokens;
* an image block is a flat ``IMAGE_TOKENS``;
* any other block (a tool definition, ``tool_use``, ``tool_result``, ``document``, ...) is
  ``ceil(len(canonical_json(block)) / 4)`` tokens, where the canonical JSON has sorted keys,
  no whitespace, and no ``cache_control`` field;
* each message adds ``MESSAGE_OVERHEAD_TOKENS`` for its role marker, counted with its
  first block.

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


def iter_blocks(body: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any], bool]]:
    """(section, block, starts_message) for every block, in prompt order.

    A string ``system`` or message ``content`` is one text block, as the API treats it.
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
    for message in body.get("messages") or ():
        role = message.get("role", "user")
        content = message.get("content")
        if isinstance(content, str):
            blocks.append((role, {"type": "text", "text": content}, True))
            continue
        for position, block in enumerate(content or ()):
            blocks.append((role, block, position == 0))
    return blocks


def count_prompt_tokens(body: Mapping[str, Any]) -> int:
    """Total prompt tokens of a (validated) request body, as ``count_tokens`` reports."""
    total = 0
    for _section, block, starts_message in iter_blocks(body):
        total += block_tokens(block)
        if starts_message:
            total += MESSAGE_OVERHEAD_TOKENS
    return total


def layout_prompt(body: Mapping[str, Any]) -> PromptLayout:
    """Boundaries, prefix keys and cache breakpoints of a (validated) request body."""
    blocks = iter_blocks(body)
    breakpoints = _breakpoints(blocks, body.get("cache_control"))
    boundaries: list[int] = []
    total = 0
    for _section, block, starts_message in blocks:
        total += block_tokens(block) + (MESSAGE_OVERHEAD_TOKENS if starts_message else 0)
        boundaries.append(total)
    keys = _prefix_keys(blocks) if breakpoints else ()
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


def _prefix_keys(blocks: Sequence[tuple[str, Mapping[str, Any], bool]]) -> tuple[bytes, ...]:
    digest = hashlib.blake2b(digest_size=16)
    keys: list[bytes] = []
    for section, block, starts_message in blocks:
        # Separators keep different block sequences from hashing the same byte stream.
        marker = b"\x1e" + section.encode() + (b"\x1d" if starts_message else b"") + b"\x1f"
        digest.update(marker)
        if block.get("type") == "text":
            digest.update(b"text\x1f" + str(block.get("text", "")).encode())
        else:
            digest.update(canonical_json(block).encode())
        keys.append(digest.copy().digest())
    return tuple(keys)
