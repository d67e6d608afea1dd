"""``status.budgets``: each spend budget's spend, limit, reset and action, read from the routers.

Source: the routers' own ``/metrics`` (the ``tierwise_budget_*`` gauges, docs/budgets.md),
fetched from the running pods a policy selects, on the sidecar's metrics port. Why there: a
router is the one party that holds the figures — it reads them from the shared Redis at every
admission, with the Redis credentials it gets from Secrets — while the operator reads no
Secrets (so not the Redis either) and a router has no Kubernetes credentials. A shared
budget's routers report the same Redis figure as of their last admission: the status takes
the latest window and the highest figure; a local share is each router's own: summed.

The resync visits the policies with budgets (``refresh``), with their pods from the
operator's pod index (no pod list), one read per pod (``controller/router_metrics.py``); the
status is written only when what it says changed (spend that did not move writes nothing). A
threshold crossed upwards posts an Event on the policy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tierwise.controller import kube
from tierwise.controller.objects import Observed
from tierwise.controller.pods import PodView
from tierwise.controller.router_metrics import read_all, samples
from tierwise.pricing import format_usd

log = logging.getLogger("tierwise.budgets")

ACTIONS = ("None", "Alert", "Degrade", "Reject")
GAUGES = {
    "tierwise_budget_spend_usd": "spend",
    "tierwise_budget_reserved_usd": "reserved",
    "tierwise_budget_action": "action",
    "tierwise_budget_shared": "shared",
    "tierwise_budget_window_reset_timestamp_seconds": "reset",
}


@dataclass(frozen=True)
class Figures:
    """One budget as one router (or, aggregated, all of a policy's routers) saw it."""

    spend: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)
    action: int = 0
    shared: bool = False
    reset: float = 0.0
    routers: int = 1


def router_figures(text: str, policy: str) -> dict[str, Figures]:
    """The budgets of ``policy`` (``namespace/name``) in one router's metrics exposition."""
    found: dict[str, dict[str, float]] = {}
    for name, labels, value in samples(text, "tierwise_budget"):
        field = GAUGES.get(name)
        if field and labels.get("policy") == policy and "budget" in labels:
            found.setdefault(labels["budget"], {})[field] = value
    return {
        name: Figures(
            spend=_usd(values.get("spend", 0.0)),
            reserved=_usd(values.get("reserved", 0.0)),
            action=int(values.get("action", 0)),
            shared=values.get("shared", 0.0) == 1.0,
            reset=values.get("reset", 0.0),
        )
        for name, values in found.items()
    }


def _usd(value: float) -> Decimal:
    # The gauges are floats at the metrics edge; the status shows them to a micro-dollar.
    return Decimal(repr(value)).quantize(Decimal("0.000001"))


def aggregate(per_router: Iterable[Mapping[str, Figures]]) -> dict[str, Figures]:
    """One figure per budget over a policy's routers (see the module doc)."""
    by_budget: dict[str, list[Figures]] = {}
    for figures in per_router:
        for name, figure in figures.items():
            by_budget.setdefault(name, []).append(figure)
    out: dict[str, Figures] = {}
    for name, seen in by_budget.items():
        latest = max(f.reset for f in seen)
        current = [f for f in seen if f.reset == latest]  # a router still in the old window
        shared = all(f.shared for f in current)
        pick = max if shared else sum
        out[name] = Figures(
            spend=pick(f.spend for f in current),  # type: ignore[operator]
            reserved=pick(f.reserved for f in current),  # type: ignore[operator]
            action=max(f.action for f in current),
            shared=shared,
            reset=latest,
            routers=len(seen),
        )
    return out


def status_entries(spec_budgets: Sequence[Any], figures: Mapping[str, Figures]) -> list[dict]:
    """``status.budgets``, in the spec's order; a budget no router reported yet has no spend."""
    entries = []
    for budget in spec_budgets:
        entry: dict[str, Any] = {"name": budget.name, "limitUSD": budget.limit_usd}
        figure = figures.get(budget.name)
        if figure is not None:
            limit = Decimal(budget.limit_usd)
            entry.update(
                spentUSD=format_usd(figure.spend),
                reservedUSD=format_usd(figure.reserved),
                percent=f"{figure.spend / limit:.0%}" if limit else "n/a",
                action=ACTIONS[min(figure.action, 3)],
                windowReset=datetime.fromtimestamp(figure.reset, UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
                shared=figure.shared,
                routers=figure.routers,
            )
        entries.append(entry)
    return entries


def summary(entries: Sequence[Mapping[str, Any]]) -> str:
    """The printer column: the first budget's spend vs its limit (and how many more)."""
    if not entries:
        return ""
    first = entries[0]
    spent = first.get("spentUSD", "?")
    text = f"{spent}/{first['limitUSD']} USD"
    if "percent" in first:
        text += f" ({first['percent']}, {first['action']})"
    return text + (f" +{len(entries) - 1}" if len(entries) > 1 else "")


def crossed(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> list[str]:
    """Budgets whose action went up since the last status (for an Event each)."""
    before = {e["name"]: ACTIONS.index(e.get("action", "None")) for e in old}
    return [
        f"spend budget {e['name']} is at {e['percent']} of {e['limitUSD']} USD: "
        f"{e['action'].lower()} in force until {e['windowReset']}"
        for e in new
        if "action" in e and ACTIONS.index(e["action"]) > before.get(e["name"], 0)
    ]


def refresh(policy: Observed, pods: Iterable[PodView]) -> bool:
    """Write the policy's ``status.budgets`` when it changed; True when it was written."""
    spec = policy.spec
    if spec is None or not spec.budgets:
        return False
    label = f"{policy.namespace}/{policy.name}"
    texts = read_all(p.metrics_url for p in pods if p.metrics_url)
    scraped = [router_figures(text, label) for text in texts if text is not None]
    entries = status_entries(spec.budgets, aggregate(scraped))
    old = list(policy.status.get("budgets") or [])
    if entries == old:
        return False  # spend that did not move writes nothing
    fields = {"budgets": entries, "budgetSummary": summary(entries)}
    if not kube.patch_status("cascadepolicies", *policy.key, fields):
        return False
    for message in crossed(old, entries):
        kube.post_event(policy.reference(), "Warning", "BudgetThreshold", message)
    return True
