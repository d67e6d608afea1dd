"""Spend budgets, the pure part: units, windows, thresholds, the document and the render."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tierwise.api import parse_resource
from tierwise.pricing import BUILTIN, Usage, cost_usd
from tierwise.pricing.spend import (
    Threshold,
    Window,
    from_units,
    in_force,
    reject_units,
    retry_after_seconds,
    strongest,
    to_units,
)
from tierwise.render.budgets import render_budgets
from tierwise.routerconfig import SCHEMA_VERSION, ConfigError, parse


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_every_catalog_price_converts_to_whole_units_batch_halves_included():
    """Micro-dollars could not hold one token of a $0.80/MTok model; picodollars hold every
    catalog rate, a batch half of it, and any sum of them, exactly."""
    for model in BUILTIN.models():
        prices = BUILTIN.prices(model)
        for rate in prices.rates.to_decimals():
            for batch in (False, True):
                usage = Usage(input_tokens=1)
                one = rate / 1_000_000 * (prices.batch_multiplier if batch else 1)
                assert from_units(to_units(one)) == one, (model, rate, batch)
                assert cost_usd(usage, prices, batch=batch) >= 0


def test_units_round_up_never_down():
    assert to_units(Decimal("0.0000000000001")) == 1
    assert to_units(Decimal("1.5")) == 1_500_000_000_000
    assert from_units(1_500_000_000_000) == Decimal("1.5")


@pytest.mark.parametrize(
    ("period", "now", "start", "reset"),
    [
        ("hour", "2026-12-06T04:59:59.999", "2026-12-06T04:00:00", "2026-12-06T05:00:00"),
        ("hour", "2026-12-06T05:00:00", "2026-12-06T05:00:00", "2026-12-06T06:00:00"),
        ("day", "2026-12-31T23:59:59", "2026-12-31T00:00:00", "2027-01-01T00:00:00"),
        ("month", "2026-12-15T10:00:00", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
        ("month", "2027-02-28T23:59:59", "2027-02-01T00:00:00", "2027-03-01T00:00:00"),
        ("month", "2028-02-29T12:00:00", "2028-02-01T00:00:00", "2028-03-01T00:00:00"),
        ("month", "2027-04-30T23:59:59", "2027-04-01T00:00:00", "2027-05-01T00:00:00"),
        ("month", "2027-01-31T23:59:59", "2027-01-01T00:00:00", "2027-02-01T00:00:00"),
    ],
)
def test_calendar_windows_start_and_reset_in_utc(period, now, start, reset):
    window = Window(period)
    assert window.start(at(now)) == at(start)
    assert window.reset(at(now)) == at(reset)
    assert window.keys(at(now)) == [at(start).strftime("%Y%m%dT%H")]


def test_a_window_boundary_changes_the_counter_and_nothing_else():
    window = Window("day")
    before, after = at("2026-12-06T23:59:59.999"), at("2026-12-07T00:00:00")
    assert window.keys(before) != window.keys(after)
    assert retry_after_seconds(window, before) == 1
    assert retry_after_seconds(window, after) == 86400


def test_times_in_other_zones_count_in_utc():
    window = Window("day")
    paris = datetime(2026, 12, 7, 0, 30, tzinfo=UTC) + timedelta(hours=1)
    local = paris.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris"))
    assert window.start(local) == at("2026-12-07T00:00:00")


def test_a_rolling_window_sums_its_buckets_and_lets_them_go_one_at_a_time():
    window = Window("rolling", 3600)  # 60 buckets of 60 s
    now = at("2026-12-06T04:10:30")
    keys = window.keys(now)
    assert len(keys) == 60 and len(set(keys)) == 60
    # One bucket later, the oldest bucket has left and a new one came in.
    later = window.keys(now + timedelta(seconds=60))
    assert later[1:] == keys[:-1] and later[0] not in keys
    assert window.reset(now) == at("2026-12-06T04:11:00")
    assert window.ttl_seconds(now) > 3600


def test_a_short_rolling_window_has_one_second_buckets():
    window = Window("rolling", 10)
    assert window.bucket_seconds == 1 and len(window.keys(at("2026-12-06T00:00:00"))) == 10


def test_windows_refuse_what_they_cannot_mean():
    with pytest.raises(ValueError):
        Window("rolling")
    with pytest.raises(ValueError):
        Window("day", 60)
    with pytest.raises(ValueError):
        Window("week")


def test_the_strongest_action_reached_is_in_force():
    ladder = (Threshold(80, "alert"), Threshold(90, "degrade"), Threshold(100, "reject"))
    limit = 1000
    assert strongest(in_force(ladder, 799, limit)) == "none"
    assert strongest(in_force(ladder, 800, limit)) == "alert"
    assert strongest(in_force(ladder, 900, limit)) == "degrade"
    assert strongest(in_force(ladder, 1000, limit)) == "reject"
    assert reject_units(ladder, limit) == 1000
    assert reject_units(ladder[:2], limit) is None
    assert reject_units((Threshold(33, "reject"),), 10) == 4  # refusing from 3.3 on


POLICY = {
    "apiVersion": "tierwise.dev/v1alpha1",
    "kind": "CascadePolicy",
    "metadata": {"name": "p", "namespace": "ns"},
    "spec": {
        "routes": [{"name": "triage", "steps": [{"tier": "haiku"}, {"tier": "sonnet"}]}],
        "budgets": [
            {
                "name": "monthly",
                "limitUSD": "250.00",
                "window": {"period": "month"},
                "actions": [
                    {"atPercent": 80, "action": "alert"},
                    {"atPercent": 90, "action": "degrade", "steps": 1, "maxTokens": 256},
                    {"atPercent": 100, "action": "reject"},
                ],
            },
            {
                "name": "per-team",
                "limitUSD": "5",
                "window": {"period": "rolling", "duration": "24h"},
                "scope": "caller",
                "callerBy": "header",
                "callerHeader": "X-Tierwise-Team",
                "maxCallers": 50,
                "onRedisUnavailable": "reject",
            },
        ],
    },
}


def document(budgets: list[dict]) -> dict:
    """A minimal router config document with ``budgets``."""
    return {
        "schemaVersion": SCHEMA_VERSION,
        "policy": {"namespace": "ns", "name": "p"},
        "routes": [{"name": "triage", "models": [], "steps": [{"tier": "haiku"}]}],
        "tiers": {
            "haiku": {
                "model": "claude-haiku-4-5",
                "pricing": BUILTIN.prices("claude-haiku-4-5").to_document(),
            }
        },
        "budgets": budgets,
    }


def test_spec_budgets_render_into_the_document_and_read_back_the_same():
    budgets = render_budgets(parse_resource(POLICY).spec.budgets)
    assert budgets[0].limit_usd == Decimal("250.00")
    assert budgets[0].window == Window("month")
    assert budgets[1].window == Window("rolling", 86400)
    assert budgets[1].caller_header == "x-tierwise-team"  # headers match case-insensitively
    doc = document([b.to_document() for b in budgets])
    config = parse(doc)
    assert config.budgets == budgets


def test_a_bad_budget_in_a_document_is_refused_naming_the_field():
    bad = document(
        [{"name": "b", "limitUSD": "-1", "window": {"period": "rolling"}, "scope": "caller"}]
    )
    with pytest.raises(ConfigError) as error:
        parse(bad)
    text = str(error.value)
    assert "budgets[0].limitUSD" in text
    assert "budgets[0].window" in text
    assert "budgets[0].maxCallers" in text


def test_the_local_store_forgets_past_windows_and_old_markers():
    """A long-lived router without Redis does not keep every window and request forever."""
    import asyncio

    from tierwise.router.spend_store import MARKER_TTL_SECONDS, LocalSpendStore

    clock = {"now": 1_000_000.0}
    store = LocalSpendStore(lambda: clock["now"])

    async def one(rid: str, key: str) -> None:
        await store.reserve("b:", [key], rid, 10, None, clock["now"] + 60, 3600)
        await store.settle("b:", key, rid, 7, 3600)

    asyncio.run(one("r1", "b:s:old"))
    assert store.spend == {"b:s:old": 7}
    asyncio.run(store.settle("b:", "b:s:old", "r1", 7, 3600))  # a retry: counted once
    assert store.spend == {"b:s:old": 7}
    clock["now"] += MARKER_TTL_SECONDS + 1
    store.prune(clock["now"])
    assert store.spend == {} and store.markers == {}
