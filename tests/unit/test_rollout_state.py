"""The rollout's pure decisions: what the operator does for each situation."""

from __future__ import annotations

import json

import pytest

from tierwise.controller.rollout_state import (
    JobView,
    Situation,
    last_eval_status,
    matches_hash,
    next_step,
)

OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64
NEWER = "sha256:" + "c" * 64
JOB = "p-eval-bbbbbbbb"


def summary(decision: str, **route) -> str:
    figures = {"quality": [0.9, 0.85, 0.94], "items": 200, "graded": 200, "saving": 0.3,
               "escalationRate": 0.2, "costPerItem": "0.000300", **route}  # fmt: skip
    return json.dumps(
        {"decision": decision, "reasons": ["triage: why"], "routes": {"triage": figures}}
    )


def situation(**changes) -> Situation:
    base = {"candidate_hash": NEW, "promoted_hash": OLD, "previous": {}, "jobs": []}
    return Situation(**{**base, **changes})


def test_a_new_candidate_starts_its_job_and_supersedes_older_ones():
    step = next_step(situation(jobs=[JobView("p-eval-aaaa", NEWER, "running")]), JOB)
    assert step.phase == "Evaluating" and step.start_job and not step.promote
    assert step.delete_jobs == ("p-eval-aaaa",)
    assert step.event is not None and step.event[1] == "EvalSuperseded"


def test_a_running_job_is_waited_for():
    step = next_step(situation(jobs=[JobView(JOB, NEW, "running")]), JOB)
    assert (step.phase, step.start_job, step.decided) == ("Evaluating", False, False)


@pytest.mark.parametrize(
    ("job", "phase", "promote", "says"),
    [
        (JobView(JOB, NEW, "succeeded", message=summary("Promoted")), "Promoted", True, "why"),
        (JobView(JOB, NEW, "succeeded", message=summary("Rejected")), "Rejected", False, "why"),
        (
            JobView(JOB, NEW, "succeeded", message=summary("Inconclusive")),
            "Inconclusive",
            False,
            "why",
        ),
        (
            JobView(JOB, NEW, "succeeded", message="not json"),
            "Inconclusive",
            False,
            "without a readable summary",
        ),
        (
            JobView(JOB, NEW, "failed", "DeadlineExceeded"),
            "Inconclusive",
            False,
            "past its deadline",
        ),
        (
            JobView(JOB, NEW, "failed", "BackoffLimitExceeded", "Traceback\nValueError: boom"),
            "Inconclusive",
            False,
            "ValueError: boom",
        ),
        (
            JobView(
                JOB,
                NEW,
                "failed",
                "BackoffLimitExceeded",
                '{"decision": "Inconclusive", "error": "x line 7: bad"}',
            ),
            "Inconclusive",
            False,
            "line 7",
        ),
    ],
)
def test_a_finished_job_is_decided(job, phase, promote, says):
    step = next_step(situation(jobs=[job]), JOB)
    assert (step.phase, step.promote, step.decided) == (phase, promote, True)
    assert says in step.message
    assert step.event is not None and step.event[1] == phase


def test_inconclusive_never_promotes():
    for job in (
        JobView(JOB, NEW, "failed", "DeadlineExceeded"),
        JobView(JOB, NEW, "succeeded", message=json.dumps({"decision": "Maybe"})),
    ):
        assert not next_step(situation(jobs=[job]), JOB).promote


def test_a_decision_is_made_once():
    previous = {"phase": "Rejected", "reason": "EvalFailedGate", "decidedHash": NEW, "job": JOB}
    finished = JobView(JOB, NEW, "succeeded", message=summary("Rejected"))
    step = next_step(situation(previous=previous, jobs=[finished]), JOB)
    assert step.phase == "Rejected" and not step.decided and not step.start_job
    assert step.event is None


@pytest.mark.parametrize("recorded", ["Promoting", "Promoted"])
def test_a_recorded_promotion_that_was_not_written_is_completed_without_a_new_decision(recorded):
    # Promoting: the record written before the live ConfigMap (Promoted: an older operator's).
    previous = {"phase": recorded, "reason": "EvalPassed", "decidedHash": NEW}
    step = next_step(situation(previous=previous), JOB)
    assert step.promote and not step.decided and step.event is None
    assert (step.phase, step.reason) == ("Promoted", "EvalPassed")
    # Written just before a restart: the live hash is the candidate's, the reason is kept.
    live = next_step(situation(previous=previous, promoted_hash=NEW), JOB)
    assert (live.phase, live.reason, live.promote) == ("Promoted", "EvalPassed", False)


def test_the_live_candidate_is_promoted_and_reverting_cancels_evals():
    step = next_step(situation(promoted_hash=NEW, jobs=[JobView("old", NEWER, "running")]), JOB)
    assert step.phase == "Promoted" and not step.promote and step.delete_jobs == ("old",)


def test_new_policy_behaviour_is_a_field():
    promote = next_step(situation(promoted_hash=None, on_new_policy="Promote"), JOB)
    assert promote.promote and promote.reason == "FirstConfig"
    evaluate = next_step(situation(promoted_hash=None, on_new_policy="Evaluate"), JOB)
    assert evaluate.start_job and not evaluate.promote


def test_break_glass():
    forced = next_step(situation(promote_hash="bbbbbbbb", jobs=[JobView(JOB, NEW, "running")]), JOB)
    assert forced.promote and forced.reason == "BreakGlass" and forced.delete_jobs == (JOB,)
    assert forced.event is not None and forced.event[0] == "Warning"
    paused = next_step(situation(paused=True), JOB)
    assert paused.phase == "Paused" and not paused.start_job and not paused.promote
    assert not next_step(situation(promote_hash="cccccccc"), JOB).promote


