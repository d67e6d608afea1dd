"""Graders on answers shaped like the Messages API's."""

from __future__ import annotations

import asyncio

from tierwise.evals.dataset import parse_dataset
from tierwise.evals.graders import GraderSpec, grade, grade_deterministic, judge_request


def message(text: str) -> dict:
    return {"content": [{"type": "text", "text": text}], "stop_reason": "end_turn"}


ITEM = parse_dataset(
    '{"input": "Refund please", "label": "billing", "expected": "OK", "accept": ["billing", "other"]}'
).items[0]


def test_json_field_equals_label():
    spec = GraderSpec("jsonField", "label")
    assert grade_deterministic(spec, ITEM, message('{"label": "billing"}')).correct is True
    wrong = grade_deterministic(spec, ITEM, message('```json\n{"label": "bug"}\n```'))
    assert wrong.correct is False and wrong.predicted == "bug" and wrong.expected == "billing"
    junk = grade_deterministic(spec, ITEM, message("billing, I think"))
    assert junk.correct is False and junk.predicted == "(no answer)"
    nested = GraderSpec("jsonField", "result.label")
    assert grade_deterministic(nested, ITEM, message('{"result": {"label": "billing"}}')).correct


def test_allowed_set_regex_exact():
    assert grade_deterministic(
        GraderSpec("allowedSet"), ITEM, message('{"label": "other"}')
    ).correct
    assert not grade_deterministic(
        GraderSpec("allowedSet"), ITEM, message('{"label": "bug"}')
    ).correct
    assert grade_deterministic(
        GraderSpec("regex", pattern=r"\brefund"), ITEM, message("a refund")
    ).correct
    assert not grade_deterministic(GraderSpec("regex", pattern="^x"), ITEM, message("a")).correct
    assert grade_deterministic(GraderSpec("exact"), ITEM, message("  OK\n")).correct
    assert not grade_deterministic(GraderSpec("exact"), ITEM, message("ok")).correct


def test_items_without_a_reference_are_not_gradable():
    bare = parse_dataset('{"input": "x"}').items[0]
    for kind in ("jsonField", "allowedSet", "regex", "exact"):
        assert grade_deterministic(GraderSpec(kind), bare, message("{}")).correct is None


def test_judge_verdicts():
    spec = GraderSpec("judge", tier="opus", criteria="Polite and correct.")
    request = judge_request(spec, ITEM, "Refund sent")
    content = request["messages"][0]["content"]
    assert "Polite and correct." in content and "Refund please" in content and "OK" in content

    def judge_saying(text):
        async def judge(body):
            assert body["system"].startswith("You grade")
            return message(text)

        return judge

    run = lambda text: asyncio.run(grade(spec, ITEM, message("x"), judge_saying(text)))  # noqa: E731
    assert run('{"pass": true, "reason": "fine"}').correct is True
    assert run('{"pass": false}').correct is False
    assert run("I think it passes").correct is None
