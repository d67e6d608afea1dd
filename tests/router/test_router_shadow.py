"""The shadow stage in the sidecar, driven by the real anthropic SDK.

Production (the live config) answers on sonnet; the candidate beside it (``shadow-config.json``
in the config's directory, as the operator writes it into the policy's ConfigMap) answers
on haiku. The client must get exactly what it would get without shadowing; the candidate's
answers are counted in ``tierwise_shadow_*`` only.
"""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest
from recording_upstream import Answer, recording_upstream
from router_builder import HAIKU_MODEL, OPUS_MODEL, SONNET_MODEL, config, route, step, with_hash
from router_helpers import metric, metrics, sdk, user, wait_for

from tierwise.evals.plan import judge_config
from tierwise.routerconfig.shadow import NO_SHADOW_HEADER, SHADOW_KEY, SHADOW_SCHEMA_VERSION

pytestmark = pytest.mark.timeout(60)

SAMPLES = "tierwise_shadow_samples_total"
SKIPPED = "tierwise_shadow_skipped_total"
SHADOW_COST = "tierwise_shadow_cost_usd_total"
BILLING = '{"label": "billing", "confidence": 0.95}'
BUG = '{"label": "bug", "confidence": 0.95}'


def policy_config(endpoint: str, tier: str) -> dict[str, Any]:
    return config(
        endpoint,
        routes=[route("triage", [step(tier, 100)]), route("chat", [step(tier, 100)])],
    )


def shadow_doc(candidate: dict[str, Any], **settings: Any) -> dict[str, Any]:
    doc = {
        "schemaVersion": SHADOW_SCHEMA_VERSION,
        "sampleRate": 1,
        "maxConcurrency": 4,
        "timeoutSeconds": 5,
        "spendLimitPerHourUSD": "10",
        "routes": [{"name": "triage", "comparison": "graderField", "field": "label"}],
        "config": candidate,
    }
    doc.update(settings)
    return doc


