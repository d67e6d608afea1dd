"""Server-sent events of the Messages API: parse a live stream, rebuild or synthesize one.

* ``SSEParser`` splits a byte stream into (event, data) pairs incrementally, whatever the
  chunk boundaries.
* ``StreamTracker`` follows a stream's events for what the router needs: usage (cost),
  the stop, an ``error`` event, and optionally the whole message (to store in the
  response cache). It decodes only the events it needs.
* ``synthesize_stream`` turns a complete message into the event sequence the API would
  have streamed, for answers the router already holds (an accepted earlier cascade step,
  a response-cache hit).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tierwise.router.jsonutil import dumps, loads

_DECODED_ALWAYS = frozenset({b"message_start", b"message_delta", b"error"})
_CONTENT_EVENTS = frozenset({b"content_block_start", b"content_block_delta", b"content_block_stop"})


class SSEParser:
    """Incremental SSE framing: ``feed(chunk)`` returns the complete events in it."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        """(event name, data) of each event completed by ``chunk``; comments are dropped."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[tuple[bytes, bytes]] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            event = _parse_event(buffer[start:end])
            if event is not None:
                events.append(event)
            start = end + 2
        self._buffer = buffer[start:]
        return events

    @property
    def pending(self) -> bytes:
        return self._buffer


def _parse_event(block: bytes) -> tuple[bytes, bytes] | None:
    name = b"message"
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"event":
            name = value
        elif field == b"data":
            data.append(value)
    if not data and name == b"message":
        return None
    return name, b"\n".join(data)


class StreamTracker:
    """What a Messages API stream said: usage, stop reason, errors, optionally the message."""

    def __init__(self, *, keep_message: bool = False) -> None:
        self.keep_message = keep_message
        self.message: dict[str, Any] | None = None
        self.usage: dict[str, Any] = {}
        self.model: str | None = None  # the serving model (a server-side fallback's, say)
        self.stop_reason: str | None = None
        self.error: dict[str, Any] | None = None
        self.started = False
        self.stopped = False
        self.content_seen = False
        self._json_parts: dict[int, list[str]] = {}

    @property
    def complete(self) -> bool:
        return self.stopped and self.error is None

    def feed(self, events: list[tuple[bytes, bytes]]) -> None:
        for name, data in events:
            self.event(name, data)

    def event(self, name: bytes, data: bytes) -> None:
        if name in _CONTENT_EVENTS:
            if name == b"content_block_delta":
                self.content_seen = True  # the first token: what time-to-first-token measures
            if self.keep_message and self.message is not None:
                self._content(name, _loads(data))
        elif name in _DECODED_ALWAYS:
            self._decoded(name, _loads(data))
        elif name == b"message_stop":
            self.stopped = True

    def _decoded(self, name: bytes, payload: Any) -> None:
        if not isinstance(payload, Mapping):
            return
        if name == b"message_start":
            self.started = True
            message = payload.get("message")
            if isinstance(message, Mapping):
                self.usage = dict(message.get("usage") or {})
                model = message.get("model")
                self.model = model if isinstance(model, str) else None
                if self.keep_message:
                    self.message = {**message, "content": list(message.get("content") or [])}
        elif name == b"message_delta":
            for key, value in (payload.get("usage") or {}).items():
                if value is not None:  # a delta's usage is cumulative; absent = unchanged
                    self.usage[key] = value
            delta = payload.get("delta") or {}
            self.stop_reason = delta.get("stop_reason", self.stop_reason)
            if self.message is not None:
                self.message["stop_reason"] = delta.get("stop_reason")
                self.message["stop_sequence"] = delta.get("stop_sequence")
        elif name == b"error":
            error = payload.get("error")
            self.error = dict(error) if isinstance(error, Mapping) else {"type": "api_error"}

    def _content(self, name: bytes, payload: Any) -> None:
        if not isinstance(payload, Mapping) or self.message is None:
            return
        index = payload.get("index")
        content = self.message["content"]
        if name == b"content_block_start":
            block = dict(payload.get("content_block") or {})
            while len(content) <= (index or 0):
                content.append({})
            content[index or 0] = block
            return
        if not isinstance(index, int) or index >= len(content):
            return
        block = content[index]
        if name == b"content_block_delta":
            _apply_delta(block, payload.get("delta") or {}, self._json_parts.setdefault(index, []))
        elif name == b"content_block_stop":
            parts = self._json_parts.pop(index, None)
            if parts:
                try:
                    block["input"] = loads("".join(parts))
                except ValueError:
                    block["input"] = {}

    def final_message(self) -> dict[str, Any] | None:
        """The complete message with its final usage, if the stream completed."""
        if not self.complete or self.message is None:
            return None
        return {**self.message, "usage": dict(self.usage)}


