"""Spend budgets in one router process: reservation, settlement, degrade, reject, windows."""

from __future__ import annotations

import time
import urllib.request
from decimal import Decimal
from typing import Any

import anthropic
import pytest
from router_builder import with_hash
from router_helpers import free_port, metric, metrics, sdk, wait_for
from spend_helpers import budget, budget_config, cost_of

from tierwise.router.report import format_report, parse_samples, summarize

pytestmark = pytest.mark.timeout(90)

ASK = [{"role": "user", "content": "Summarise the ticket: printer on fire"}]


def call(client: anthropic.Anthropic, **extra: Any) -> Any:
    extra.setdefault("messages", ASK)
    return client.messages.with_raw_response.create(model="tierwise/chat", max_tokens=64, **extra)


def spend(router: Any, name: str = "shared") -> Decimal:
    samples = metrics(router.metrics_url)
    return Decimal(str(metric(samples, "tierwise_budget_spend_usd", budget=name)))


def test_without_redis_each_router_counts_its_own_share_and_says_so(emu, make_router):
    router = make_router(budget_config(emu.base_url, [budget("100")]))
    client = sdk(router)
    costs = [cost_of(call(client)) for _ in range(3)]
    call(client)  # the next admission reads the settled spend of the three
    samples = metrics(router.metrics_url)
    assert metric(samples, "tierwise_budget_shared", budget="shared") == 0
    assert Decimal(str(metric(samples, "tierwise_budget_spend_usd", budget="shared"))) == sum(costs)
    assert metric(samples, "tierwise_budget_limit_usd", budget="shared") == 100


def test_the_reject_threshold_answers_429_with_retry_after_at_the_window_reset(emu, make_router):
    doc = budget_config(emu.base_url, [budget("0.0005", {"atPercent": 100, "action": "reject"})])
    router = make_router(doc)
    client = sdk(router)
    spent = Decimal(0)
    with pytest.raises(anthropic.RateLimitError) as refused:
        for _ in range(50):
            spent += cost_of(call(client))
    error = refused.value
    assert error.body["error"]["type"] == "rate_limit_error"
    assert "spend budget 'shared'" in error.message and "resets at" in error.message
    now = time.gmtime()
    to_midnight = 86400 - (now.tm_hour * 3600 + now.tm_min * 60 + now.tm_sec)
    assert abs(int(error.response.headers["retry-after"]) - to_midnight) <= 2
    assert error.response.headers["x-should-retry"] == "false"
    assert spent >= Decimal("0.0005")  # refused only once the limit was reached


def test_degrade_serves_only_the_cheap_step_from_its_threshold(emu, make_router):
    doc = budget_config(
        emu.base_url,
        [budget("0.001", {"atPercent": 50, "action": "degrade", "steps": 1, "maxTokens": 16})],
    )
    router = make_router(doc)
    client = sdk(router)
    seen = []
    spent = Decimal(0)
    for _ in range(30):
        response = call(client)
        seen.append((spent, response.headers["x-tierwise-tier"]))
        spent += cost_of(response)
    below = {tier for before, tier in seen if before < Decimal("0.0005")}
    above = {tier for before, tier in seen if before >= Decimal("0.0005")}
    assert below == {"sonnet"}  # escalated, as the route says
    assert above == {"haiku"}  # degraded: no escalation, from the threshold on
    assert metric(metrics(router.metrics_url), "tierwise_budget_degraded_total") > 0


def test_a_response_cache_hit_counts_zero(emu, make_router):
    router = make_router(budget_config(emu.base_url, [budget("100")], cache=True))
    client = sdk(router)
    first = call(client)
    second = call(client)
    assert second.headers["x-tierwise-cache"] == "hit"
    assert cost_of(second) == 0
    call(
        client, messages=[{"role": "user", "content": "another"}]
    )  # a third admission reads what the first two settled
    assert spend(router) == cost_of(first)


