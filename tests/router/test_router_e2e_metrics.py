"""Metric values after a known sequence of requests."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from router_builder import HAIKU_MODEL, SONNET_MODEL, config
from router_helpers import MODEL_PRICES, metric, metrics, raw_request, recorded_cost, sdk, user

from tierwise.pricing import Usage, cost_usd

pytestmark = pytest.mark.timeout(60)

GOOD = '{"label": "bug", "confidence": 0.93}'
POLICY = "support/email-triage"


def test_metrics_after_a_known_sequence(emu: Any, make_router: Any) -> None:
    doc = config(
        emu.base_url,
        response_cache={
            "enabled": True,
            "ttlSeconds": 300,
            "maxEntries": 100,
            "backend": "memory",
            "redisURL": None,
            "allowNonDeterministic": False,
        },
    )
    router = make_router(doc)
    client = sdk(router)
    emu.script(
        HAIKU_MODEL,
        [
            {"text": GOOD, "output_tokens": 11},  # 1: accepted at haiku
            {"text": "no json", "output_tokens": 5},  # 2: escalates
            {"text": '{"label": "x", "confidence": 0.99}'},  # 3: escalates
        ],
    )
    emu.script(SONNET_MODEL, [{"text": GOOD, "output_tokens": 13}] * 2)
    costs = []
    for text in ("one", "two", "three"):
        raw = client.messages.with_raw_response.create(
            model="tierwise/triage",
            max_tokens=100,
            messages=user(text),
            extra_body={"temperature": 0},
        )
        costs.append(Decimal(raw.headers["x-tierwise-cost-usd"]))
    hit = client.messages.with_raw_response.create(
        model="tierwise/triage", max_tokens=100, messages=user("one"), extra_body={"temperature": 0}
    )
    assert hit.headers["x-tierwise-cache"] == "hit"
    assert raw_request(router.base_url, "/v1/messages", data=b"nope")[0] == 400

    records = emu.recorded_requests()
    s = metrics(router.metrics_url)
    req = "tierwise_router_requests_total"
    assert metric(s, req, policy=POLICY, route="triage", tier="haiku", outcome="success") == 1
    assert metric(s, req, route="triage", tier="sonnet", outcome="success") == 2
    assert metric(s, req, route="triage", tier="haiku", outcome="cache_hit") == 1
    assert metric(s, req, outcome="rejected") == 1
    esc = "tierwise_router_escalations_total"
    assert metric(s, esc, tier="haiku", reason="invalid_json") == 1
    assert metric(s, esc, tier="haiku", reason="json_field_not_in") == 1
    assert metric(s, esc) == 2
    tokens = "tierwise_router_tokens_total"
    haiku_output = [r.usage["output_tokens"] for r in records if r.model == HAIKU_MODEL]
    assert haiku_output[:2] == [11, 5]
    assert metric(s, tokens, tier="haiku", type="output") == sum(haiku_output)
    assert metric(s, tokens, tier="sonnet", type="output") == 26
    assert metric(s, tokens, type="input") == sum(r.usage["input_tokens"] for r in records)
    # Dollars: the sum of the cost headers, which is the priced recorded usage.
    assert sum(costs) == recorded_cost(records)
    assert metric(s, "tierwise_router_cost_usd_total") == pytest.approx(float(sum(costs)))
    assert metric(s, "tierwise_router_cost_usd_total", tier="haiku") == pytest.approx(
        float(recorded_cost([r for r in records if r.model == HAIKU_MODEL]))
    )
    # Counterfactual: each final answer (and the hit) priced on sonnet.
    finals = [records[0], records[2], records[4], records[0]]
    expected = sum(
        cost_usd(Usage.from_anthropic(r.usage), MODEL_PRICES[SONNET_MODEL]) for r in finals
    )
    assert metric(
        s, "tierwise_router_counterfactual_cost_usd_total", tier="sonnet"
    ) == pytest.approx(float(expected))
    assert metric(s, "tierwise_router_response_cache_total", result="miss") == 3
    assert metric(s, "tierwise_router_response_cache_total", result="hit") == 1
    lat = "tierwise_router_request_duration_seconds_count"
    assert metric(s, lat, route="triage") == 4
    assert metric(s, "tierwise_router_config_info", hash=doc["hash"], policy=POLICY) == 1
    assert metric(s, "tierwise_router_config_last_reload_successful") == 1
    assert metric(s, "tierwise_router_in_flight_requests") == 0


def test_metrics_never_carry_keys(emu: Any, make_router: Any) -> None:
    router = make_router(config(emu.base_url))
    emu.script(HAIKU_MODEL, [{"text": GOOD}])
    sdk(router).messages.create(model="tierwise/triage", max_tokens=10, messages=user("x"))
    import urllib.request

    from router_builder import TIER_KEYS

    text = urllib.request.urlopen(router.metrics_url + "/metrics", timeout=5).read().decode()
    for key in TIER_KEYS.values():
        assert key not in text
    assert "client-key" not in text


def test_report_command_reads_the_cost_report_from_metrics(
    emu: Any, make_router: Any, capsys: Any
) -> None:
    import json as jsonlib

    from tierwise.cli import main
    from tierwise.router.report import histogram_quantile

    router = make_router(config(emu.base_url))
    client = sdk(router)
    emu.script(
        HAIKU_MODEL,
        [{"text": GOOD, "output_tokens": 11}, {"text": "no json", "output_tokens": 5}],
    )
    emu.script(SONNET_MODEL, [{"text": GOOD, "output_tokens": 13}])
    costs = []
    for text in ("one", "two"):
        raw = client.messages.with_raw_response.create(
            model="tierwise/triage", max_tokens=100, messages=user(text)
        )
        costs.append(Decimal(raw.headers["x-tierwise-cost-usd"]))
    records = emu.recorded_requests()
    haiku_answer = next(r for r in records if r.model == HAIKU_MODEL)
    sonnet = MODEL_PRICES[SONNET_MODEL]
    all_strong = cost_usd(Usage.from_anthropic(haiku_answer.usage), sonnet) + cost_usd(
        Usage.from_anthropic(records[-1].usage), sonnet
    )

    assert main(["report", "--metrics", router.metrics_url, "-o", "json"]) == 0
    report = jsonlib.loads(capsys.readouterr().out)
    assert report["requests"] == 2 and report["responseCacheHits"] == 0
    assert report["answeredBy"] == {"haiku": 1, "sonnet": 1}
    assert report["escalations"] == {"invalid_json": 1}
    assert Decimal(str(report["costUsd"])) == pytest.approx(sum(costs), abs=Decimal("1e-6"))
    assert Decimal(str(report["counterfactualCostUsd"])) == pytest.approx(
        all_strong, abs=Decimal("1e-6")
    )
    assert report["tokens"]["output"] == 11 + 5 + 13

    assert main(["report", "--metrics", router.metrics_url.replace("http://", "")]) == 0
    text = capsys.readouterr().out
    assert "requests            2 (0 served from the response cache)" in text
    assert "escalation rate     50.0% of upstream requests escalated" in text
    assert "saving" in text and "latency             p50" in text

    assert main(["report", "--metrics", emu.base_url + "/v1/nothing-here"]) == 1
    assert "cannot read router metrics" in capsys.readouterr().err
    # Prometheus' interpolation: half of 4 observations at rank 2 within (0.1, 0.25].
    assert histogram_quantile(0.5, {0.1: 1, 0.25: 3, float("inf"): 4}) == pytest.approx(0.175)
