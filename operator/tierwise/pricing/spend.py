"""Spend budgets, the arithmetic: money as integers, windows in UTC, the action in force.

Pure (no clock, no I/O): the router passes ``now`` in, so a window boundary can be crossed on
purpose in a test. What is shared between router replicas (a Redis counter) holds integers,
so the amounts here are integer *units* of ``10**-12`` USD (picodollars). Micro-dollars would
not do: one input token of a $0.80/MTok model costs 0.8 micro-dollars, and half of it in a
batch 0.4. Every price the catalog or a ModelTier holds has at most 6 decimals per MTok, so a
token costs a whole number of units (batch halves included) and a request's exact Decimal
cost converts without rounding; a finer amount is rounded up, never lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal

UNITS_PER_USD = 10**12
PERIODS = ("hour", "day", "month", "rolling")
ACTIONS = ("alert", "degrade", "reject")
# A rolling window is kept as this many buckets; spend leaves it one bucket at a time.
ROLLING_BUCKETS = 60


def to_units(amount: Decimal) -> int:
    """``amount`` USD in picodollars, rounded up (a budget never undercounts)."""
    return int((amount * UNITS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def from_units(units: int) -> Decimal:
    """Picodollars as exact Decimal USD."""
    return Decimal(units).scaleb(-12).normalize()


@dataclass(frozen=True)
class Window:
    """An hour, day or calendar month (UTC), or a rolling span of ``seconds``."""

    period: str
    seconds: int | None = None  # rolling only

    def __post_init__(self) -> None:
        if self.period not in PERIODS:
            raise ValueError(f"unknown window period {self.period!r}")
        if (self.period == "rolling") != (self.seconds is not None):
            raise ValueError("a rolling window, and only a rolling one, has a duration")
        if self.seconds is not None and self.seconds < 1:
            raise ValueError("a rolling window lasts at least one second")

    @property
    def bucket_seconds(self) -> int:
        """Width of a rolling window's buckets (at least one second)."""
        assert self.seconds is not None
        return max(1, self.seconds // ROLLING_BUCKETS)

    def start(self, now: datetime) -> datetime:
        """Start of the calendar window holding ``now`` (UTC)."""
        now = now.astimezone(UTC)
        if self.period == "hour":
            return now.replace(minute=0, second=0, microsecond=0)
        if self.period == "day":
            return now.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.period == "month":
            return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        width = self.bucket_seconds
        epoch = int(now.timestamp())
        return datetime.fromtimestamp(epoch - epoch % width, UTC)

    def reset(self, now: datetime) -> datetime:
        """When spend counted at ``now`` stops counting (a rolling window: when its oldest
        bucket leaves, the earliest moment a refused request can be served again)."""
        start = self.start(now)
        if self.period == "hour":
            return start + timedelta(hours=1)
        if self.period == "day":
            return start + timedelta(days=1)
        if self.period == "month":
            year, month = (
                (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
            )
            return start.replace(year=year, month=month)
        return start + timedelta(seconds=self.bucket_seconds)

    def keys(self, now: datetime) -> list[str]:
        """Identifiers of the counters whose sum is the window's spend at ``now``: the
        current one first (where new spend goes). A calendar window has one."""
        if self.period != "rolling":
            return [self.start(now).strftime("%Y%m%dT%H")]
        width = self.bucket_seconds
        current = int(now.timestamp()) // width
        count = max(1, (self.seconds or width) // width)
        return [f"r{width}:{current - i}" for i in range(count)]

    def ttl_seconds(self, now: datetime) -> int:
        """How long a counter of this window must live (past the window, with a margin)."""
        if self.period == "rolling":
            return (self.seconds or 0) + 2 * self.bucket_seconds
        return int((self.reset(now) - now).total_seconds()) + 3600


@dataclass(frozen=True)
class Threshold:
    """One action of a budget: from ``percent`` of the limit on."""

    percent: int
    action: str  # alert | degrade | reject

    def reached(self, committed: int, limit: int) -> bool:
        return committed * 100 >= self.percent * limit


def in_force(thresholds: Sequence[Threshold], committed: int, limit: int) -> list[Threshold]:
    """The thresholds reached at ``committed`` units of ``limit``, in their order."""
    return [t for t in thresholds if t.reached(committed, limit)]


def strongest(thresholds: Sequence[Threshold]) -> str:
    """The strongest action among ``thresholds``: reject, degrade, alert or ``none``."""
    actions = {t.action for t in thresholds}
    for action in ("reject", "degrade", "alert"):
        if action in actions:
            return action
    return "none"


def reject_units(thresholds: Sequence[Threshold], limit: int) -> int | None:
    """The committed spend (units) from which requests are refused, if any action rejects."""
    percents = [t.percent for t in thresholds if t.action == "reject"]
    if not percents:
        return None
    return -(-min(percents) * limit // 100)  # ceiling: refusing starts at the percent reached


def retry_after_seconds(window: Window, now: datetime) -> int:
    """Whole seconds until the window resets (at least 1), for ``retry-after``."""
    return max(1, int(-(-(window.reset(now) - now).total_seconds() // 1)))
