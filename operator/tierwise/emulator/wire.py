"""The Messages API wire format: message objects, usage, and SSE event streams."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tierwise.emulator.answers import Answer
from tierwise.emulator.cache import CacheUsage
from tierwise.emulator.tokens import CHARS_PER_TOKEN

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def new_id(prefix: str) -> str:
    """An id shaped like the API's (``msg_01…``, ``req_01…``): prefix, "01", 22 characters."""
    return f"{prefix}_01{os.urandom(11).hex()}"


def usage_dict(
    prompt: CacheUsage,
    answer: Answer,
    *,
    service_tier: str = "standard",
    inference_geo: str | None = None,
    server_tools: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``usage`` object: prompt split, output (thinking included) and the billing fields.

    ``output_tokens_details.thinking_tokens`` is reported whenever the answer thought;
    ``server_tool_use`` when the request offered server tools (their requests are billed per
    use; the emulator runs none, so the counts are 0 unless a script sets them).
    """
    output_tokens = answer.output_tokens
    usage: dict[str, Any] = {
        "input_tokens": prompt.input_tokens,
        "cache_creation_input_tokens": prompt.cache_creation_input_tokens,
        "cache_read_input_tokens": prompt.cache_read_input_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": prompt.cache_creation_5m_input_tokens,
            "ephemeral_1h_input_tokens": prompt.cache_creation_1h_input_tokens,
        },
        "output_tokens": output_tokens,
        "service_tier": service_tier,
    }
    if inference_geo is not None:  # models that support data residency report it
        usage["inference_geo"] = inference_geo
    if answer.thinking_tokens:
        usage["output_tokens_details"] = {"thinking_tokens": answer.thinking_tokens}
    if server_tools:
        usage["server_tool_use"] = {"web_search_requests": 0, "web_fetch_requests": 0}
    if overrides:
        usage.update(overrides)
    return usage


def message_dict(
    message_id: str, model: str, answer: Answer, usage: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": list(answer.content),
        "stop_reason": answer.stop_reason,
        "stop_sequence": answer.stop_sequence,
        "stop_details": answer.stop_details,
        "usage": dict(usage),
    }


def sse_event(name: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {name}\ndata: {_dumps(data)}\n\n".encode()


def json_bytes(data: Any) -> bytes:
    return _dumps(data).encode()


@dataclass(frozen=True, slots=True)
class StreamPiece:
    """Bytes to send; ``tokens`` > 0 marks output that is paced by the latency model."""

    data: bytes
    tokens: int = 0


STREAM_ERROR = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def stream_pieces(
    message: Mapping[str, Any],
    *,
    chunk_tokens: int,
    error_after_tokens: int | None = None,
) -> list[StreamPiece]:
    """The event sequence of a complete message, as the API streams it.

    ``message_start`` carries the prompt usage and ``output_tokens: 1``; ``message_delta``
    carries the cumulative usage. With ``error_after_tokens`` the stream sends that many
    output tokens, then an ``error`` event, and ends.
    """
    usage = message["usage"]
    thinking_tokens = (usage.get("output_tokens_details") or {}).get("thinking_tokens", 0)
    start_usage = {
        k: v for k, v in usage.items() if k not in ("output_tokens_details", "server_tool_use")
    }
    start_usage["output_tokens"] = 1
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "stop_details": None,
        "usage": start_usage,
    }
    pieces = [StreamPiece(sse_event("message_start", {"type": "message_start", "message": start}))]
    budget = error_after_tokens
    for index, block in enumerate(message["content"]):
        pieces.append(StreamPiece(sse_event("content_block_start", _block_start(index, block))))
        if index == 0:
            pieces.append(StreamPiece(sse_event("ping", {"type": "ping"})))
        for delta, tokens in _deltas(block, chunk_tokens, thinking_tokens):
            if budget is not None and tokens > budget:
                if budget > 0:
                    pieces.append(_delta_piece(index, _cut_delta(delta, budget), budget))
                pieces.append(StreamPiece(sse_event("error", STREAM_ERROR)))
                return pieces
            if budget is not None:
                budget -= tokens
            pieces.append(_delta_piece(index, delta, tokens))
        pieces.append(
            StreamPiece(
                sse_event("content_block_stop", {"type": "content_block_stop", "index": index})
            )
        )
    if budget is not None:
        pieces.append(StreamPiece(sse_event("error", STREAM_ERROR)))
        return pieces
    pieces.append(StreamPiece(sse_event("message_delta", _message_delta(message))))
    pieces.append(StreamPiece(sse_event("message_stop", {"type": "message_stop"})))
    return pieces


def _delta_piece(index: int, delta: Mapping[str, Any], tokens: int) -> StreamPiece:
    event = {"type": "content_block_delta", "index": index, "delta": delta}
    return StreamPiece(sse_event("content_block_delta", event), tokens)


_DELTA_FIELDS = {
    "input_json_delta": "partial_json",
    "thinking_delta": "thinking",
    "text_delta": "text",
}


def _cut_delta(delta: Mapping[str, Any], tokens: int) -> dict[str, Any]:
    field = _DELTA_FIELDS.get(delta["type"])
    if field is None:
        return dict(delta)
    return {**delta, field: delta[field][: tokens * CHARS_PER_TOKEN]}


def _block_start(index: int, block: Mapping[str, Any]) -> dict[str, Any]:
    if block["type"] == "tool_use":
        empty = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
    elif block["type"] == "thinking":
        empty = {"type": "thinking", "thinking": "", "signature": ""}
    else:
        empty = {"type": "text", "text": ""}
    return {"type": "content_block_start", "index": index, "content_block": empty}


def _deltas(
    block: Mapping[str, Any], chunk_tokens: int, thinking_tokens: int = 0
) -> list[tuple[dict[str, Any], int]]:
    size = chunk_tokens * CHARS_PER_TOKEN
    if block["type"] == "thinking":
        # The summary streams as thinking_delta events; the unseen rest of the (billed)
        # thinking is paced before the signature_delta that closes the block.
        text = block["thinking"]
        deltas = [
            ({"type": "thinking_delta", "thinking": text[i : i + size]}, _tokens(text, i, size))
            for i in range(0, len(text), size)
        ]
        hidden = max(0, thinking_tokens - sum(t for _d, t in deltas))
        deltas.append(({"type": "signature_delta", "signature": block["signature"]}, hidden))
        return deltas
    if block["type"] == "tool_use":
        raw = _dumps(block["input"])
        return [
            ({"type": "input_json_delta", "partial_json": raw[i : i + size]}, _tokens(raw, i, size))
            for i in range(0, len(raw), size)
        ]
    text = block["text"]
    return [
        ({"type": "text_delta", "text": text[i : i + size]}, _tokens(text, i, size))
        for i in range(0, len(text), size)
    ]


def _tokens(text: str, start: int, size: int) -> int:
    return (min(len(text) - start, size) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def _message_delta(message: Mapping[str, Any]) -> dict[str, Any]:
    usage = message["usage"]
    delta_usage = {
        "input_tokens": usage["input_tokens"],
        "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
        "cache_read_input_tokens": usage["cache_read_input_tokens"],
        "output_tokens": usage["output_tokens"],
    }
    for optional in ("output_tokens_details", "server_tool_use"):
        if optional in usage:
            delta_usage[optional] = usage[optional]
    return {
        "type": "message_delta",
        "delta": {
            "stop_reason": message["stop_reason"],
            "stop_sequence": message["stop_sequence"],
            "stop_details": message.get("stop_details"),
        },
        "usage": delta_usage,
    }
