"""SSE framing, stream tracking and synthesis (no network)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tierwise.router.sse import (
    SSEParser,
    StreamTracker,
    error_event,
    sse_comment,
    synthesize_stream,
)

MESSAGE: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "Hello, world — ünïcode"},
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": [1, 2]}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "output_tokens": 7,
        "cache_read_input_tokens": 3,
        "cache_creation_input_tokens": 0,
    },
}


def track(data: bytes, cuts: list[int], keep: bool = True) -> StreamTracker:
    parser = SSEParser()
    tracker = StreamTracker(keep_message=keep)
    last = 0
    for cut in [*sorted(cuts), len(data)]:
        tracker.feed(parser.feed(data[last:cut]))
        last = cut
    return tracker


def test_synthesized_stream_round_trips_the_message() -> None:
    tracker = track(synthesize_stream(MESSAGE), [])
    assert tracker.complete and tracker.content_seen
    assert tracker.final_message() == MESSAGE


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2000), max_size=12))
def test_parsing_is_independent_of_chunk_boundaries(cuts: list[int]) -> None:
    data = synthesize_stream(MESSAGE) + sse_comment("x-tierwise-cost-usd: 0.1")
    cuts = [c for c in cuts if c <= len(data)]
    assert track(data, cuts).final_message() == MESSAGE


def test_crlf_framing_and_comments() -> None:
    data = (
        b": keep-alive\r\n\r\nevent: message_start\r\ndata: "
        + json.dumps({"type": "message_start", "message": {"usage": {"input_tokens": 5}}}).encode()
        + b"\r\n\r\n"
    )
    events = SSEParser().feed(data)
    assert [name for name, _ in events] == [b"message_start"]


def test_usage_merges_start_and_cumulative_delta() -> None:
    tracker = track(synthesize_stream(MESSAGE), [], keep=False)
    assert tracker.message is None  # not kept unless asked
    assert tracker.usage["input_tokens"] == 10
    assert tracker.usage["output_tokens"] == 7
    assert tracker.usage["cache_read_input_tokens"] == 3
    assert tracker.stop_reason == "tool_use"


def test_error_event_is_recorded_and_blocks_the_final_message() -> None:
    data = synthesize_stream(MESSAGE)
    cut = data.index(b"event: message_delta")
    tracker = track(data[:cut] + error_event("overloaded_error", "Overloaded"), [])
    assert tracker.error == {"type": "overloaded_error", "message": "Overloaded"}
    assert not tracker.complete and tracker.final_message() is None


def test_a_truncated_stream_is_not_complete() -> None:
    data = synthesize_stream(MESSAGE)
    tracker = track(data[: len(data) // 2], [])
    assert not tracker.stopped and tracker.final_message() is None
