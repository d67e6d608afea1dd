"""Cascade economics: all-strong versus cheap-first cost, the saving, the break-even rate.

A request enters the first step; each step escalates a share ``escalation_rate`` of what
reaches it to the next step, and the last step answers everything that reaches it. An
escalated request pays for every step it went through, so the cascade loses money once
escalation is frequent enough: the break-even rate says where.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class CascadeEstimate:
    requests: int
    step_costs: tuple[Decimal, ...]  # cost of one request on each step, cheapest first
    escalation_rate: Decimal
    all_strong: Decimal
    cascade: Decimal
    per_step: tuple[Decimal, ...]  # total spent on each step
    break_even_rate: Decimal | None  # None: the cascade never costs more than all-strong

    @property
    def saving(self) -> Decimal:
        return self.all_strong - self.cascade

    @property
    def saving_fraction(self) -> Decimal:
        return self.saving / self.all_strong if self.all_strong else Decimal(0)


def reach_fractions(steps: int, escalation_rate: Decimal) -> list[Decimal]:
    """Share of requests that reach each step: 1, e, e^2, ...

    Built by multiplication because Decimal(0) ** 0 is an invalid operation.
    """
    fractions = [Decimal(1)]
    for _ in range(steps - 1):
        fractions.append(fractions[-1] * escalation_rate)
    return fractions


def cascade_cost_per_request(step_costs: Sequence[Decimal], escalation_rate: Decimal) -> Decimal:
    fractions = reach_fractions(len(step_costs), escalation_rate)
    return sum((f * c for f, c in zip(fractions, step_costs, strict=True)), Decimal(0))


def estimate_cascade(
    requests: int,
    step_costs: Sequence[Decimal],
    escalation_rate: Decimal,
    strong_cost: Decimal | None = None,
) -> CascadeEstimate:
    """``strong_cost`` is one request on the strongest tier (default: the last step)."""
    if not step_costs:
        raise ValueError("a cascade needs at least one step")
    if not Decimal(0) <= escalation_rate <= Decimal(1):
        raise ValueError("the escalation rate must be between 0 and 1")
    costs = tuple(step_costs)
    strong = costs[-1] if strong_cost is None else strong_cost
    fractions = reach_fractions(len(costs), escalation_rate)
    per_step = tuple(requests * f * c for f, c in zip(fractions, costs, strict=True))
    return CascadeEstimate(
        requests=requests,
        step_costs=costs,
        escalation_rate=escalation_rate,
        all_strong=requests * strong,
        cascade=sum(per_step, Decimal(0)),
        per_step=per_step,
        break_even_rate=break_even_rate(costs, strong),
    )


def break_even_rate(step_costs: Sequence[Decimal], strong_cost: Decimal) -> Decimal | None:
    """Escalation rate at which the cascade costs as much as all-strong.

    The cascade's cost grows with the rate, so bisection finds it; two steps have the closed
    form (strong - first) / second. None when even full escalation stays cheaper, or when the first
    step alone already costs at least as much as the strongest tier (then there is no rate
    that saves, and the saving is negative at every rate).
    """
    if cascade_cost_per_request(step_costs, Decimal(1)) <= strong_cost:
        return None
    if step_costs[0] >= strong_cost:
        return Decimal(0)
    if len(step_costs) == 2:
        return (strong_cost - step_costs[0]) / step_costs[1]
    low, high = Decimal(0), Decimal(1)
    for _ in range(60):
        mid = (low + high) / 2
        if cascade_cost_per_request(step_costs, mid) < strong_cost:
            low = mid
        else:
            high = mid
    return (low + high) / 2
