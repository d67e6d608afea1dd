"""status.budgets, the pure part: reading routers' metrics, aggregating, what gets written."""

from __future__ import annotations

from decimal import Decimal

from tierwise.api.budgets import Budget, BudgetWindow
from tierwise.controller.budgets import (
    Figures,
    aggregate,
    crossed,
    router_figures,
    status_entries,
    summary,
)

EXPOSITION = """\
# HELP tierwise_budget_spend_usd x
# TYPE tierwise_budget_spend_usd gauge
tierwise_budget_spend_usd{budget="daily",policy="ns/p"} 0.25
tierwise_budget_spend_usd{budget="daily",policy="ns/other"} 9.0
# TYPE tierwise_budget_action gauge
tierwise_budget_action{budget="daily",policy="ns/p"} 2.0
# TYPE tierwise_budget_shared gauge
tierwise_budget_shared{budget="daily",policy="ns/p"} 1.0
# TYPE tierwise_budget_window_reset_timestamp_seconds gauge
tierwise_budget_window_reset_timestamp_seconds{budget="daily",policy="ns/p"} 1796601600.0
"""


def test_a_routers_metrics_give_its_policys_budgets_only():
    figures = router_figures(EXPOSITION, "ns/p")
    assert figures == {
        "daily": Figures(
            spend=Decimal("0.25"), action=2, shared=True, reset=1796601600.0, reserved=Decimal(0)
        )
    }


def test_a_shared_budget_takes_the_latest_window_and_highest_figure_a_local_share_sums():
    old_window = Figures(spend=Decimal("9"), shared=True, reset=100.0)
    now_a = Figures(spend=Decimal("2"), shared=True, reset=200.0, action=1)
    now_b = Figures(spend=Decimal("3"), shared=True, reset=200.0)
    shared = aggregate([{"b": old_window}, {"b": now_a}, {"b": now_b}])["b"]
    assert (shared.spend, shared.action, shared.reset, shared.routers) == (Decimal(3), 1, 200.0, 3)
    local = aggregate([{"b": Figures(spend=Decimal("2"))}, {"b": Figures(spend=Decimal("3"))}])
    assert local["b"].spend == Decimal(5) and local["b"].shared is False


def test_status_entries_follow_the_spec_and_a_silent_budget_has_no_spend():
    spec = [
        Budget("daily", "10", BudgetWindow("day")),
        Budget("monthly", "250.00", BudgetWindow("month")),
    ]
    figures = {"daily": Figures(spend=Decimal("9.5"), action=2, shared=True, reset=1796601600.0)}
    entries = status_entries(spec, figures)
    assert entries[0] == {
        "name": "daily",
        "limitUSD": "10",
        "spentUSD": "9.5",
        "reservedUSD": "0",
        "percent": "95%",
        "action": "Degrade",
        "windowReset": "2026-12-07T00:00:00Z",
        "shared": True,
        "routers": 1,
    }
    assert entries[1] == {"name": "monthly", "limitUSD": "250.00"}
    assert summary(entries) == "9.5/10 USD (95%, Degrade) +1"
    assert crossed([{"name": "daily", "action": "Alert"}], entries) == [
        "spend budget daily is at 95% of 10 USD: degrade in force until 2026-12-07T00:00:00Z"
    ]
    assert crossed(entries, entries) == []  # unchanged: no Event


def test_only_running_pods_with_the_sidecars_metrics_port_are_read():
    from tierwise.controller.pods import view_pod

    sidecar = {
        "name": "tierwise-router",
        "ports": [{"name": "router-metrics", "containerPort": 9787}],
    }
    running = {"phase": "Running", "podIP": "10.0.0.7"}
    pods = [
        {"spec": {"initContainers": [sidecar]}, "status": running},
        {"spec": {"initContainers": [sidecar]}, "status": {"phase": "Pending"}},
        {"spec": {"containers": [{"name": "app"}]}, "status": running},
        {"spec": {"initContainers": [sidecar]}, "status": {"phase": "Running", "podIP": "fd00::7"}},
    ]
    going = {
        "metadata": {"deletionTimestamp": "2026-12-06T00:00:00Z"},
        "spec": {"initContainers": [sidecar]},
        "status": running,
    }
    pods.append(going)
    assert [v.metrics_url for v in map(view_pod, pods) if v.metrics_url] == [
        "http://10.0.0.7:9787/metrics",
        "http://[fd00::7]:9787/metrics",
    ]
