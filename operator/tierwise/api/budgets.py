"""``spec.budgets[]`` of a CascadePolicy: spend limits and what happens as they are reached.

Mirrors the CRD field for field; ``validate`` repeats its CEL rules with the same messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from tierwise.api.parsing import SpecError

BudgetScope = Literal["policy", "route", "caller"]
CallerKey = Literal["apiKey", "header"]
BudgetPeriod = Literal["hour", "day", "month", "rolling"]
BudgetActionKind = Literal["alert", "degrade", "reject"]
RedisUnavailable = Literal["countLocally", "reject"]

_USD = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,12})?$")
_DURATION = re.compile(r"^[0-9]{1,6}(s|m|h|d)$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
LIMIT_MESSAGE = (
    "a budget needs limitUSD: the most it may spend per window, a decimal string such as '250.00'"
)
WINDOW_MESSAGE = "a budget needs a window: hour, day, month (calendar, UTC) or rolling"


def _check(condition: bool, path: str, message: str) -> None:
    if not condition:
        raise SpecError(path, message)


def rolling_seconds(duration: str) -> int:
    """Seconds of a rolling window's duration such as ``30m`` or ``7d``."""
    return int(duration[:-1]) * _DURATION_SECONDS[duration[-1]]


@dataclass(frozen=True)
class BudgetWindow:
    period: BudgetPeriod
    duration: str | None = None

    def validate(self, path: str) -> None:
        if self.duration is not None:
            _check(
                bool(_DURATION.match(self.duration)),
                f"{path}.duration",
                "window.duration must be a whole number of s, m, h or d, such as 30m or 7d",
            )
        _check(
            (self.period == "rolling") == (self.duration is not None),
            path,
            "a rolling window needs a duration, and only a rolling window takes one",
        )


@dataclass(frozen=True)
class BudgetAction:
    at_percent: int
    action: BudgetActionKind
    steps: int | None = None
    max_tokens: int | None = None
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None

    def validate(self, path: str) -> None:
        _check(
            1 <= self.at_percent <= 1000,
            f"{path}.atPercent",
            "atPercent must be between 1 and 1000",
        )
        degrading = (self.steps, self.max_tokens, self.effort) != (None, None, None)
        _check(
            self.action != "degrade" or degrading,
            path,
            "a degrade action needs steps, maxTokens or effort: what it makes cheaper",
        )
        _check(
            self.action == "degrade" or not degrading,
            path,
            "steps, maxTokens and effort belong to a degrade action only",
        )
        for name, value in (("steps", self.steps), ("maxTokens", self.max_tokens)):
            _check(value is None or value >= 1, f"{path}.{name}", f"{name} must be at least 1")


@dataclass(frozen=True)
class Budget:
    name: str
    limit_usd: str | None = field(default=None, metadata={"json": "limitUSD"})
    window: BudgetWindow | None = None
    scope: BudgetScope = "policy"
    route: str | None = None
    caller_by: CallerKey = "apiKey"
    caller_header: str | None = None
    max_callers: int | None = None
    actions: tuple[BudgetAction, ...] | None = None
    on_redis_unavailable: RedisUnavailable = "countLocally"

    def validate(self, path: str) -> None:
        _check(self.limit_usd is not None, path, LIMIT_MESSAGE)
        _check(self.window is not None, path, WINDOW_MESSAGE)
        _check(
            self.scope != "caller" or self.max_callers is not None,
            path,
            "a per-caller budget needs maxCallers: the most distinct callers counted apart",
        )
        _check(
            self.scope != "route" or self.route is not None,
            path,
            "a route budget needs route: the route whose spend it counts",
        )
        _check(
            self.scope != "caller" or self.caller_by != "header" or self.caller_header is not None,
            path,
            "callerBy header needs callerHeader, such as x-tierwise-team",
        )
        assert self.limit_usd is not None
        _check(
            bool(_USD.match(self.limit_usd)) and Decimal(self.limit_usd) > 0,
            f"{path}.limitUSD",
            "limitUSD must be a positive decimal string such as '250.00'",
        )
        if self.max_callers is not None:
            _check(
                1 <= self.max_callers <= 100000,
                f"{path}.maxCallers",
                "maxCallers must be between 1 and 100000",
            )
        percents = [a.at_percent for a in self.actions or ()]
        _check(
            percents == sorted(percents),
            f"{path}.actions",
            "actions must be in order of atPercent, lowest first",
        )

    @property
    def limit(self) -> Decimal:
        assert self.limit_usd is not None
        return Decimal(self.limit_usd)


def check_budgets(budgets: tuple[Budget, ...] | None, route_names: list[str], path: str) -> None:
    """Beyond each budget: names unique, routes named exist (the CRD's list and CEL rules)."""
    budgets = budgets or ()
    names = [b.name for b in budgets]
    repeated = sorted({n for n in names if names.count(n) > 1})
    _check(
        not repeated,
        f"{path}.budgets",
        f"budget names must be unique; repeated: {', '.join(repeated)}",
    )
    _check(
        all(b.route is None or b.route in route_names for b in budgets),
        path,
        "budgets[].route must name a route in spec.routes",
    )
