"""Spend budgets in the router config document (``budgets``, docs/router-config.md).

Written only when a policy has budgets, so the documents (and hashes) of policies without
them do not change. The arithmetic (windows, units, thresholds) is ``tierwise.pricing.spend``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tierwise.pricing import format_usd
from tierwise.pricing.spend import ACTIONS, PERIODS, Threshold, Window
from tierwise.routerconfig.defaults import EFFORT_LEVELS
from tierwise.routerconfig.reader import Reader

SCOPES = frozenset({"policy", "route", "caller"})
CALLER_KEYS = frozenset({"apiKey", "header"})
ON_REDIS_UNAVAILABLE = frozenset({"countLocally", "reject"})


@dataclass(frozen=True)
class BudgetAction:
    """What a budget does from ``at_percent`` of its limit on; degrade's fields say how."""

    at_percent: int
    action: str  # alert | degrade | reject
    steps: int | None = None  # degrade: serve only the route's first (cheapest) steps
    max_tokens: int | None = None  # degrade: a ceiling on every step's max_tokens
    effort: str | None = None  # degrade: lowers the effort of the steps that set one

    @property
    def threshold(self) -> Threshold:
        return Threshold(self.at_percent, self.action)

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"atPercent": self.at_percent, "action": self.action}
        optional = {"steps": self.steps, "maxTokens": self.max_tokens, "effort": self.effort}
        return {**doc, **{k: v for k, v in optional.items() if v is not None}}

    @classmethod
    def read(cls, r: Reader, value: Any, path: str) -> BudgetAction:
        doc = r.obj(value, path)
        effort = doc.get("effort")
        if effort is not None and effort not in EFFORT_LEVELS:
            r.bad(f"{path}.effort", f"must be one of {', '.join(EFFORT_LEVELS)}")
            effort = None
        return cls(
            at_percent=r.integer(doc.get("atPercent"), f"{path}.atPercent", minimum=1),
            action=r.choice(doc.get("action"), f"{path}.action", ACTIONS, "alert"),
            steps=r.opt_integer(doc.get("steps"), f"{path}.steps", minimum=1),
            max_tokens=r.opt_integer(doc.get("maxTokens"), f"{path}.maxTokens", minimum=1),
            effort=effort,
        )


@dataclass(frozen=True)
class Budget:
    name: str
    limit_usd: Decimal
    window: Window
    actions: tuple[BudgetAction, ...] = ()
    scope: str = "policy"  # policy | route | caller
    route: str | None = None  # scope route: the route counted
    caller_by: str = "apiKey"  # scope caller: the client key's digest, or a header's value
    caller_header: str | None = None
    max_callers: int | None = None  # scope caller: distinct callers counted apart
    on_redis_unavailable: str = "countLocally"

    @property
    def thresholds(self) -> tuple[Threshold, ...]:
        return tuple(a.threshold for a in self.actions)

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "limitUSD": format_usd(self.limit_usd),
            "window": {"period": self.window.period, "seconds": self.window.seconds},
            "actions": [a.to_document() for a in self.actions],
            "scope": self.scope,
            "onRedisUnavailable": self.on_redis_unavailable,
        }
        if self.scope == "route":
            doc["route"] = self.route
        if self.scope == "caller":
            doc["callerBy"] = self.caller_by
            doc["callerHeader"] = self.caller_header
            doc["maxCallers"] = self.max_callers
        return doc

    @classmethod
    def read(cls, r: Reader, value: Any, path: str) -> Budget:
        doc = r.obj(value, path)
        window_doc = r.obj(doc.get("window"), f"{path}.window")
        if window_doc.get("period") is None:
            r.bad(f"{path}.window.period", "is required")
        period = r.choice(window_doc.get("period"), f"{path}.window.period", PERIODS, "day")
        seconds = r.opt_integer(window_doc.get("seconds"), f"{path}.window.seconds", minimum=1)
        try:
            window = Window(period, seconds if period == "rolling" else None)
        except ValueError as exc:
            r.bad(f"{path}.window", str(exc))
            window = Window("day")  # reported; read on to report every other problem too
        actions_doc = doc.get("actions") or []
        if not isinstance(actions_doc, list):
            r.bad(f"{path}.actions", "must be a list")
            actions_doc = []
        scope = r.choice(doc.get("scope"), f"{path}.scope", SCOPES, "policy")
        budget = cls(
            name=r.string(doc.get("name"), f"{path}.name"),
            limit_usd=r.number(doc.get("limitUSD"), f"{path}.limitUSD"),
            window=window,
            actions=tuple(
                BudgetAction.read(r, a, f"{path}.actions[{i}]") for i, a in enumerate(actions_doc)
            ),
            scope=scope,
            route=r.opt_string(doc.get("route"), f"{path}.route"),
            caller_by=r.choice(doc.get("callerBy"), f"{path}.callerBy", CALLER_KEYS, "apiKey"),
            caller_header=r.opt_string(doc.get("callerHeader"), f"{path}.callerHeader"),
            max_callers=r.opt_integer(doc.get("maxCallers"), f"{path}.maxCallers", minimum=1),
            on_redis_unavailable=r.choice(
                doc.get("onRedisUnavailable"),
                f"{path}.onRedisUnavailable",
                ON_REDIS_UNAVAILABLE,
                "countLocally",
            ),
        )
        budget.check(r, path)
        return budget

    def check(self, r: Reader, path: str) -> None:
        if self.scope == "route" and not self.route:
            r.bad(f"{path}.route", "is required when scope is 'route'")
        if self.scope == "caller" and self.max_callers is None:
            r.bad(f"{path}.maxCallers", "is required when scope is 'caller'")
        if self.scope == "caller" and self.caller_by == "header" and not self.caller_header:
            r.bad(f"{path}.callerHeader", "is required when callerBy is 'header'")


def read_budgets(r: Reader, value: Any, path: str) -> tuple[Budget, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        r.bad(path, "must be a list")
        return ()
    return tuple(Budget.read(r, b, f"{path}[{i}]") for i, b in enumerate(value))