def _apply_delta(block: dict[str, Any], delta: Mapping[str, Any], json_parts: list[str]) -> None:
    kind = delta.get("type")
    if kind == "text_delta":
        block["text"] = block.get("text", "") + delta.get("text", "")
    elif kind == "input_json_delta":
        json_parts.append(delta.get("partial_json", ""))
    elif kind == "thinking_delta":
        block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
    elif kind == "signature_delta":
        block["signature"] = delta.get("signature", "")
    elif kind == "citations_delta":
        block.setdefault("citations", []).append(delta.get("citation"))


def _loads(data: bytes) -> Any:
    try:
        return loads(data)
    except ValueError:
        return None


# --- synthesis ----------------------------------------------------------------------------


def sse_event(name: str, payload: Mapping[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(payload) + b"\n\n"


def sse_comment(text: str) -> bytes:
    return b": " + text.encode() + b"\n\n"


def error_event(error_type: str, message: str) -> bytes:
    return sse_event("error", {"type": "error", "error": {"type": error_type, "message": message}})


def synthesize_stream(message: Mapping[str, Any]) -> bytes:
    """The SSE events of a complete message, one delta per block, as the API streams them."""
    usage = dict(message.get("usage") or {})
    start_message = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 0},
    }
    parts = [sse_event("message_start", {"type": "message_start", "message": start_message})]
    for index, block in enumerate(message.get("content") or []):
        parts.extend(_block_events(index, block))
    delta_usage = {
        k: usage[k]
        for k in (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
            # Billing detail the API also sends at the end of a stream.
            "output_tokens_details",
            "server_tool_use",
        )
        if k in usage
    }
    parts.append(
        sse_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": message.get("stop_reason"),
                    "stop_sequence": message.get("stop_sequence"),
                    "stop_details": message.get("stop_details"),
                },
                "usage": delta_usage,
            },
        )
    )
    parts.append(sse_event("message_stop", {"type": "message_stop"}))
    return b"".join(parts)


def _block_events(index: int, block: Mapping[str, Any]) -> list[bytes]:
    kind = block.get("type")
    if kind == "text":
        start: dict[str, Any] = {"type": "text", "text": ""}
        if "citations" in block:
            start["citations"] = []
        deltas = [{"type": "text_delta", "text": block.get("text", "")}]
        deltas += [{"type": "citations_delta", "citation": c} for c in block.get("citations") or []]
    elif kind in ("tool_use", "server_tool_use"):
        start = {**block, "input": {}}
        deltas = [
            {"type": "input_json_delta", "partial_json": dumps(block.get("input", {})).decode()}
        ]
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [
            {"type": "thinking_delta", "thinking": block.get("thinking", "")},
            {"type": "signature_delta", "signature": block.get("signature", "")},
        ]
    else:
        # Blocks the API sends whole in content_block_start (redacted thinking, tool results).
        start, deltas = dict(block), []
    events = [
        sse_event(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        )
    ]
    events += [
        sse_event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}
        )
        for d in deltas
    ]
    events.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events
