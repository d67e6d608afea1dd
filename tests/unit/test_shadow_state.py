"""The shadow stage's pure decisions: counting across router restarts, and the verdict."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from tierwise.api.models import Evaluation
from tierwise.api.parsing import parse
from tierwise.api.shadow import Shadow
from tierwise.controller.objects import Observed
from tierwise.controller.rollout_state import NO_DATASET, PAUSED, Situation, Step, next_step
from tierwise.controller.shadow import changed_routes, shadow_document, shadow_stage
from tierwise.controller.shadow_state import (
    GO_ON,
    HOLD,
    SHADOW_PAUSED,
    SHADOWING,
    START,
    Source,
    Totals,
    Verdict,
    judge,
    known_sources,
    merge,
    read_sources,
    shadow_status,
    stage_move,
    totals,
    without_offline_eval,
)
from tierwise.evals.gate import INCONCLUSIVE, PROMOTED, REJECTED
from tierwise.routerconfig import content_hash
from tierwise.routerconfig.shadow import parse_shadow_bytes

T0 = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)
SPEC = Shadow(min_agreement=Decimal("0.9"), spend_limit_per_hour_usd=Decimal(1), min_samples=50)


def test_a_repeated_or_stale_read_never_counts_twice() -> None:
    first = [Source("pod-a", "s1", 10, 9, 0)]
    again = merge(first, [Source("pod-a", "s1", 10, 9, 0)])
    stale = merge(again, [Source("pod-a", "s1", 7, 6, 0)])  # a read from before the last one
    assert totals(stale) == Totals(10, 9, 0, Decimal(0))


def test_a_restarted_router_adds_to_its_previous_run() -> None:
    known = [Source("pod-a", "s1", 40, 38, 1)]
    # The router restarted: a new start id, counters from zero; the old run is not read again.
    after = merge(known, [Source("pod-a", "s2", 5, 5, 0)])
    assert totals(after) == Totals(45, 43, 1, Decimal(0))
    assert {s.start for s in after} == {"s1", "s2"}


def test_sources_survive_the_status_round_trip() -> None:
    sources = [Source("pod-a", "s1", 3, 2, 1, Decimal("0.000123")), Source("pod-b", "s9", 1, 1, 0)]
    status = shadow_status("sha256:c", "2026-12-06T04:00:00Z", sources, totals(sources))
    assert known_sources(status, "sha256:c") == sources
    assert known_sources(status, "sha256:other") == []  # another candidate starts afresh
    assert status["samples"] == 4 and status["agreement"].startswith("0.750 [")


def test_promoted_only_when_the_lower_bound_reaches_the_threshold_with_enough_samples() -> None:
    assert judge(SPEC, Totals(49, 49, 0), T0, T0).outcome == SHADOWING  # too few
    verdict = judge(SPEC, Totals(60, 60, 0), T0, T0)
    assert verdict.outcome == PROMOTED, verdict.reasons
    # 0.93 observed, but the lower bound is below 0.9: go on, never promote on the mean.
    assert judge(SPEC, Totals(60, 56, 0), T0, T0).outcome == SHADOWING


def test_rejected_when_the_upper_bound_is_below_the_threshold() -> None:
    verdict = judge(SPEC, Totals(60, 40, 0), T0, T0)
    assert verdict.outcome == REJECTED
    assert verdict.reasons == ("agreement 0.667 [0.541, 0.773]: below minAgreement 0.900",)


def test_undecided_at_the_deadline_is_inconclusive_never_promoted() -> None:
    late = T0 + timedelta(seconds=SPEC.max_duration_seconds)
    verdict = judge(SPEC, Totals(60, 56, 0), T0, late)
    assert verdict.outcome == INCONCLUSIVE
    assert "maxDurationSeconds" in verdict.reasons[0]


def test_all_failing_shadow_calls_end_inconclusive() -> None:
    failing = Totals(80, 0, 80)
    assert judge(SPEC, failing, T0, T0).outcome == SHADOWING  # not a rejection of the config
    late = T0 + timedelta(days=2)
    verdict = judge(SPEC, failing, T0, late)
    assert verdict.outcome == INCONCLUSIVE
    assert "candidate: 80 of 80 shadow calls failed" in verdict.reasons[1]


def test_counters_are_read_for_the_candidate_and_the_router_run() -> None:
    samples = [
        ("tierwise_shadow_info", {"candidate": "sha256:c", "start": "s1", "policy": "p"}, 1.0),
        ("tierwise_shadow_samples_total", {"candidate": "sha256:c", "result": "agree"}, 7.0),
        ("tierwise_shadow_samples_total", {"candidate": "sha256:c", "result": "disagree"}, 2.0),
        ("tierwise_shadow_samples_total", {"candidate": "sha256:c", "result": "failed"}, 1.0),
        ("tierwise_shadow_samples_total", {"candidate": "sha256:old", "result": "agree"}, 99.0),
        ("tierwise_shadow_cost_usd_total", {"candidate": "sha256:c", "route": "t"}, 0.0125),
    ]
    (source,) = read_sources("uid-1", samples, "sha256:c")
    assert source == Source("uid-1", "s1", 10, 7, 1, Decimal("0.0125"))
    assert read_sources("uid-1", samples, "sha256:none") == []


# --- what is shadowed: the changed routes, less those that opted out --------------------------


def _documents(threshold: str) -> dict:
    """The example policy rendered with the triage route's confidence threshold."""
    golden = Path(__file__).resolve().parents[1] / "golden" / "render"
    doc = json.loads((golden / "example-support-triage.json").read_text())
    doc = copy.deepcopy(doc)
    for signal in doc["routes"][0]["steps"][0]["escalateWhen"]:
        if signal.get("signal") == "jsonFieldBelow":
            signal["threshold"] = threshold
    doc.pop("hash", None)
    doc["hash"] = content_hash(doc)
    return doc