def test_a_window_boundary_starts_a_new_count_and_the_old_window_keeps_its_spend(emu, make_router):
    clock = {"now": 1796601599.0}  # 2026-12-06T23:59:59Z
    doc = budget_config(emu.base_url, [budget("0.0005", {"atPercent": 100, "action": "reject"})])
    router = make_router(doc, spend_clock=lambda: clock["now"])
    client = sdk(router)
    with pytest.raises(anthropic.RateLimitError) as refused:
        for _ in range(50):
            call(client)
    assert refused.value.response.headers["retry-after"] == "1"
    clock["now"] += 1  # midnight UTC: a new day
    assert call(client).headers["x-tierwise-tier"] == "sonnet"


def test_tierwise_report_prints_a_line_per_budget(emu, make_router):
    doc = budget_config(
        emu.base_url, [budget("0.01", {"atPercent": 1, "action": "alert"}, name="daily")]
    )
    router = make_router(doc)
    client = sdk(router)
    cost = cost_of(call(client))
    call(client)
    with urllib.request.urlopen(router.metrics_url + "/metrics") as response:
        report = summarize(parse_samples(response.read().decode()))
    [line] = [line for line in format_report(report) if line.startswith("budget")]
    assert line.startswith(f"budget daily        ${cost:.4f} of $0.01")
    assert "action alert" in line and "local share (this router only)" in line
    assert "resets " in line


def test_a_per_caller_budget_counts_callers_apart_up_to_its_bound(emu, make_router):
    per_team = budget(
        "0.0004",
        {"atPercent": 100, "action": "reject"},
        name="per-team",
        scope="caller",
        callerBy="header",
        callerHeader="x-tierwise-team",
        maxCallers=2,
    )
    router = make_router(budget_config(emu.base_url, [per_team]))
    client = sdk(router)

    def as_team(team: str) -> Any:
        return call(client, extra_headers={"x-tierwise-team": team})

    with pytest.raises(anthropic.RateLimitError):
        for _ in range(20):
            as_team("alpha")
    assert as_team("beta").headers["x-tierwise-tier"] == "sonnet"  # its own count
    # Beyond maxCallers, the rest share one count ("other"): gamma uses it up for delta.
    with pytest.raises(anthropic.RateLimitError):
        for _ in range(20):
            as_team("gamma")
    with pytest.raises(anthropic.RateLimitError):
        as_team("delta")
    samples = metrics(router.metrics_url)
    assert metric(samples, "tierwise_budget_refused_total", reason="limit") == 3


def test_redis_unreachable_reject_answers_503_and_count_locally_serves_and_says_so(
    emu, make_router
):
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    strict = budget("100", name="strict", on_redis_unavailable="reject")
    router = make_router(budget_config(emu.base_url, [strict], redis_url=nowhere))
    with pytest.raises(anthropic.APIStatusError) as refused:
        call(sdk(router))
    assert refused.value.status_code == 503
    assert refused.value.response.headers["retry-after"] == "1"
    assert "onRedisUnavailable: reject" in refused.value.message

    lenient = budget("100", name="lenient")
    other = make_router(budget_config(emu.base_url, [lenient], redis_url=nowhere))
    client = sdk(other)
    costs = [cost_of(call(client)) for _ in range(3)]
    call(client)
    samples = metrics(other.metrics_url)
    assert metric(samples, "tierwise_budget_shared", budget="lenient") == 0
    assert metric(samples, "tierwise_budget_redis_errors_total") >= 1
    assert Decimal(str(metric(samples, "tierwise_budget_spend_usd", budget="lenient"))) == sum(
        costs
    )
    assert metric(samples, "tierwise_budget_pending_settlements") >= 3  # waiting for Redis


