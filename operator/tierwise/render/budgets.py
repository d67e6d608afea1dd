"""``spec.budgets[]`` -> the router config's ``budgets`` (tierwise.routerconfig.budget)."""

from __future__ import annotations

from tierwise.api.budgets import Budget as BudgetSpec
from tierwise.api.budgets import rolling_seconds
from tierwise.pricing.spend import Window
from tierwise.routerconfig.budget import Budget, BudgetAction


def render_budgets(specs: tuple[BudgetSpec, ...] | None) -> tuple[Budget, ...]:
    return tuple(_render_budget(spec) for spec in specs or ())


def _render_budget(spec: BudgetSpec) -> Budget:
    assert spec.window is not None  # validated (CRD and tierwise.api)
    duration = spec.window.duration
    return Budget(
        name=spec.name,
        limit_usd=spec.limit,
        window=Window(spec.window.period, rolling_seconds(duration) if duration else None),
        actions=tuple(
            BudgetAction(a.at_percent, a.action, a.steps, a.max_tokens, a.effort)
            for a in spec.actions or ()
        ),
        scope=spec.scope,
        route=spec.route,
        caller_by=spec.caller_by,
        caller_header=spec.caller_header.lower() if spec.caller_header else None,
        max_callers=spec.max_callers,
        on_redis_unavailable=spec.on_redis_unavailable,
    )
