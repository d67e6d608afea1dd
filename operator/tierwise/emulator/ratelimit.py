"""``anthropic-ratelimit-*`` headers and 429s from per-model token buckets.

As the API documents ("Rate limits"): each limit is a bucket of its per-minute capacity that
refills continuously (capacity / 60 per second), not a window that resets on the minute;
``*-remaining`` is the bucket's level and ``*-reset`` when it would be full again. Input
tokens count uncached input and cache writes, not cache reads, as on current models.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tierwise.emulator.config import RateLimits

SECONDS_PER_MINUTE = 60.0


@dataclass(slots=True)
class _Bucket:
    capacity: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        rate = self.capacity / SECONDS_PER_MINUTE
        self.level = min(self.capacity, self.level + (now - self.updated) * rate)
        self.updated = now

    def seconds_until(self, level: float) -> float:
        """Seconds until the bucket holds at least ``level`` (0 if it does)."""
        missing = level - self.level
        return max(0.0, missing / (self.capacity / SECONDS_PER_MINUTE))


@dataclass(slots=True)
class _ModelBuckets:
    requests: _Bucket
    input_tokens: _Bucket
    output_tokens: _Bucket
    all: tuple[_Bucket, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.all = (self.requests, self.input_tokens, self.output_tokens)


class RateLimiter:
    """Token buckets per model for requests, input tokens and output tokens."""

    def __init__(self, limits: RateLimits, wall_clock: Callable[[], float] = time.time) -> None:
        self._limits = limits
        self._wall = wall_clock
        self._models: dict[str, _ModelBuckets] = {}

    def clear(self) -> None:
        self._models.clear()

    def _buckets(self, model: str) -> _ModelBuckets:
        now = self._wall()
        buckets = self._models.get(model)
        if buckets is None:
            limits = self._limits
            buckets = _ModelBuckets(
                *(
                    _Bucket(float(cap), float(cap), now)
                    for cap in (
                        limits.requests_per_minute,
                        limits.input_tokens_per_minute,
                        limits.output_tokens_per_minute,
                    )
                )
            )
            self._models[model] = buckets
        for bucket in buckets.all:
            bucket.refill(now)
        return buckets

    def retry_after(self, model: str) -> float | None:
        """Seconds to wait when a bucket of the model is empty, else None."""
        buckets = self._buckets(model)
        wait = max(
            buckets.requests.seconds_until(1.0),
            buckets.input_tokens.seconds_until(1.0),
            buckets.output_tokens.seconds_until(1.0),
        )
        return max(1.0, wait) if wait > 0 else None

    def record(self, model: str, input_tokens: int, output_tokens: int) -> dict[str, str]:
        """Take a request's use from the buckets (``input_tokens``: cache reads excluded).

        Returns the ``anthropic-ratelimit-*`` headers of the response as of now.
        """
        buckets = self._buckets(model)
        buckets.requests.level -= 1
        buckets.input_tokens.level -= input_tokens
        buckets.output_tokens.level -= output_tokens
        return self._headers(buckets, buckets.requests.updated)

    def headers(self, model: str) -> dict[str, str]:
        buckets = self._buckets(model)
        return self._headers(buckets, buckets.requests.updated)

    @staticmethod
    def _headers(buckets: _ModelBuckets, now: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, bucket in (
            ("requests", buckets.requests),
            ("input-tokens", buckets.input_tokens),
            ("output-tokens", buckets.output_tokens),
        ):
            headers.update(_bucket_headers(name, bucket, now))
        # The combined tokens limit is the most restrictive of the two token limits.
        tightest = min(
            (buckets.input_tokens, buckets.output_tokens), key=lambda b: b.level / b.capacity
        )
        headers.update(_bucket_headers("tokens", tightest, now))
        return headers


@functools.lru_cache(maxsize=256)
def _rfc3339(second: int) -> str:
    # Formatting a date is most of the cost of these headers; seconds repeat a lot.
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bucket_headers(name: str, bucket: _Bucket, now: float) -> dict[str, str]:
    full_at = now + bucket.seconds_until(bucket.capacity)
    reset = _rfc3339(int(full_at + 0.999))
    return {
        f"anthropic-ratelimit-{name}-limit": str(int(bucket.capacity)),
        f"anthropic-ratelimit-{name}-remaining": str(max(0, int(bucket.level))),
        f"anthropic-ratelimit-{name}-reset": reset,
    }