def _evaluation(**shadow: object) -> Evaluation:
    return parse(
        Evaluation,
        {
            "dataset": {"configMapRef": {"name": "ds"}},
            "grader": {"type": "jsonField", "field": "result.label"},
            "routes": [{"name": "triage"}],
            "gate": {"minQuality": 0.9},
            "shadow": {"minAgreement": 0.9, "spendLimitPerHourUSD": 1, **shadow},
        },
        "spec.evaluation",
    )


def test_only_changed_routes_are_shadowed_with_the_routes_grader_field() -> None:

    live, candidate = _documents("0.9"), _documents("0.85")
    assert changed_routes(candidate, live) == ["triage"]
    assert changed_routes(live, live) == []
    doc = json.loads(shadow_document(_evaluation(), candidate, live) or "{}")
    assert doc["routes"] == [
        {"name": "triage", "comparison": "graderField", "field": "result.label"}
    ]
    assert doc["config"]["hash"] == candidate["hash"]


def test_a_route_that_opted_out_is_never_shadowed() -> None:
    live, candidate = _documents("0.9"), _documents("0.85")
    assert shadow_document(_evaluation(excludeRoutes=["triage"]), candidate, live) is None


# --- a route without a dataset: gated by the shadow stage alone ------------------------------


def _chat_changed(doc: dict) -> dict:
    """``doc`` with the chat route's first step capped lower: a change of chat alone."""
    doc = copy.deepcopy(doc)
    chat = next(r for r in doc["routes"] if r["name"] == "chat")
    chat["steps"][0]["maxTokens"] = 77
    doc.pop("hash", None)
    doc["hash"] = content_hash(doc)
    return doc


def _shadow_only(routes: list, **evaluation: object) -> Evaluation:
    return parse(
        Evaluation,
        {
            "routes": routes,
            "gate": {"minQuality": 0.9},
            "onNewPolicy": "Promote",
            "shadow": {"minAgreement": 0.9, "spendLimitPerHourUSD": 1},
            **evaluation,
        },
        "spec.evaluation",
    )