def test_a_client_that_leaves_mid_stream_still_has_what_was_billed_counted(emu, make_router):
    router = make_router(budget_config(emu.base_url, [budget("100")]))
    client = sdk(router)
    emu.script("claude-sonnet-4-6", [{"output_tokens": 2000, "first_token_delay": 0.2}])
    with client.messages.with_streaming_response.create(
        model="tierwise/chat", max_tokens=4000, messages=ASK, stream=True
    ) as response:
        next(response.iter_bytes())  # the first bytes, then the client goes away
    # What the router billed (its cost metric) and what the budget counted agree.
    # The cut stream settled (its request ended); the next admission reads the figure.
    wait_for(lambda: metric(metrics(router.metrics_url), "tierwise_router_in_flight_requests") == 0)
    billed = Decimal(str(metric(metrics(router.metrics_url), "tierwise_router_cost_usd_total")))
    call(client)
    samples = metrics(router.metrics_url)
    assert metric(samples, "tierwise_router_requests_total", outcome="cancelled") == 1
    counted = Decimal(str(metric(samples, "tierwise_budget_spend_usd", budget="shared")))
    assert counted > 0
    assert abs(billed - counted) < Decimal("0.000001")  # floats at the metrics edge


def test_degrade_caps_max_tokens_and_lowers_the_effort_of_steps_that_set_one(emu, make_router):
    cheaper = {"atPercent": 1, "action": "degrade", "maxTokens": 16, "effort": "low"}
    doc = budget_config(emu.base_url, [budget("0.001", cheaper)])
    doc["routes"][0]["steps"][1]["effort"] = "high"  # sonnet sets one; haiku refuses effort
    router = make_router(with_hash(doc))
    client = sdk(router)
    call(client)  # below 1%: as the route says
    call(client)  # from 1% on: degraded
    sent = [r.body for r in emu.recorded_requests(path="/v1/messages")]
    assert [b["max_tokens"] for b in sent] == [64, 64, 16, 16]
    efforts = [b.get("output_config", {}).get("effort") for b in sent]
    assert efforts == [None, "high", None, "low"]


def test_a_rolling_window_in_redis_lets_spend_go_one_bucket_at_a_time(emu, make_router, redis_url):
    clock = {"now": 1796550000.0}
    rolling = budget(
        "0.0005",
        {"atPercent": 100, "action": "reject"},
        name="rolling",
        period="rolling",
        seconds=60,  # 60 buckets of one second
    )
    doc = budget_config(emu.base_url, [rolling], redis_url=redis_url)
    router = make_router(doc, spend_clock=lambda: clock["now"])
    client = sdk(router)
    with pytest.raises(anthropic.RateLimitError) as refused:
        for _ in range(50):
            call(client)
            clock["now"] += 0.2
    assert refused.value.response.headers["retry-after"] == "1"  # the next bucket
    clock["now"] += 30  # still within the minute: the spend is all still in the window
    with pytest.raises(anthropic.RateLimitError):
        call(client)
    clock["now"] += 31  # a minute later: every bucket has left the window
    assert call(client).headers["x-tierwise-tier"] == "sonnet"
    assert metric(metrics(router.metrics_url), "tierwise_budget_shared", budget="rolling") == 1


def test_after_a_window_ends_the_metrics_show_the_new_one_before_any_request(emu, make_router):
    """The gauges move at admissions; at midnight with no request since, they must not keep
    saying yesterday's spend and action (the status, report and alerts read them)."""
    clock = {"now": 1796601590.0}  # 2026-12-06T23:59:50Z
    doc = budget_config(emu.base_url, [budget("0.0005", {"atPercent": 1, "action": "alert"})])
    router = make_router(doc, spend_clock=lambda: clock["now"])
    client = sdk(router)
    call(client)
    call(client)
    before = metrics(router.metrics_url)
    assert metric(before, "tierwise_budget_spend_usd", budget="shared") > 0
    assert metric(before, "tierwise_budget_action", budget="shared") == 1
    assert metric(before, "tierwise_budget_window_reset_timestamp_seconds") == 1796601600
    clock["now"] = 1796601605.0  # 2026-12-07T00:00:05Z, no request since
    after = metrics(router.metrics_url)
    assert metric(after, "tierwise_budget_spend_usd", budget="shared") == 0
    assert metric(after, "tierwise_budget_reserved_usd", budget="shared") == 0
    assert metric(after, "tierwise_budget_action", budget="shared") == 0
    assert metric(after, "tierwise_budget_window_reset_timestamp_seconds") == 1796601600 + 86400
