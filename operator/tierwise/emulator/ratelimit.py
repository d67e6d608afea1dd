"""``anthropic-ratelimit-*`` headers from per-model, per-minute counters.

The API uses token buckets; a fixed one-minute window is close enough for clients that
read the headers, and costs two integer additions per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from tierwise.emulator.config import RateLimits

WINDOW_SECONDS = 60


@dataclass(slots=True)
class _Window:
    start: int = 0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    reset_text: str = ""


class RateLimiter:
    """Counts requests and tokens per model within the current minute."""

    def __init__(self, limits: RateLimits, wall_clock: Callable[[], float] = time.time) -> None:
        self._limits = limits
        self._wall = wall_clock
        self._windows: dict[str, _Window] = {}

    def clear(self) -> None:
        self._windows.clear()

    def _window(self, model: str) -> _Window:
        start = int(self._wall()) // WINDOW_SECONDS * WINDOW_SECONDS
        window = self._windows.get(model)
        if window is None or window.start != start:
            reset = datetime.fromtimestamp(start + WINDOW_SECONDS, UTC)
            window = _Window(start=start, reset_text=reset.strftime("%Y-%m-%dT%H:%M:%SZ"))
            self._windows[model] = window
        return window

    def retry_after(self, model: str) -> float | None:
        """Seconds to wait when the model's request limit is used up, else None."""
        window = self._window(model)
        if window.requests < self._limits.requests_per_minute:
            return None
        return max(1.0, window.start + WINDOW_SECONDS - self._wall())

    def record(self, model: str, input_tokens: int, output_tokens: int) -> None:
        window = self._window(model)
        window.requests += 1
        window.input_tokens += input_tokens
        window.output_tokens += output_tokens

    def headers(self, model: str) -> dict[str, str]:
        window = self._window(model)
        limits = self._limits
        reset = window.reset_text
        tokens_limit = limits.input_tokens_per_minute + limits.output_tokens_per_minute
        used_tokens = window.input_tokens + window.output_tokens
        return {
            "anthropic-ratelimit-requests-limit": str(limits.requests_per_minute),
            "anthropic-ratelimit-requests-remaining": str(
                max(0, limits.requests_per_minute - window.requests)
            ),
            "anthropic-ratelimit-requests-reset": reset,
            "anthropic-ratelimit-tokens-limit": str(tokens_limit),
            "anthropic-ratelimit-tokens-remaining": str(max(0, tokens_limit - used_tokens)),
            "anthropic-ratelimit-tokens-reset": reset,
            "anthropic-ratelimit-input-tokens-limit": str(limits.input_tokens_per_minute),
            "anthropic-ratelimit-input-tokens-remaining": str(
                max(0, limits.input_tokens_per_minute - window.input_tokens)
            ),
            "anthropic-ratelimit-input-tokens-reset": reset,
            "anthropic-ratelimit-output-tokens-limit": str(limits.output_tokens_per_minute),
            "anthropic-ratelimit-output-tokens-remaining": str(
                max(0, limits.output_tokens_per_minute - window.output_tokens)
            ),
            "anthropic-ratelimit-output-tokens-reset": reset,
        }