def test_with_no_dataset_a_changed_route_goes_to_the_shadow_stage_without_an_eval() -> None:
    live = _documents("0.9")
    candidate = _chat_changed(live)
    decision = without_offline_eval(_shadow_only([]), candidate, live)
    assert decision is not None and decision.outcome == PROMOTED
    assert decision.reasons == (
        "route chat changed and has no dataset: the shadow stage gates it on live traffic",
    )
    # The shadow document holds the route the decision left to it, and only that one.
    doc = json.loads(shadow_document(_shadow_only([]), candidate, live) or "{}")
    assert [r["name"] for r in doc["routes"]] == ["chat"]


def test_a_route_without_a_dataset_is_compared_on_its_graders_field() -> None:
    live = _documents("0.9")
    candidate = _chat_changed(live)
    evaluation = _shadow_only(
        [{"name": "chat", "grader": {"type": "jsonField", "field": "intent"}}]
    )
    assert evaluation.offline_routes() == ()
    doc = json.loads(shadow_document(evaluation, candidate, live) or "{}")
    assert doc["routes"] == [{"name": "chat", "comparison": "graderField", "field": "intent"}]


def test_an_offline_route_means_an_eval_job_runs() -> None:
    live = _documents("0.9")
    evaluation = _shadow_only([{"name": "triage", "dataset": {"configMapRef": {"name": "ds"}}}])
    assert without_offline_eval(evaluation, _chat_changed(live), live) is None


def test_a_changed_route_that_opts_out_and_has_no_dataset_is_never_promoted_silently() -> None:
    live = _documents("0.9")
    candidate = _chat_changed(live)
    shadow = {"minAgreement": 0.9, "spendLimitPerHourUSD": 1, "excludeRoutes": ["chat"]}
    decision = without_offline_eval(_shadow_only([], shadow=shadow), candidate, live)
    assert decision is not None and decision.outcome == INCONCLUSIVE
    assert decision.reasons == ("route chat changed and has no dataset",)
    untested = _shadow_only([], shadow=shadow, unevaluatedRoutes="Promote")
    decision = without_offline_eval(untested, candidate, live)
    assert decision is not None and decision.outcome == PROMOTED
    assert "promoted untested" in decision.reasons[0]


def test_with_no_dataset_and_nothing_live_nothing_is_promoted() -> None:
    decision = without_offline_eval(_shadow_only([]), _documents("0.9"), None)
    assert decision is not None and decision.outcome == INCONCLUSIVE
    unchanged = without_offline_eval(_shadow_only([]), _documents("0.9"), _documents("0.9"))
    assert unchanged is not None and unchanged.outcome == INCONCLUSIVE


def test_no_dataset_starts_no_job_and_the_shadow_stage_takes_the_candidate() -> None:
    live = _documents("0.9")
    candidate = _chat_changed(live)
    evaluation = _shadow_only([])
    decision = without_offline_eval(evaluation, candidate, live)
    situation = Situation(candidate["hash"], live["hash"], {}, [], without_eval=decision)
    step = next_step(situation, "p-eval-x")
    assert not step.start_job and step.reason == NO_DATASET and step.promote
    stage = shadow_stage(
        Observed("CascadePolicy", "ns", "p"), evaluation, candidate, live, {}, step, None, tuple
    )
    assert stage.step.phase == SHADOWING and not stage.step.promote
    assert stage.step.message.startswith("no route has a dataset; shadowing candidate")
    assert stage.document is not None and stage.status is not None
    # Every changed route opted out: the decision is Inconclusive, and no stage starts.
    shadow = {"minAgreement": 0.9, "spendLimitPerHourUSD": 1, "excludeRoutes": ["chat"]}
    out = without_offline_eval(_shadow_only([], shadow=shadow), candidate, live)
    step = next_step(dataclasses.replace(situation, without_eval=out), "p-eval-x")
    assert step.phase == INCONCLUSIVE and step.decided and not step.promote


# --- the pause annotation holds the shadow stage ----------------------------------------------