def mount(directory: Path, live: dict[str, Any], shadow: dict[str, Any] | None) -> Path:
    """The policy's ConfigMap as mounted: the live config, and the shadow document if any."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "router-config.json"
    path.write_text(json.dumps(live))
    if shadow is not None:
        (directory / SHADOW_KEY).write_text(json.dumps(shadow))
    return path


def live_message(text: str = BILLING) -> bytes:
    return json.dumps(
        {
            "id": "msg_01FixedAnswerForByteComparison",
            "type": "message",
            "role": "assistant",
            "model": SONNET_MODEL,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 9},
        }
    ).encode()


def shadow_counts(router: Any) -> dict[str, float]:
    s = metrics(router.metrics_url)
    return {result: metric(s, SAMPLES, result=result) for result in ("agree", "disagree", "failed")}


def settled(router: Any) -> bool:
    return router.router.shadow.running == 0


def test_client_bytes_status_and_headers_are_identical_with_shadowing_on_and_off(
    emu: Any, make_router: Any, tmp_path: Path
) -> None:
    emu.script(HAIKU_MODEL, [{"text": BUG}] * 3)
    with recording_upstream(Answer(body=live_message())) as live_upstream:
        live = policy_config(live_upstream.base_url, "sonnet")
        candidate = policy_config(emu.base_url, "haiku")
        plain = make_router(mount(tmp_path / "off", live, None))
        shadowed = make_router(mount(tmp_path / "on", live, shadow_doc(candidate)))
        replies = []
        for router in (plain, shadowed):
            raw = sdk(router).messages.with_raw_response.create(
                model="tierwise/triage", max_tokens=50, messages=user("my invoice is wrong")
            )
            replies.append(raw)
            assert raw.parse().content[0].text == BILLING
        off, on = (r.http_response for r in replies)
        assert on.content == off.content  # byte for byte
        assert on.status_code == off.status_code == 200
        drop = {"date", "content-length"}
        assert {k: v for k, v in on.headers.items() if k not in drop} == {
            k: v for k, v in off.headers.items() if k not in drop
        }
        # The shadow did run (and disagreed), on the candidate's tier only.
        wait_for(lambda: shadow_counts(shadowed)["disagree"] == 1)
        assert [r.model for r in emu.recorded_requests()] == [HAIKU_MODEL]
        assert shadow_counts(plain) == {"agree": 0, "disagree": 0, "failed": 0}


def test_shadow_calls_stay_out_of_production_metrics(
    emu: Any, make_router: Any, tmp_path: Path
) -> None:
    emu.script(SONNET_MODEL, [{"text": BILLING}])
    emu.script(HAIKU_MODEL, [{"text": BILLING}])
    live, candidate = policy_config(emu.base_url, "sonnet"), policy_config(emu.base_url, "haiku")
    router = make_router(mount(tmp_path, live, shadow_doc(candidate)))
    sdk(router).messages.create(model="tierwise/triage", max_tokens=50, messages=user("x"))
    wait_for(lambda: shadow_counts(router)["agree"] == 1)
    s = metrics(router.metrics_url)
    assert metric(s, "tierwise_router_requests_total") == 1
    assert metric(s, "tierwise_router_cost_usd_total", tier="haiku") == 0
    assert metric(s, "tierwise_router_cost_usd_total", tier="sonnet") > 0
    assert metric(s, SHADOW_COST, route="triage", candidate=candidate["hash"]) > 0
    info = metric(s, "tierwise_shadow_info", candidate=candidate["hash"])
    assert info == 1


def test_a_stream_is_shadowed_on_its_final_message(
    emu: Any, make_router: Any, tmp_path: Path
) -> None:
    emu.script(SONNET_MODEL, [{"text": BILLING}])
    emu.script(HAIKU_MODEL, [{"text": BILLING}])
    live, candidate = policy_config(emu.base_url, "sonnet"), policy_config(emu.base_url, "haiku")
    router = make_router(mount(tmp_path, live, shadow_doc(candidate)))
    with sdk(router).messages.stream(
        model="tierwise/triage", max_tokens=50, messages=user("x")
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == BILLING
    wait_for(lambda: shadow_counts(router)["agree"] == 1)
    haiku = emu.recorded_requests(model=HAIKU_MODEL)
    assert len(haiku) == 1 and not haiku[0].body.get("stream")  # compared buffered


def test_the_no_shadow_header_and_unshadowed_routes_are_never_sampled(
    emu: Any, make_router: Any, tmp_path: Path
) -> None:
    live, candidate = policy_config(emu.base_url, "sonnet"), policy_config(emu.base_url, "haiku")
    router = make_router(mount(tmp_path, live, shadow_doc(candidate)))
    client = sdk(router)
    client.messages.create(
        model="tierwise/triage",
        max_tokens=50,
        messages=user("private"),
        extra_headers={NO_SHADOW_HEADER: "1"},
    )
    client.messages.create(model="tierwise/chat", max_tokens=50, messages=user("not shadowed"))
    time.sleep(0.3)  # room for a (wrong) background call to show up
    assert emu.recorded_requests(model=HAIKU_MODEL) == []
    s = metrics(router.metrics_url)
    assert metric(s, SKIPPED, reason="client_opt_out", route="triage") == 1
    assert metric(s, SAMPLES) == 0


def test_shadow_spend_stops_at_its_hourly_limit(emu: Any, make_router: Any, tmp_path: Path) -> None:
    emu.script(SONNET_MODEL, [{"text": BILLING}] * 6)
    emu.script(HAIKU_MODEL, [{"text": BILLING}] * 6)
    live, candidate = policy_config(emu.base_url, "sonnet"), policy_config(emu.base_url, "haiku")
    # One call costs more than this: the first sample spends past the limit, no other starts.
    doc = shadow_doc(candidate, spendLimitPerHourUSD="0.000001")
    router = make_router(mount(tmp_path, live, doc))
    client = sdk(router)
    for _ in range(4):
        client.messages.create(model="tierwise/triage", max_tokens=50, messages=user("x"))
        wait_for(lambda: settled(router))
    assert len(emu.recorded_requests(model=HAIKU_MODEL)) == 1
    s = metrics(router.metrics_url)
    assert metric(s, SKIPPED, reason="spend_limit") == 3
    assert metric(s, SAMPLES, result="agree") == 1
    # The next clock hour has a fresh limit.
    shadow = router.router.shadow
    shadow._clock = lambda: time.time() + 3600
    client.messages.create(model="tierwise/triage", max_tokens=50, messages=user("x"))
    wait_for(lambda: shadow_counts(router)["agree"] == 2)
    assert len(emu.recorded_requests(model=HAIKU_MODEL)) == 2


def test_a_client_that_disconnects_does_not_cancel_a_counted_shadow_call(
    emu: Any, make_router: Any, tmp_path: Path
) -> None:
    emu.script(SONNET_MODEL, [{"text": BILLING}])
    emu.script(HAIKU_MODEL, [{"text": BILLING, "first_token_delay": 1.0}])
    live, candidate = policy_config(emu.base_url, "sonnet"), policy_config(emu.base_url, "haiku")
    router = make_router(mount(tmp_path, live, shadow_doc(candidate)))
    with sdk(router) as client:
        client.messages.create(model="tierwise/triage", max_tokens=50, messages=user("x"))
    # The client and its connections are gone while the candidate still thinks.
    assert router.router.shadow.running == 1
    wait_for(lambda: shadow_counts(router)["agree"] == 1, timeout=10)
    assert settled(router)


def test_a_client_that_leaves_mid_stream_starts_no_shadow_call(
    emu: Any, make_router: Any, tmp_path: Path
) -> None:
    emu.script(SONNET_MODEL, [{"text": BILLING, "first_token_delay": 1.0}])
    live, candidate = policy_config(emu.base_url, "sonnet"), policy_config(emu.base_url, "haiku")
    doc = shadow_doc(candidate, routes=[{"name": "triage", "comparison": "exactText"}])
    router = make_router(mount(tmp_path, live, doc))
    client = sdk(router)
    with client.messages.stream(model="tierwise/triage", max_tokens=100, messages=user("x")):
        pass  # the stream has started; the client hangs up before its first token
    client.close()
    wait_for(lambda: emu.cancelled_streams == 1)
    time.sleep(0.3)
    assert emu.recorded_requests(model=HAIKU_MODEL) == []
    assert metric(metrics(router.metrics_url), SAMPLES) == 0


def test_no_shadow_call_outlives_its_deadline(emu: Any, make_router: Any, tmp_path: Path) -> None:
    emu.script(SONNET_MODEL, [{"text": BILLING}])
    emu.script(HAIKU_MODEL, [{"text": BILLING, "first_token_delay": 20.0}])
    live, candidate = policy_config(emu.base_url, "sonnet"), policy_config(emu.base_url, "haiku")
    router = make_router(mount(tmp_path, live, shadow_doc(candidate, timeoutSeconds=0.5)))
    sdk(router).messages.create(model="tierwise/triage", max_tokens=50, messages=user("x"))
    # Cut at its deadline, long before the candidate would have answered; counted as failed.
    wait_for(lambda: shadow_counts(router)["failed"] == 1, timeout=5)
    assert settled(router)
    assert shadow_counts(router)["agree"] == 0


def test_shadow_calls_beyond_the_concurrency_limit_are_skipped(
    emu: Any, make_router: Any, tmp_path: Path
) -> None:
    emu.script(SONNET_MODEL, [{"text": BILLING}] * 3)
    emu.script(HAIKU_MODEL, [{"text": BILLING, "first_token_delay": 1.0}] * 3)
    live, candidate = policy_config(emu.base_url, "sonnet"), policy_config(emu.base_url, "haiku")
    router = make_router(mount(tmp_path, live, shadow_doc(candidate, maxConcurrency=1)))
    client = sdk(router)
    threads = [
        threading.Thread(
            target=lambda: client.messages.create(
                model="tierwise/triage", max_tokens=50, messages=user("x")
            )
        )
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    wait_for(lambda: shadow_counts(router)["agree"] == 1, timeout=10)
    s = metrics(router.metrics_url)
    assert metric(s, SKIPPED, reason="busy") == 2
    assert len(emu.recorded_requests(model=HAIKU_MODEL)) == 1


def test_a_bad_shadow_document_never_replaces_a_good_one(
    emu: Any, make_router: Any, tmp_path: Path
) -> None:
    emu.script(SONNET_MODEL, [{"text": BILLING}] * 3)
    emu.script(HAIKU_MODEL, [{"text": BILLING}] * 3)
    live, candidate = policy_config(emu.base_url, "sonnet"), policy_config(emu.base_url, "haiku")
    path = mount(tmp_path, live, shadow_doc(candidate))
    router = make_router(path, reload_interval=0.05)
    client = sdk(router)
    shadow_file = tmp_path / SHADOW_KEY
    shadow_file.write_text('{"schemaVersion": "tierwise.dev/shadow/v1alpha1", "routes": []}')
    wait_for(
        lambda: metric(metrics(router.metrics_url), "tierwise_shadow_config_rejections_total") == 1
    )
    client.messages.create(model="tierwise/triage", max_tokens=50, messages=user("x"))
    wait_for(lambda: shadow_counts(router)["agree"] == 1)  # the good one still shadows
    other = shadow_doc(candidate)
    other["config"] = config(emu.base_url, policy=("other", "policy"))
    shadow_file.write_text(json.dumps(other))
    wait_for(
        lambda: (
            metric(
                metrics(router.metrics_url),
                "tierwise_shadow_config_rejections_total",
                reason="other_policy",
            )
            == 1
        )
    )
    # The operator removes the key when the stage ends: nothing is shadowed any more.
    shadow_file.unlink()
    wait_for(lambda: router.router.shadow.active is None)
    client.messages.create(model="tierwise/triage", max_tokens=50, messages=user("x"))
    time.sleep(0.3)
    assert len(emu.recorded_requests(model=HAIKU_MODEL)) == 1
    assert metric(metrics(router.metrics_url), "tierwise_shadow_info") == 0


def test_a_failing_candidate_never_fails_the_client(
    emu: Any, make_router: Any, tmp_path: Path
) -> None:
    emu.script(SONNET_MODEL, [{"text": BILLING}])
    emu.script(HAIKU_MODEL, [{"error": 500}] * 10)
    live, candidate = policy_config(emu.base_url, "sonnet"), policy_config(emu.base_url, "haiku")
    router = make_router(mount(tmp_path, live, shadow_doc(candidate)))
    message = sdk(router).messages.create(
        model="tierwise/triage", max_tokens=50, messages=user("x")
    )
    assert message.content[0].text == BILLING
    wait_for(lambda: shadow_counts(router)["failed"] == 1)
    s = metrics(router.metrics_url)
    assert metric(s, "tierwise_router_upstream_errors_total") == 0  # not production's errors
    assert isinstance(message, anthropic.types.Message)


def test_a_config_reload_keeps_the_shadow_counts_and_start_id(
    emu: Any, make_router: Any, tmp_path: Path
) -> None:
    emu.script(SONNET_MODEL, [{"text": BILLING}])
    emu.script(HAIKU_MODEL, [{"text": BILLING}] * 2)
    live, candidate = policy_config(emu.base_url, "sonnet"), policy_config(emu.base_url, "haiku")
    path = mount(tmp_path, live, shadow_doc(candidate))
    router = make_router(path, reload_interval=0.05)
    client = sdk(router)
    client.messages.create(model="tierwise/triage", max_tokens=50, messages=user("x"))
    wait_for(lambda: shadow_counts(router)["agree"] == 1)
    start = router.router.shadow.start_id
    # The live config changes (a reload): the same process, the same counters.
    path.write_text(json.dumps(policy_config(emu.base_url, "opus")))
    wait_for(lambda: router.router.config.hash != live["hash"])
    emu.script("claude-opus-4-6", [{"text": BILLING}])
    client.messages.create(model="tierwise/triage", max_tokens=50, messages=user("y"))
    wait_for(lambda: shadow_counts(router)["agree"] == 2)
    s = metrics(router.metrics_url)
    assert metric(s, "tierwise_shadow_info", start=start, candidate=candidate["hash"]) == 1


def test_a_request_a_spend_budget_degraded_is_never_compared_with_the_candidate(
    emu: Any, make_router: Any, tmp_path: Path
) -> None:
    """Under a budget's degrade action production answers on a cheaper route; agreeing with
    that answer says nothing of agreeing with production, so it is not a sample."""
    from spend_helpers import budget

    live, candidate = policy_config(emu.base_url, "sonnet"), policy_config(emu.base_url, "haiku")
    # One request (not shadowed) spends past 1% of a one-micro-dollar limit: degraded after.
    live["budgets"] = [budget("0.000001", {"atPercent": 1, "action": "degrade", "maxTokens": 16})]
    router = make_router(mount(tmp_path, with_hash(live), shadow_doc(candidate)))
    client = sdk(router)
    first = client.messages.with_raw_response.create(
        model="tierwise/triage",
        max_tokens=50,
        messages=user("spend"),
        extra_headers={NO_SHADOW_HEADER: "1"},
    )
    assert Decimal(first.headers["x-tierwise-cost-usd"]) > Decimal("0.000001")
    client.messages.create(model="tierwise/triage", max_tokens=50, messages=user("refund"))
    time.sleep(0.3)  # room for a (wrong) background call to show up
    assert emu.recorded_requests(model=HAIKU_MODEL) == []
    s = metrics(router.metrics_url)
    assert metric(s, SKIPPED, reason="live_degraded", route="triage") == 1
    assert metric(s, SAMPLES) == 0


# --- a judge tier compares the answers --------------------------------------------------------


def judged_doc(candidate: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """Triage compared by the opus judge, with the judge config the operator writes."""
    judge = judge_config(candidate, {"opus": candidate["tiers"]["opus"]})
    triage = {
        "name": "triage",
        "comparison": "judge",
        "judgeTier": "opus",
        "criteria": "Same label.",
    }
    return shadow_doc(candidate, routes=[triage], judgeConfig=judge, **settings)


def test_a_judge_tier_decides_agreement_with_productions_answer_as_the_reference(
    emu: Any, make_router: Any, tmp_path: Path
) -> None:
    emu.script(SONNET_MODEL, [{"text": BILLING}] * 3)
    emu.script(HAIKU_MODEL, [{"text": BUG}] * 3)
    emu.script(
        OPUS_MODEL,
        [
            {"text": '{"pass": true, "reason": "both route to billing"}'},
            {"text": '{"pass": false, "reason": "a bug is not billing"}'},
            {"text": "I cannot decide"},  # no verdict: the sample failed, it is no vote
        ],
    )
    live, candidate = policy_config(emu.base_url, "sonnet"), policy_config(emu.base_url, "haiku")
    router = make_router(mount(tmp_path, live, judged_doc(candidate)))
    for expected in ({"agree": 1}, {"disagree": 1}, {"failed": 1}):
        reply = sdk(router).messages.create(
            model="tierwise/triage", max_tokens=50, messages=user("charged twice")
        )
        assert reply.content[0].text == BILLING  # the client's answer is production's
        wait_for(lambda e=expected: all(shadow_counts(router)[k] == v for k, v in e.items()))
        wait_for(lambda: settled(router))
    judged = [r for r in emu.recorded_requests() if r.model == OPUS_MODEL]
    assert len(judged) == 3
    prompt = json.dumps(judged[0].body)
    # The eval's judge prompt: the request, production's answer as the reference, the
    # candidate's answer to grade, the criteria.
    assert "charged twice" in prompt and "Same label." in prompt
    assert "Reference answer:\\n" + BILLING.replace('"', '\\"') in prompt
    assert "Answer to grade:\\n" + BUG.replace('"', '\\"') in prompt


def test_the_judges_spend_counts_in_the_shadow_cost_and_its_deadline(
    emu: Any, make_router: Any, tmp_path: Path
) -> None:
    emu.script(SONNET_MODEL, [{"text": BILLING}] * 3)
    emu.script(HAIKU_MODEL, [{"text": BILLING}] * 3)
    emu.script(OPUS_MODEL, [{"text": '{"pass": true}'}])
    live, candidate = policy_config(emu.base_url, "sonnet"), policy_config(emu.base_url, "haiku")
    exact = [{"name": "triage", "comparison": "exactText"}]
    plain = make_router(mount(tmp_path / "exact", live, shadow_doc(candidate, routes=exact)))
    judged = make_router(mount(tmp_path / "judge", live, judged_doc(candidate)))
    for router in (plain, judged):
        sdk(router).messages.create(model="tierwise/triage", max_tokens=50, messages=user("x"))
        wait_for(lambda r=router: shadow_counts(r)["agree"] == 1)
        wait_for(lambda r=router: settled(r))
    cost = [
        metric(metrics(r.metrics_url), SHADOW_COST, candidate=candidate["hash"])
        for r in (plain, judged)
    ]
    assert cost[1] > cost[0] > 0  # the same candidate call, plus the judge's
    # A judge that hangs is cut at the shadow call's deadline, like the candidate.
    emu.script(OPUS_MODEL, [{"text": '{"pass": true}', "first_token_delay": 20.0}])
    slow = make_router(mount(tmp_path / "slow", live, judged_doc(candidate, timeoutSeconds=0.5)))
    sdk(slow).messages.create(model="tierwise/triage", max_tokens=50, messages=user("x"))
    wait_for(lambda: shadow_counts(slow)["failed"] == 1, timeout=5)
    assert settled(slow)