def test_matches_hash():
    assert matches_hash(NEW, NEW) and matches_hash("bbbbbbbb", NEW) and matches_hash(NEW[7:], NEW)
    assert (
        not matches_hash("bbbb", NEW) and not matches_hash(None, NEW) and not matches_hash("", NEW)
    )


def test_last_eval_figures_are_readable():
    status = last_eval_status(json.loads(summary("Promoted")), "Promoted", "", JOB, NEW, "now")
    assert status["quality"] == "0.900 [0.850, 0.940]"
    assert status["saving"] == "30.0%" and status["escalationRate"] == "20.0%"
    assert status["costPerItem"] == "$0.000300" and status["items"] == 200
    bare = last_eval_status(None, "Inconclusive", "Job failed", JOB, NEW, "now")
    assert bare["reasons"] == ["Job failed"] and "quality" not in bare


def test_a_new_eval_of_a_decided_candidate_can_be_requested_once():
    previous = {"phase": "Inconclusive", "reason": "EvalFailed", "decidedHash": NEW, "job": JOB}
    failed = JobView(JOB, NEW, "failed", "DeadlineExceeded")
    step = next_step(situation(previous=previous, jobs=[failed], reevaluate="bbbbbbbb"), JOB)
    assert step.reason == "ReEvaluating" and step.clear_decision and step.delete_jobs == (JOB,)
    assert step.extra == {"reevaluated": "bbbbbbbb"} and not step.decided
    # The same annotation value again: already acted on, the decision stands.
    done = {**previous, "reevaluated": "bbbbbbbb"}
    again = next_step(situation(previous=done, jobs=[failed], reevaluate="bbbbbbbb"), JOB)
    assert again.phase == "Inconclusive" and not again.clear_decision
    # While the old Job is being deleted, wait; then start a new one.
    deleting = JobView(JOB, NEW, "deleting")
    waiting = next_step(situation(previous={"reevaluated": "bbbbbbbb"}, jobs=[deleting]), JOB)
    assert waiting.reason == "EvalRestarting" and not waiting.start_job
    fresh = next_step(situation(previous={"reevaluated": "bbbbbbbb"}), JOB)
    assert fresh.start_job


# -- point 6: the candidate includes the key references --------------------------------------

OLD_REFS = [("TIERWISE_TIER_HAIKU_API_KEY", "anthropic-api-key", "api-key")]
NEW_REFS = [("TIERWISE_TIER_HAIKU_API_KEY", "anthropic-api-key-2026", "api-key")]


def test_point6_key_references_are_part_of_the_candidates_identity():
    from tierwise.controller.rollout_state import candidate_identity

    # No key references: the config hash itself (nothing changes for such a policy).
    assert candidate_identity(OLD, []) == OLD
    old = candidate_identity(OLD, OLD_REFS)
    assert old.startswith("sha256:") and old != OLD
    # Another Secret, another key, or another variable is another candidate...
    assert candidate_identity(OLD, NEW_REFS) != old
    assert candidate_identity(OLD, [(*OLD_REFS[0][:2], "other")]) != old
    # ...and the same references in any order (or repeated) are the same candidate.
    two = [*OLD_REFS, ("TIERWISE_TIER_OPUS_API_KEY", "opus-key", "k")]
    assert candidate_identity(OLD, two) == candidate_identity(OLD, [*reversed(two), two[0]])
    assert candidate_identity(NEW, OLD_REFS) != old


def test_point6_a_key_reference_change_alone_is_evaluated_before_it_is_live():
    from tierwise.controller.rollout_state import candidate_identity

    live = candidate_identity(OLD, OLD_REFS)
    candidate = candidate_identity(OLD, NEW_REFS)  # same config, another Secret
    previous = {"phase": "Promoted", "decidedHash": live}
    step = next_step(
        situation(candidate_hash=candidate, promoted_hash=live, previous=previous), JOB
    )
    assert step.phase == "Evaluating" and step.start_job and not step.promote


def test_point6_an_eval_pod_that_cannot_start_is_inconclusive_naming_the_secret():
    message = 'secret "anthropic-api-key-2026" not found'
    job = JobView(JOB, NEW, "failed", "CreateContainerConfigError", message)
    step = next_step(situation(jobs=[job]), JOB)
    assert (step.phase, step.reason, step.promote, step.decided) == (
        "Inconclusive", "KeyReferenceMissing", False, True,
    )  # fmt: skip
    assert message in step.message and "tierwise.dev/reevaluate" in step.message
    assert JOB in step.delete_jobs  # its pod would wait for the Secret until the deadline
    assert step.event is not None and message in step.event[2]


def test_point6_an_upgrade_re_evaluates_no_policy_whose_live_config_is_current():
    from tierwise.controller.rollout import _live_identity
    from tierwise.controller.rollout_state import candidate_identity

    candidate = candidate_identity(OLD, OLD_REFS)
    # A live ConfigMap written before key references were part of the candidate.
    legacy = {"metadata": {"annotations": {"tierwise.dev/config-hash": OLD}}}
    assert _live_identity(legacy, candidate, OLD) == candidate
    assert _live_identity(legacy, candidate_identity(NEW, OLD_REFS), NEW) == OLD
    # Once written with its identity, a key reference change is seen.
    current = {"metadata": {"annotations": {"tierwise.dev/candidate-hash": candidate}}}
    assert _live_identity(current, candidate_identity(OLD, NEW_REFS), OLD) == candidate
    assert _live_identity(None, candidate, OLD) is None