def _shadowing(phase: str = SHADOWING, reason: str = "ShadowRunning") -> tuple[dict, dict]:
    rollout = {"phase": phase, "reason": reason, "job": "p-eval-x"}
    return rollout, {"hash": "sha256:c", "startedAt": "2026-12-06T04:00:00Z", "samples": 300}


def test_a_paused_shadow_stage_decides_nothing_and_resuming_continues_it() -> None:
    passed = Step(PROMOTED, "EvalPassed", "passed", promote=True, decided=True)
    paused = next_step(
        Situation("sha256:c", "sha256:l", {}, [], paused=True), "p-eval-x"
    )  # what the offline rollout says under the annotation
    assert paused.phase == PAUSED
    rollout, record = _shadowing()
    assert stage_move(rollout, record, "sha256:c", paused) == HOLD
    # Held: the next sync under the annotation holds again; once it is removed, the stage
    # goes on with what it counted (not a new start that would forget its samples).
    rollout, record = _shadowing(PAUSED, SHADOW_PAUSED)
    assert stage_move(rollout, record, "sha256:c", paused) == HOLD
    assert stage_move(rollout, record, "sha256:c", passed) == GO_ON
    # An ordinary pause (before the stage started) never starts it, nor lets it continue.
    ordinary = ({"phase": PAUSED, "reason": "Paused"}, record)
    assert stage_move(*ordinary, "sha256:c", paused) is None
    assert stage_move(*ordinary, "sha256:c", passed) == START
    # A newer candidate is not the held one's stage.
    assert stage_move(rollout, record, "sha256:other", paused) is None


def test_a_held_shadow_stage_is_paused_keeps_shadowing_and_leaves_its_figures() -> None:
    live = _documents("0.9")
    candidate = _chat_changed(live)
    paused = next_step(Situation(candidate["hash"], live["hash"], {}, [], paused=True), "j")
    rollout, record = _shadowing()
    record["hash"] = candidate["hash"]
    current = {"rollout": rollout, "shadow": record}
    stage = shadow_stage(
        Observed("CascadePolicy", "ns", "p"),
        _shadow_only([]),
        candidate,
        live,
        current,
        paused,
        None,
        pods=_no_pods_read,
    )
    assert stage.step.phase == PAUSED and stage.step.reason == SHADOW_PAUSED
    assert not stage.step.decided and not stage.step.promote and stage.step.progressing is False
    assert stage.document is not None  # the sidecars go on sampling
    assert stage.status is None  # status.shadow as it was: nothing read, nothing decided


def test_no_samples_yet_is_said_so_not_as_a_failure_rate() -> None:
    verdict = judge(SPEC, Totals(), T0, T0)
    assert verdict == Verdict(SHADOWING, ("no shadow samples yet",))
    late = judge(SPEC, Totals(), T0, T0 + timedelta(days=2))
    assert late.outcome == INCONCLUSIVE and late.reasons[1] == "no shadow samples yet"


# --- a judge tier compares -----------------------------------------------------------------


def _judged(**comparison: object) -> Evaluation:
    shadow = {
        "minAgreement": 0.9,
        "spendLimitPerHourUSD": 1,
        "comparison": {"type": "judge", "tier": "opus", **comparison},
    }
    return _shadow_only([], shadow=shadow)


def test_a_judge_comparison_carries_the_judge_tier_to_the_sidecar() -> None:
    live = _documents("0.9")
    candidate = _chat_changed(live)
    text = shadow_document(
        _judged(criteria="Same intent."), candidate, live, candidate["tiers"]["opus"]
    )
    settings = parse_shadow_bytes(text or "")
    assert settings.routes["chat"].comparison == "judge"
    assert (settings.routes["chat"].judge_tier, settings.routes["chat"].criteria) == (
        "opus",
        "Same intent.",
    )
    assert settings.judge_config is not None
    assert list(settings.judge_config.routes_by_name) == ["judge-opus"]
    assert settings.judge_config.tiers["opus"].model == candidate["tiers"]["opus"]["model"]


