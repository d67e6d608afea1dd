"""Prompt-cache accounting as the Messages API does it (pure: no I/O, injectable clock).

A cache entry is keyed by the model and the exact prompt prefix up to a ``cache_control``
breakpoint. For one request, following Anthropic's documented rule for mixed TTLs:

* **A** is the longest prefix found in the cache. The API looks for hits at the block
  boundaries of a window of ``lookback_blocks`` (20) positions ending at each breakpoint,
  not only at the breakpoints themselves, so a breakpoint that moves forward in a growing
  conversation still reads the previous turn's entry.
* **B** is the last 1-hour breakpoint after A (or A when there is none).
* **C** is the last breakpoint (or A when that is further).

The request reads A tokens, writes B - A tokens with a 1-hour TTL and C - B tokens with a
5-minute TTL; ``input_tokens`` is what follows C. Breakpoints whose prefix is shorter than
the model's minimum cacheable length are ignored (no error, no entry). An entry expires
``ttl`` seconds after it was last written or read.

An entry becomes readable only once the response that wrote it has begun (``visible_at``):
the API documents that concurrent requests with the same prefix do not read each other's
entries until the first response starts, so they each pay for a write. Batch items are held
back until the whole batch is processed (``visible_at=math.inf`` then ``reveal_pending``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tierwise.emulator.tokens import TTL_SECONDS, Breakpoint, PromptLayout


@dataclass(frozen=True, slots=True)
class CacheUsage:
    """The prompt part of a response's ``usage``: the four numbers add up to the prompt."""

    input_tokens: int
    cache_read_input_tokens: int = 0
    cache_creation_5m_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0

    @property
    def cache_creation_input_tokens(self) -> int:
        return self.cache_creation_5m_input_tokens + self.cache_creation_1h_input_tokens

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens


@dataclass(slots=True)
class _Entry:
    expires_at: float
    ttl_seconds: float
    visible_at: float = -math.inf


# When a written entry becomes readable: a time, or a function of the request's usage (the
# first token's time depends on how much of the prompt had to be processed).
VisibleAt = float | Callable[[CacheUsage], float] | None


class PromptCache:
    """The prefix cache of one emulator, shared by all its models (keys include the model).

    ``max_entries`` bounds memory in long benchmarks; the oldest entries go first.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        lookback_blocks: int = 20,
        max_entries: int = 100_000,
    ) -> None:
        self._clock = clock
        self._lookback = lookback_blocks
        self._max_entries = max_entries
        self._entries: dict[tuple[str, bytes], _Entry] = {}
        self._pending: list[_Entry] = []

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._pending.clear()

    def reveal_pending(self, at: float | None = None) -> None:
        """Make entries written with ``visible_at=math.inf`` readable from ``at`` (now)."""
        when = self._clock() if at is None else at
        for entry in self._pending:
            entry.visible_at = min(entry.visible_at, when)
        self._pending.clear()

    def account(
        self,
        model: str,
        layout: PromptLayout,
        min_cacheable_tokens: int,
        *,
        visible_at: VisibleAt = None,
    ) -> CacheUsage:
        """Usage of one request, updating the cache (writes, refreshes, expiries).

        ``visible_at``: when entries this request writes become readable (default: at once).
        """
        if not layout.breakpoints:
            return CacheUsage(input_tokens=layout.total_tokens)
        now = self._clock()
        boundaries = layout.boundaries
        eligible = [b for b in layout.breakpoints if boundaries[b.index] >= min_cacheable_tokens]
        if not eligible:
            return CacheUsage(input_tokens=layout.total_tokens)
        hit_index = self._longest_hit(model, layout, eligible, now)
        read = boundaries[hit_index] if hit_index is not None else 0
        usage = split_usage(
            layout.total_tokens, read, [(boundaries[b.index], b.ttl) for b in eligible]
        )
        when = visible_at(usage) if callable(visible_at) else visible_at
        self._store(model, layout, eligible, hit_index, now, now if when is None else when)
        return usage

    def _longest_hit(
        self, model: str, layout: PromptLayout, eligible: list[Breakpoint], now: float
    ) -> int | None:
        for index in _lookback_positions(eligible, self._lookback):
            entry = self._entries.get((model, layout.keys[index]))
            if entry is None:
                continue
            if entry.expires_at <= now:
                del self._entries[(model, layout.keys[index])]
                continue
            if entry.visible_at > now:
                continue  # its writer's response has not begun yet
            return index
        return None

    def _store(
        self,
        model: str,
        layout: PromptLayout,
        eligible: list[Breakpoint],
        hit_index: int | None,
        now: float,
        visible_at: float,
    ) -> None:
        if hit_index is not None:
            hit = self._entries[(model, layout.keys[hit_index])]
            hit.expires_at = now + hit.ttl_seconds
        for breakpoint in eligible:
            key = (model, layout.keys[breakpoint.index])
            entry = self._entries.get(key)
            if entry is not None and entry.expires_at > now:
                # Reading or re-sending a cached prefix refreshes it with its own TTL; a
                # concurrent writer of a not-yet-readable entry makes it readable no later.
                entry.expires_at = now + entry.ttl_seconds
                entry.visible_at = min(entry.visible_at, visible_at)
                continue
            ttl = TTL_SECONDS[breakpoint.ttl]
            self._entries.pop(key, None)
            entry = _Entry(now + ttl, ttl, visible_at)
            self._entries[key] = entry
            if visible_at == math.inf:
                self._pending.append(entry)
        self._evict_overflow()

    def _evict_overflow(self) -> None:
        while len(self._entries) > self._max_entries:
            del self._entries[next(iter(self._entries))]

    def purge_expired(self) -> int:
        """Drop expired entries; returns how many. Lookups expire lazily anyway."""
        now = self._clock()
        expired = [k for k, e in self._entries.items() if e.expires_at <= now]
        for key in expired:
            del self._entries[key]
        return len(expired)


def _lookback_positions(eligible: list[Breakpoint], lookback: int) -> Iterable[int]:
    """Block indices where a hit may be found, longest prefix first, each once."""
    positions: set[int] = set()
    for breakpoint in eligible:
        # ``lookback`` positions in all, the breakpoint's own included.
        positions.update(range(max(0, breakpoint.index - lookback + 1), breakpoint.index + 1))
    return sorted(positions, reverse=True)


def split_usage(total: int, read: int, breakpoints: list[tuple[int, str]]) -> CacheUsage:
    """Anthropic's A/B/C rule: read A, write B - A at 1h and C - B at 5m, the rest is input.

    ``breakpoints`` are the eligible ones as (prefix tokens, ttl), in prompt order.
    """
    last_1h = max(
        (tokens for tokens, ttl in breakpoints if ttl == "1h" and tokens > read), default=read
    )
    last = max((tokens for tokens, _ttl in breakpoints), default=read)
    last = max(last, read)
    return CacheUsage(
        input_tokens=total - last,
        cache_read_input_tokens=read,
        cache_creation_5m_input_tokens=last - last_1h,
        cache_creation_1h_input_tokens=last_1h - read,
    )
