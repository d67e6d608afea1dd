"""What the gate counts as evidence (issue 17, points 1 and 4 to 7).

The route's runs are built from real items, real answer messages and the real graders; the
decision comes from the same ``route_report`` the eval runs after its replay.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tierwise.evals.dataset import Dataset, Item, parse_dataset
from tierwise.evals.gate import INCONCLUSIVE, PROMOTED, REJECTED, GateSpec
from tierwise.evals.graders import GraderSpec, grade_deterministic
from tierwise.evals.outcome import Outcome
from tierwise.evals.plan import (
    CHANGED_EVALUATED,
    CHANGED_NOT_EVALUATED,
    UNCHANGED,
    EvalPlan,
    RoutePlan,
    route_changes,
)
from tierwise.evals.report import summary, text_report
from tierwise.evals.runner import (
    ConfigRun,
    EvalReport,
    ItemResult,
    check_datasets,
    route_report,
    unevaluated_decisions,
)

GRADER = GraderSpec(type="jsonField", field="label")
ROUTE = RoutePlan(name="triage", dataset="d.jsonl", grader=GRADER)


def plan(**gate: object) -> EvalPlan:
    spec = {"min_quality": 0.8, "max_quality_drop": 0.05, "min_items": 30, **gate}
    return EvalPlan("default/p", (ROUTE,), GateSpec(**spec), {})  # type: ignore[arg-type]


def answer(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def run(
    items: list[Item],
    right: set[str],
    failed: set[str] = frozenset(),
    cost: str = "0.001",
    field: str = "label",
) -> ConfigRun:
    """Answers to ``items``: correct for ids in ``right``, an upstream 500 for ``failed``."""
    results = []
    for item in items:
        if item.id in failed:
            outcome = Outcome(None, "haiku", Decimal(cost), 0, 2.0, "api_error (500)")
            results.append(ItemResult(item, outcome, None))
            continue
        label = item.label if item.id in right else "wrong"
        message = answer(json.dumps({field: label, "confidence": 0.9}))
        outcome = Outcome(message, "haiku", Decimal(cost), 0, 0.5)
        results.append(ItemResult(item, outcome, grade_deterministic(GRADER, item, message)))
    return ConfigRun(results)


def items(n: int, label: str | None = "billing") -> list[Item]:
    return [
        Item(id=f"i{k}", line=k + 1, input=f"distinct question {chr(65 + k % 26)}{k}", label=label)
        for k in range(n)
    ]


# Point 5 -------------------------------------------------------------------------------


def test_point5_candidate_errors_count_against_quality():
    # 250 items, baseline right on all; the candidate right on 237 of the 240 it answered
    # and failed 10 with a 500. Errors ignored it was 237/240 = 0.988; counted it is 0.948.
    data = items(250)
    ids = [i.id for i in data]
    base = run(data, set(ids))
    cand = run(data, set(ids[:237]), failed=set(ids[240:]))
    report = route_report(plan(max_error_rate=0.05), ROUTE, cand, base)
    measured = report.measured()
    assert measured.counted == 250 and measured.correct == 237
    assert measured.quality is not None and measured.quality.estimate == pytest.approx(0.948)
    assert report.paired is not None and report.paired.first_only == 13


def test_point5_failed_items_spend_counts_in_cost():
    data = items(40)
    ids = [i.id for i in data]
    cand = run(data, set(ids), failed=set(ids[:4]), cost="0.002")
    report = route_report(plan(max_error_rate=0.2, max_quality_drop=None), ROUTE, cand, None)
    assert report.candidate_set.cost_per_item == Decimal("0.002")  # 40 items' spend / 40
    assert report.candidate_set.total_cost == Decimal("0.080")


def test_point5_baseline_errors_beyond_the_limit_are_inconclusive():
    data = items(100)
    ids = [i.id for i in data]
    base = run(data, set(ids), failed=set(ids[:59]))  # the baseline fails 59%
    cand = run(data, set(ids))
    report = route_report(plan(), ROUTE, cand, base)
    assert report.decision.outcome == INCONCLUSIVE
    assert "baseline: 59 of 100 items failed" in report.decision.reasons[0]


def test_point5_min_items_applies_to_pairs_and_every_figure_is_over_one_set():
    data = items(40)
    ids = [i.id for i in data]
    # The baseline failed 2 (within maxErrorRate 0.05): 38 pairs; minItems 39 is not met.
    base = run(data, set(ids[:30]), failed=set(ids[38:]), cost="0.010")
    cand = run(data, set(ids[:35]), cost="0.001")
    report = route_report(plan(min_items=39), ROUTE, cand, base)
    assert report.decision.outcome == INCONCLUSIVE
    assert "only 38 pairs graded on both configs" in report.decision.reasons[0]
    # Qualities, drop, cost and saving over the same 38 items: drop = baseline - candidate.
    figures = summary(_eval(report))["routes"]["triage"]
    assert figures["counted"] == 38
    quality, base_quality, drop = (
        figures["quality"],
        figures["baselineQuality"],
        figures["qualityDrop"],
    )
    assert quality[0] == round(35 / 38, 4) and base_quality[0] == round(30 / 38, 4)
    assert drop[0] == pytest.approx(base_quality[0] - quality[0], abs=1e-4)
    assert figures["saving"] == 0.9


def _eval(route) -> EvalReport:
    from tierwise.evals.gate import combine

    return EvalReport(
        "default/p", "sha256:c", "sha256:b", "promoted", [route], combine([route.decision]), 0.1
    )


# Point 4 -------------------------------------------------------------------------------


def test_point4_near_duplicates_are_found_after_normalising_case_space_and_ids():
    text = "\n".join(
        [
            '{"input": "Email #7: I was charged twice for order 1234", "label": "billing"}',
            '{"input": "email #123:  i was CHARGED twice for order 9f8e7d6", "label": "billing"}',
            '{"input": "Email #9: I was charged twice for order 55", "label": "bug"}',
            '{"input": "What is 2+2?", "expected": "4"}',
            '{"input": "What is 3+5?", "expected": "8"}',
            '{"messages": [{"role": "user", "content": "Reset my password, ticket A-17"}], "label": "account"}',
            '{"messages": [{"role": "user", "content": "reset my password,  ticket B-2"}], "label": "account"}',
        ]
    )
    distinct, repeats = parse_dataset(text).distinct()
    assert [i.line for i in distinct.items] == [1, 3, 4, 5, 6]
    assert [(d.line, f.line) for d, f in repeats] == [(2, 1), (7, 6)]


def synthetic_repeated(distinct: int, copies: int) -> Dataset:
    """``distinct`` emails repeated ``copies`` times, each copy with its own number, case
    and spacing: what a careless dataset built from a few templates looks like."""
    lines = []
    for copy in range(copies):
        for k in range(distinct):
            words = f"customer {chr(97 + k % 26)}{chr(97 + k // 26)} cannot log in to the portal"
            text = words.upper() if copy % 2 else words
            lines.append(
                json.dumps({"input": f"Email #{copy * 100 + k}:  {text}", "label": "account"})
            )
    return parse_dataset("\n".join(lines))


def test_point4_forty_items_repeated_five_times_no_longer_promote():
    dataset = synthetic_repeated(40, 5)
    assert len(dataset.items) == 200
    distinct, repeats = dataset.distinct()
    assert len(distinct.items) == 40 and len(repeats) == 160
    # The configs agree on 38 of the 40 texts; each misses one the other gets.
    gate = plan(min_quality=0.8, max_quality_drop=0.05)
    ids = [i.id for i in distinct.items]
    base = run(list(distinct.items), set(ids) - {ids[0]})
    cand = run(list(distinct.items), set(ids) - {ids[1]})
    report = route_report(gate, ROUTE, cand, base, repeats)
    assert report.decision.outcome == INCONCLUSIVE, report.decision.reasons
    assert "straddles maxQualityDrop" in report.decision.reasons[-1]
    # The same answers counted five times (what the gate did before): a falsely tight
    # interval that promotes.
    every = list(dataset.items)
    first_of = {d.id: f.id for d, f in repeats}
    all_ids = {i.id for i in every}

    def missed(text_id: str) -> set[str]:
        return {i.id for i in every if first_of.get(i.id, i.id) == text_id}

    inflated = route_report(
        gate, ROUTE, run(every, all_ids - missed(ids[1])), run(every, all_ids - missed(ids[0]))
    )
    assert inflated.decision.outcome == PROMOTED
    text = text_report(_eval(report))
    assert "200 in the dataset, 40 distinct: 160 duplicates or near-duplicates not counted" in text
    assert summary(_eval(report))["routes"]["triage"]["duplicates"] == 160


# Point 6 -------------------------------------------------------------------------------


def test_point6_a_field_absent_from_every_answer_is_bad_input_not_a_verdict():
    data = items(240)
    grader = GraderSpec(type="jsonField", field="category")
    route = RoutePlan(name="triage", dataset="d.jsonl", grader=grader)
    # The models answer {"label": ...}; the grader reads `category`.
    cand, base = run(data, set()), run(data, set())
    for config in (cand, base):
        config.results = [
            ItemResult(r.item, r.outcome, grade_deterministic(grader, r.item, r.outcome.message))
            for r in config.results
        ]
    report = route_report(plan(min_quality=0.0), route, cand, base)
    assert report.decision.bad_input and report.decision.outcome != PROMOTED
    assert report.decision.reasons == (
        "field `category` absent from 480/480 answers: nothing could be graded",
    )


def test_point6_an_all_wrong_grader_never_promotes_with_min_quality_zero():
    data = items(100)
    report = route_report(
        plan(min_quality=0.0, max_quality_drop=0.05), ROUTE, run(data, set()), run(data, set())
    )
    assert report.decision.bad_input and report.decision.outcome == INCONCLUSIVE
    assert (
        "no answer of either config is correct (0/200 graded answers)" in report.decision.reasons[0]
    )


def test_point6_a_judge_that_never_gives_a_verdict_is_bad_input():
    from tierwise.evals.graders import Verdict

    data = items(30)
    cand, base = run(data, set()), run(data, set())
    for config in (cand, base):
        config.results = [
            ItemResult(r.item, r.outcome, Verdict(None, note="the judge gave no pass/fail verdict"))
            for r in config.results
        ]
    report = route_report(plan(), ROUTE, cand, base)
    assert report.decision.bad_input
    assert report.decision.reasons == (
        "the judge gave no pass/fail verdict on 60/60 answers: nothing could be graded",
    )


@pytest.mark.parametrize(
    ("grader", "says"),
    [
        (GraderSpec(type="jsonField"), "jsonField grader: 240/240 items have no `label`"),
        (
            GraderSpec(type="allowedSet"),
            "240/240 items have no `accept` list and the grader has no values",
        ),
        (GraderSpec(type="regex"), "240/240 items have no `pattern` and the grader no pattern"),
        (GraderSpec(type="regex", pattern="(unclosed"), "grader.pattern: pattern is not a valid"),
    ],
)
def test_point6_what_can_be_checked_before_calling_a_model_is(grader, says):
    from tierwise.evals.dataset import DatasetError

    dataset = Dataset("d.jsonl", tuple(items(240, label=None)))
    route = RoutePlan(name="triage", dataset="d.jsonl", grader=grader)
    gate_plan = EvalPlan("default/p", (route,), GateSpec(0.8), {})
    with pytest.raises(DatasetError, match=r"nothing can be graded|not a valid") as raised:
        check_datasets(gate_plan, {"triage": dataset})
    assert says in str(raised.value)


# Point 1 -------------------------------------------------------------------------------


def _config(chat_tier: str = "sonnet", haiku_model: str = "claude-haiku-4-5") -> dict:
    return {
        "routes": [
            {"name": "triage", "steps": [{"tier": "haiku"}, {"tier": "sonnet"}]},
            {"name": "chat", "steps": [{"tier": chat_tier}]},
            {"name": "summaries", "steps": [{"tier": "opus"}]},
        ],
        "tiers": {
            "haiku": {"model": haiku_model},
            "sonnet": {"model": "claude-sonnet-4-5"},
            "opus": {"model": "claude-opus-4-5"},
        },
        "fallback": None,
    }


def test_point1_every_route_is_listed_changed_or_not():
    changes = route_changes(_config(chat_tier="haiku"), _config(), ["triage"])
    assert changes == {
        "triage": UNCHANGED,
        "chat": CHANGED_NOT_EVALUATED,
        "summaries": UNCHANGED,
    }
    # A tier's model change changes every route that can reach that tier.
    changes = route_changes(_config(haiku_model="claude-haiku-5-5"), _config(), ["triage"])
    assert changes == {"triage": CHANGED_EVALUATED, "chat": UNCHANGED, "summaries": UNCHANGED}


def test_point1_a_changed_route_without_a_dataset_never_promotes_silently():
    changes = {"triage": CHANGED_EVALUATED, "chat": CHANGED_NOT_EVALUATED}
    (decision,) = unevaluated_decisions(plan(), changes).values()
    assert decision.outcome == INCONCLUSIVE
    assert decision.reasons == ("route chat changed and has no dataset",)
    promote = EvalPlan("default/p", (ROUTE,), GateSpec(0.8), {}, unevaluated_routes="Promote")
    (decision,) = unevaluated_decisions(promote, changes).values()
    assert decision.outcome == PROMOTED
    assert "route chat changed and has no dataset" in decision.reasons[0]
    assert "unevaluatedRoutes: Promote" in decision.reasons[0]


def test_point1_plan_carries_unevaluated_routes():
    promote = EvalPlan("default/p", (ROUTE,), GateSpec(0.8), {}, unevaluated_routes="Promote")
    assert EvalPlan.from_document(promote.to_document()) == promote


def test_rejected_routes_still_reject_beside_an_unevaluated_one():
    from tierwise.evals.gate import Decision, combine

    decisions = [
        Decision(REJECTED, ("triage: below",)),
        Decision(INCONCLUSIVE, ("route chat changed and has no dataset",)),
    ]
    assert combine(decisions).outcome == REJECTED


# Point 7 -------------------------------------------------------------------------------


def test_point7_last_eval_names_the_deciding_route_and_shows_every_route():
    from tierwise.controller.rollout_state import last_eval_status
    from tierwise.evals.gate import combine, deciding

    data = items(60)
    ids = [i.id for i in data]
    good = route_report(
        plan(max_quality_drop=0.1),
        RoutePlan("triage", "d", GRADER),
        run(data, set(ids)),
        run(data, set(ids)),
    )
    bad = route_report(
        plan(), RoutePlan("billing", "d", GRADER), run(data, set(ids[:20])), run(data, set(ids))
    )
    decisions = {"triage": good.decision, "billing": bad.decision}
    combined = combine(decisions.values())
    report = EvalReport(
        "default/p", "sha256:c", "sha256:b", "promoted", [good, bad], combined, 1.0,
        changes={"triage": CHANGED_EVALUATED, "billing": CHANGED_EVALUATED, "chat": UNCHANGED},
        deciding=deciding(decisions, combined),
    )  # fmt: skip
    short = summary(report)
    assert short["decision"] == REJECTED and short["decidingRoutes"] == ["billing"]
    status = last_eval_status(short, REJECTED, "", "job", "sha256:c", "now")
    assert status["decidingRoute"] == "billing"
    assert status["quality"].startswith("0.333 ")  # the deciding route's figures on top
    by_name = {r["name"]: r for r in status["routes"]}
    assert by_name["triage"]["decision"] == PROMOTED and by_name["billing"]["decision"] == REJECTED
    assert by_name["triage"]["quality"].startswith("1.000 ") and by_name["triage"]["graded"] == 60
    assert by_name["chat"] == {"name": "chat", "change": UNCHANGED}


def test_point5_candidate_errors_can_be_excluded_by_the_policy():
    data = items(250)
    ids = [i.id for i in data]
    base = run(data, set(ids))
    cand = run(data, set(ids[:237]), failed=set(ids[240:]))
    report = route_report(plan(candidate_errors="Excluded"), ROUTE, cand, base)
    measured = report.measured()
    assert measured.counted == 240 and measured.correct == 237
    assert measured.failed == 10  # still against maxErrorRate


def test_point6_an_outage_is_an_error_rate_not_bad_input():
    data = items(100)
    ids = [i.id for i in data]
    # 97 items failed upstream on both; the 3 answers are wrong: an outage, not a bad grader.
    report = route_report(
        plan(), ROUTE, run(data, set(), set(ids[3:])), run(data, set(), set(ids[3:]))
    )
    assert not report.decision.bad_input and report.decision.outcome == INCONCLUSIVE
    assert "candidate: 97 of 100 items failed upstream" in report.decision.reasons[0]


def test_point6_items_without_a_label_are_counted_and_named():
    data = items(40) + [Item(id=f"n{k}", line=100 + k, input=f"no label {k}") for k in range(2)]
    ids = [i.id for i in data]
    report = route_report(
        plan(max_quality_drop=None), ROUTE, run(data, set(ids)), run(data, set(ids))
    )
    assert report.measured().counted == 40 and report.measured().failed == 2
    assert "candidate not gradable: 2 x item has no label" in text_report(_eval(report))


def test_a_changed_route_without_a_dataset_is_left_to_the_shadow_stage_that_follows():
    changes = {"triage": CHANGED_EVALUATED, "chat": CHANGED_NOT_EVALUATED}
    shadowed = EvalPlan("default/p", (ROUTE,), GateSpec(0.8), {}, shadow_excluded=())
    (decision,) = unevaluated_decisions(shadowed, changes, shadow=True).values()
    assert decision.outcome == PROMOTED
    assert decision.reasons == (
        "route chat changed and has no dataset: the shadow stage gates it on live traffic",
    )
    # Against each route's strongest tier (a first config) no shadow stage follows.
    (decision,) = unevaluated_decisions(shadowed, changes, shadow=False).values()
    assert decision.outcome == INCONCLUSIVE
    # A route that opts out of the shadow stage is not gated by it.
    excluded = EvalPlan("default/p", (ROUTE,), GateSpec(0.8), {}, shadow_excluded=("chat",))
    (decision,) = unevaluated_decisions(excluded, changes, shadow=True).values()
    assert decision.outcome == INCONCLUSIVE
    assert EvalPlan.from_document(excluded.to_document()) == excluded
    assert EvalPlan.from_document(plan().to_document()).shadow_excluded is None