def test_a_judge_tier_that_does_not_exist_ends_the_stage_inconclusive() -> None:
    live = _documents("0.9")
    candidate = _chat_changed(live)
    evaluation = _judged()
    step = next_step(
        Situation(
            candidate["hash"],
            live["hash"],
            {},
            [],
            without_eval=without_offline_eval(evaluation, candidate, live),
        ),
        "j",
    )
    stage = shadow_stage(
        Observed("CascadePolicy", "ns", "p"),
        evaluation,
        candidate,
        live,
        {},
        step,
        None,
        tuple,
        {},
    )
    assert stage.step.phase == INCONCLUSIVE and stage.step.decided and not stage.step.promote
    assert "ModelTier 'opus' not found" in stage.step.message
    assert stage.document is None


def _no_pods_read() -> tuple[()]:
    raise AssertionError("a paused shadow stage reads no figures")


# --- a candidate shadowed again ----------------------------------------------------------------


def test_a_candidate_shadowed_again_counts_only_what_came_after_its_new_start() -> None:
    """A router keeps a candidate's counters for its whole run: a second stage of the same
    candidate (re-evaluated after an Inconclusive) must not inherit the first stage's."""
    import http.server
    import threading

    from tierwise.controller.pods import PodView

    live = _documents("0.9")
    candidate = _chat_changed(live)
    hash_ = candidate["hash"]
    exposition = {"text": ""}

    def counters(agree: int, disagree: int) -> str:
        return (
            "# TYPE tierwise_shadow_info gauge\n"
            f'tierwise_shadow_info{{candidate="{hash_}",start="s1"}} 1.0\n'
            "# TYPE tierwise_shadow_samples counter\n"
            f'tierwise_shadow_samples_total{{candidate="{hash_}",result="agree"}} {agree}.0\n'
            f'tierwise_shadow_samples_total{{candidate="{hash_}",result="disagree"}} {disagree}.0\n'
        )

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exposition["text"].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        pod = PodView("app-1", True, True, uid="uid-1", metrics_url=url)
        evaluation = _shadow_only([])
        step = next_step(
            Situation(
                hash_,
                live["hash"],
                {},
                [],
                without_eval=without_offline_eval(evaluation, candidate, live),
            ),
            "p-eval-x",
        )
        # The earlier stage left 40 disagreements in this router's counters.
        exposition["text"] = counters(0, 40)
        start = shadow_stage(
            Observed("CascadePolicy", "ns", "p"),
            evaluation,
            candidate,
            live,
            {},
            step,
            None,
            lambda: [pod],
        )
        assert start.step.phase == SHADOWING and start.status is not None
        assert start.status["samples"] == 0
        # Since then: 30 agreements. The stage sees 30 of 30, not 30 of 70.
        exposition["text"] = counters(30, 40)
        current = {
            "rollout": {"phase": SHADOWING, "reason": "ShadowStarted"},
            "shadow": start.status,
        }
        going = shadow_stage(
            Observed("CascadePolicy", "ns", "p"),
            evaluation,
            candidate,
            live,
            current,
            step,
            None,
            lambda: [pod],
        )
        assert going.status is not None
        assert (going.status["samples"], going.status["agreements"]) == (30, 30), going.status
        assert going.step.phase == SHADOWING and "30 samples" in going.step.message
    finally:
        server.shutdown()


def test_what_a_run_counted_before_the_stage_survives_the_status_round_trip() -> None:
    at_start = Source("pod-a", "s1", 40, 0, 2, Decimal("0.01")).as_stage_start()
    status = shadow_status("sha256:c", "2026-12-06T04:00:00Z", [at_start], totals([at_start]))
    assert status["samples"] == 0
    later = merge(
        known_sources(status, "sha256:c"), [Source("pod-a", "s1", 45, 5, 2, Decimal("0.02"))]
    )
    assert totals(later) == Totals(5, 5, 0, Decimal("0.01"))
