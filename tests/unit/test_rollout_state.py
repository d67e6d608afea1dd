"""The rollout's pure decisions: what the operator does for each situation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tierwise.controller.rollout_state import (
    DATASET_GRACE_SECONDS,
    JobView,
    Situation,
    dataset_digest,
    last_eval_status,
    matches_hash,
    next_step,
    not_started,
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


# --- Issue 17: nothing reaches the live config around the gate ---------------------------

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def test_point_10_a_lost_live_config_is_no_new_policy():
    # The status recorded OLD as promoted: whatever the live ConfigMap says (gone, edited),
    # a rejected candidate is not "a new policy's first config".
    previous = {"phase": "Rejected", "reason": "EvalFailedGate", "decidedHash": NEW, "job": JOB}
    step = next_step(situation(previous=previous, on_new_policy="Promote"), JOB)
    assert step.phase == "Rejected" and not step.promote and not step.decided


def test_point_12_the_promote_annotation_acts_once_per_value():
    first = next_step(situation(promote_hash="bbbbbbbb"), JOB)
    assert first.promote and first.reason == "BreakGlass"
    assert first.extra["forcePromoted"] == "bbbbbbbb"
    # Months later git returns to the same config: the stale annotation does nothing.
    stale = next_step(situation(promote_hash="bbbbbbbb", previous=dict(first.extra)), JOB)
    assert not stale.promote and stale.start_job and stale.reason == "EvalStarted"
    # A new value is a new request.
    again = next_step(situation(promote_hash=NEW, previous=dict(first.extra)), JOB)
    assert again.promote and again.extra["forcePromoted"] == NEW


def test_point_13_a_decision_records_the_datasets_it_was_made_on():
    job = JobView(JOB, NEW, "succeeded", message=summary("Inconclusive"), dataset_digest=D1)
    step = next_step(situation(jobs=[job], dataset_digest=D1), JOB)
    assert step.decided and step.extra == {"decidedDataset": D1}
    passed = JobView(JOB, NEW, "succeeded", message=summary("Promoted"), dataset_digest=D1)
    promoted = next_step(situation(jobs=[passed], dataset_digest=D1), JOB)
    assert promoted.extra == {"decidedDataset": D1, "promotedDataset": D1}


@pytest.mark.parametrize("phase", ["Inconclusive", "Rejected"])
def test_point_13_a_fixed_dataset_re_runs_a_decision_without_an_annotation(phase):
    previous = {"phase": phase, "reason": "EvalFailed", "decidedHash": NEW, "job": JOB,
                "decidedDataset": D1}  # fmt: skip
    old = JobView(JOB, NEW, "failed", "BackoffLimitExceeded", dataset_digest=D1)
    # Same dataset: the decision stands.
    same = next_step(situation(previous=previous, jobs=[old], dataset_digest=D1), JOB)
    assert same.phase == phase and not same.start_job and not same.delete_jobs
    # The dataset changed: the old Job (same name) goes first, then a new eval starts.
    changed = next_step(situation(previous=previous, jobs=[old], dataset_digest=D2), JOB)
    assert (changed.phase, changed.reason) == ("Evaluating", "DatasetChanged")
    assert changed.delete_jobs == (JOB,) and not changed.start_job
    assert changed.event is not None and "dataset changed" in changed.event[2]
    deleting = JobView(JOB, NEW, "deleting", dataset_digest=D1)
    waiting = next_step(situation(previous=previous, jobs=[deleting], dataset_digest=D2), JOB)
    assert waiting.reason == "DatasetChanged" and not waiting.delete_jobs and waiting.event is None
    fresh = next_step(situation(previous=previous, dataset_digest=D2), JOB)
    assert fresh.start_job and "dataset changed" in fresh.message
    # The new Job's result is decided, and recorded for the new dataset.
    new = JobView(JOB, NEW, "succeeded", message=summary("Promoted"), dataset_digest=D2)
    decided = next_step(situation(previous=previous, jobs=[new], dataset_digest=D2), JOB)
    assert decided.decided and decided.promote and decided.extra["decidedDataset"] == D2
    # A dataset that is missing now tells nothing: the decision stands.
    unknown = next_step(situation(previous=previous, jobs=[old], dataset_digest=None), JOB)
    assert unknown.phase == phase and not unknown.start_job


def test_point_13_a_changed_dataset_re_evaluates_the_promoted_config():
    previous = {"phase": "Promoted", "reason": "EvalPassed", "decidedHash": NEW,
                "decidedDataset": D1, "promotedDataset": D1}  # fmt: skip
    live = situation(promoted_hash=NEW, previous=previous, dataset_digest=D1)
    assert next_step(live, JOB).reason == "EvalPassed"
    changed = next_step(situation(promoted_hash=NEW, previous=previous, dataset_digest=D2), JOB)
    assert changed.start_job and not changed.promote
    assert "changed since live config" in changed.message
    # Rejected on the new dataset: the decision stands (the config stays live, it is all
    # there is), and the same dataset does not start another eval.
    failed = JobView(JOB, NEW, "succeeded", message=summary("Rejected"), dataset_digest=D2)
    rejected = next_step(
        situation(promoted_hash=NEW, previous=previous, jobs=[failed], dataset_digest=D2), JOB
    )
    assert rejected.phase == "Rejected" and rejected.decided and not rejected.promote
    after = {**previous, "phase": "Rejected", **rejected.extra}
    again = situation(promoted_hash=NEW, previous=after, jobs=[failed], dataset_digest=D2)
    assert next_step(again, JOB).phase == "Rejected" and not next_step(again, JOB).decided
    # Older records without a digest are not re-opened by the first sync that knows one.
    bare = situation(promoted_hash=NEW, previous={"phase": "Promoted"}, dataset_digest=D2)
    assert next_step(bare, JOB).reason == "UpToDate"


def test_point_14_a_missing_dataset_is_waited_for_then_degrades():
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    first = not_started("DatasetMissing", "dataset ConfigMap 'd' not found", {}, now)
    assert first.phase == "Evaluating" and first.progressing is True
    previous = {"reason": "DatasetMissing", **first.extra}
    later = now + timedelta(seconds=DATASET_GRACE_SECONDS + 1)
    stuck = not_started("DatasetMissing", "dataset ConfigMap 'd' not found", previous, later)
    assert stuck.progressing is False and "since 2026-12-06T12:00:00Z" in stuck.message
    # The message does not change while the wait goes on (no status write per minute).
    later_still = not_started("DatasetMissing", "dataset ConfigMap 'd' not found", previous,
                              later + timedelta(hours=1))  # fmt: skip
    assert later_still.message == stuck.message
    assert stuck.extra["waitingSince"] == first.extra["waitingSince"]
    # A Job the API server refused is no dataset wait: not progressing at once.
    refused = not_started("EvalJobNotCreated", "eval Job x could not be created", {}, now)
    assert refused.progressing is False and refused.reason == "EvalJobNotCreated"


def test_dataset_digest_is_the_content():
    one = dataset_digest([("d", "k", "a\n"), ("e", "k", "b\n")])
    assert one == dataset_digest([("e", "k", "b\n"), ("d", "k", "a\n")])
    assert one != dataset_digest([("d", "k", "a\n"), ("e", "k", "c\n")])


def test_point_14_an_eval_in_which_every_call_failed_says_why():
    failures = [{"tier": "haiku", "error": "authentication_error (401): invalid x-api-key",
                 "count": 240}]  # fmt: skip
    message = summary("Inconclusive", items=240, graded=0, errors=240, failures=failures)
    step = next_step(situation(jobs=[JobView(JOB, NEW, "succeeded", message=message)]), JOB)
    assert step.phase == "Inconclusive"
    assert step.message.startswith("authentication failed for tier haiku: 240/240 calls 401")
    outage = [{"tier": "sonnet", "error": "api_error (500): boom", "count": 10}]
    failed = summary("Inconclusive", items=10, graded=0, errors=10, failures=outage)
    step = next_step(situation(jobs=[JobView(JOB, NEW, "succeeded", message=failed)]), JOB)
    assert "calls to tier sonnet failed: 10/10 calls api_error (500): boom" in step.message


# -- point 6: the candidate includes the key references --------------------------------------

OLD_REFS = [("TIERWISE_TIER_HAIKU_API_KEY", "anthropic-api-key", "api-key")]
NEW_REFS = [("TIERWISE_TIER_HAIKU_API_KEY", "anthropic-api-key-2026", "api-key")]


def test_point6_key_references_are_part_of_the_candidates_identity():
    from tierwise.controller.rollout_state import candidate_identity, key_refs_digest

    # No key references: the config hash itself (nothing changes for such a policy).
    assert key_refs_digest([]) == "" and candidate_identity(OLD, "") == OLD
    old = candidate_identity(OLD, key_refs_digest(OLD_REFS))
    assert old.startswith("sha256:") and old != OLD
    # Another Secret, another key, or another variable is another candidate...
    assert candidate_identity(OLD, key_refs_digest(NEW_REFS)) != old
    assert candidate_identity(OLD, key_refs_digest([(*OLD_REFS[0][:2], "other")])) != old
    # ...and the same references in any order (or repeated) are the same candidate.
    two = [*OLD_REFS, ("TIERWISE_TIER_OPUS_API_KEY", "opus-key", "k")]
    assert key_refs_digest(two) == key_refs_digest([*reversed(two), two[0]])
    assert candidate_identity(NEW, key_refs_digest(OLD_REFS)) != old


def test_point6_a_key_reference_change_alone_is_evaluated_before_it_is_live():
    from tierwise.controller.rollout_state import candidate_identity, key_refs_digest

    live = candidate_identity(OLD, key_refs_digest(OLD_REFS))
    candidate = candidate_identity(OLD, key_refs_digest(NEW_REFS))  # same config
    previous = {"phase": "Promoted", "decidedHash": live}
    step = next_step(
        situation(candidate_hash=candidate, promoted_hash=live, previous=previous), JOB
    )
    assert step.phase == "Evaluating" and step.start_job and not step.promote


def test_point6_break_glass_may_name_the_config_hash_of_a_keyed_candidate():
    from tierwise.controller.rollout_state import candidate_identity, key_refs_digest

    candidate = candidate_identity(NEW, key_refs_digest(NEW_REFS))
    s = situation(candidate_hash=candidate, config_hash=NEW, promote_hash=NEW[7:19])
    assert next_step(s, JOB).reason == "BreakGlass"


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
