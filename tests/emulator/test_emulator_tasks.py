"""Issue 17 point 9: the emulator answers any task, and is no kinder than real models.

Answers follow the item's grader (field path, allowed set, regex, exact text, judge), are
graded here by the eval's own graders over the official SDK, and ``messages`` items are
recognised. Unrecognised requests are said. Errors are correlated across models and some
are confidently wrong, so a cheap-first cascade does not beat the strong tier alone.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import anthropic
import pytest
from emulator_helpers import API_KEY, user

from tierwise.emulator import (
    DEFAULT_PROFILES,
    Behaviour,
    Dataset,
    DatasetItem,
    EmulatorConfig,
    EmulatorThread,
    Task,
    answer_item,
)
from tierwise.emulator.engine import effective_accuracy
from tierwise.emulator.tasks import example_matching
from tierwise.evals.dataset import parse_dataset
from tierwise.evals.graders import GraderSpec, grade

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
HAIKU, SONNET = "claude-haiku-5-5", "claude-sonnet-5-5"
JUDGE_SYSTEM = "Reply with JSON only"


def records_for(grader: dict[str, Any], n: int = 120) -> list[dict[str, Any]]:
    """Items of one task, each with the reference its grader needs (and a label set)."""
    items: list[dict[str, Any]] = [{"grader": grader}]
    for i in range(n):
        record: dict[str, Any] = {"id": f"q{i}", "input": f"Question number {i} about {i * 7}"}
        kind = grader["type"]
        if kind == "jsonField":
            record["label"] = ["low", "high", "urgent"][i % 3]
        elif kind == "allowedSet":
            record["accept"] = ["refund", "credit"] if i % 2 else ["replace"]
            record["label"] = record["accept"][0]
        elif kind == "regex":
            record["pattern"] = rf"^ORD-{i:04d}-[A-Z]{{2}}$"
        elif kind == "exact":
            record["expected"] = f"Answer {i}: {'yes' if i % 2 else 'no'}"
        else:
            record["expected"] = f"The capital is city number {i}."
        items.append(record)
    return items


def eval_items(records: list[dict[str, Any]]) -> list[Any]:
    lines = [json.dumps(r) for r in records if "grader" not in r]
    return list(parse_dataset("\n".join(lines), "test").items)


async def graded_accuracy(
    base_url: str, grader: dict[str, Any], records: list[dict[str, Any]], model: str
) -> tuple[float, list[str]]:
    client = anthropic.AsyncAnthropic(base_url=base_url, api_key=API_KEY, max_retries=0)
    spec = GraderSpec.from_document(grader)

    async def judge(body: dict[str, Any]) -> Any:
        reply = await client.messages.create(**{**body, "model": SONNET})
        return reply.model_dump()

    right, texts = 0, []
    for item in eval_items(records):
        message = await client.messages.create(
            model=model, max_tokens=200, messages=user(f"Please answer.\n{item.input}")
        )
        verdict = await grade(spec, item, message.model_dump(), judge)
        assert verdict.correct is not None, verdict.note
        right += verdict.correct
        texts.append(message.content[0].text)
    return right / len(texts), texts


@pytest.mark.parametrize(
    "grader",
    [
        {"type": "jsonField", "field": "triage.priority", "confidenceField": "certainty"},
        {"type": "allowedSet", "field": "action"},
        {"type": "regex"},
        {"type": "exact"},
        {"type": "judge", "tier": "sonnet"},
    ],
    ids=lambda g: g["type"],
)
def test_point9_answers_follow_each_grader(grader: dict[str, Any]) -> None:
    records = records_for(grader)
    config = EmulatorConfig(zero_latency=True, dataset=Dataset.from_records(records), seed=3)
    with EmulatorThread(config) as emu:
        accuracy, texts = asyncio.run(graded_accuracy(emu.base_url, grader, records, SONNET))
        stats = emu.stats()["dataset"]
    expected = DEFAULT_PROFILES[SONNET].accuracy
    if grader["type"] == "judge":  # the judge errs too: it is right with its own accuracy
        expected = expected * expected + (1 - expected) * (1 - expected)
    assert abs(accuracy - expected) < 0.08, (accuracy, texts[:3])
    assert stats["unrecognised"] == 0 and stats["unanswerable"] == 0
    if grader["type"] == "jsonField":
        shape = json.loads(texts[0])
        assert set(shape) == {"triage", "certainty"} and set(shape["triage"]) == {"priority"}


def test_point9_messages_items_are_recognised() -> None:
    records = [
        {
            "messages": [
                {"role": "user", "content": "Hi, about my order."},
                {"role": "assistant", "content": "Sure."},
                {"role": "user", "content": f"Order {i} never arrived, what now?"},
            ],
            "label": "shipping",
        }
        for i in range(5)
    ] + [{"labels": ["shipping", "billing"]}]
    config = EmulatorConfig(zero_latency=True, dataset=Dataset.from_records(records))
    with EmulatorThread(config) as emu:
        client = anthropic.Anthropic(base_url=emu.base_url, api_key=API_KEY, max_retries=0)
        message = client.messages.create(
            model=HAIKU, max_tokens=100, messages=records[3]["messages"]
        )
        assert json.loads(message.content[0].text)["label"] in ("shipping", "billing")
        assert emu.stats()["dataset"] == {"recognised": 1, "unrecognised": 0, "unanswerable": 0}


def test_point9_an_unrecognised_request_is_said() -> None:
    dataset = Dataset([DatasetItem("my invoice is wrong", "billing")])
    with EmulatorThread(EmulatorConfig(zero_latency=True, dataset=dataset)) as emu:
        client = anthropic.Anthropic(base_url=emu.base_url, api_key=API_KEY, max_retries=0)
        text = client.messages.create(model=HAIKU, max_tokens=100, messages=user("hello?"))
        assert "no dataset item in this request" in text.content[0].text
        assert emu.stats()["dataset"]["unrecognised"] == 1
    from tierwise.evals.local import emulator_notes

    notes = emulator_notes({"recognised": 3, "unrecognised": 1, "unanswerable": 0})
    assert notes and "recognised no dataset item in 1/4 requests" in notes[0]


def test_point9_an_item_without_its_reference_is_not_silently_wrong() -> None:
    item = DatasetItem("q", task=Task(type="regex"))
    answer = answer_item(item, [], model=HAIKU, seed=0, behaviour=Behaviour(0.9))
    assert answer.problem == "no pattern on the item or the grader"
    assert "cannot answer this regex item" in answer.text


@pytest.mark.parametrize(
    "pattern", [r"^\d{3}-[A-Z]{2}$", r"(yes|no)\b", r"order \d+", r"\bP[0-4]\b", r"[^abc]x"]
)
def test_regex_examples_match(pattern: str) -> None:
    import re

    text = example_matching(pattern)
    assert text is not None and re.search(pattern, text)


def test_point9_cascade_does_not_beat_the_strong_tier_alone() -> None:
    """The example's items and cascade (Haiku at medium effort, escalation below 0.9)."""
    lines = (ROOT / "examples/support-triage/dataset.jsonl").read_text().splitlines()
    items = [DatasetItem(**json.loads(line)) for line in lines]
    labels = sorted({i.label for i in items if i.label})

    def behaviour(model: str, effort: str) -> Behaviour:
        profile = DEFAULT_PROFILES[model]
        return Behaviour(
            effective_accuracy(profile, effort, False),
            profile.difficulty_correlation,
            profile.confident_wrong_rate,
        )

    cheap = [answer_item(i, labels, model=HAIKU, seed=0, behaviour=behaviour(HAIKU, "medium"))
             for i in items]  # fmt: skip
    strong = [answer_item(i, labels, model=SONNET, seed=0, behaviour=behaviour(SONNET, "high"))
              for i in items]  # fmt: skip
    cascade = [s if c.confidence < 0.9 else c for c, s in zip(cheap, strong, strict=True)]
    n = len(items)
    quality = {name: sum(a.correct for a in run) / n for name, run in
               (("cheap", cheap), ("strong", strong), ("cascade", cascade))}  # fmt: skip
    assert quality["cascade"] <= quality["strong"], quality
    # Correlated difficulty: the strong model errs more often where the cheap one erred.
    strong_wrong = sum(not s.correct for s in strong) / n
    both = [s for c, s in zip(cheap, strong, strict=True) if not c.correct]
    assert sum(not s.correct for s in both) / len(both) > 2 * strong_wrong
    # Confidently wrong: some wrong answers clear any threshold below 0.95.
    confident_wrong = [c for c in cheap if not c.correct and c.confidence >= 0.9]
    assert len(confident_wrong) >= 5


def test_point9_behaviour_parameters_are_per_profile_and_checked(tmp_path: Path) -> None:
    from tierwise.emulator import load_profiles

    path = tmp_path / "profiles.yaml"
    path.write_text(
        "models:\n  claude-haiku-5-5:\n    difficulty_correlation: 0\n    confident_wrong_rate: 0\n"
    )
    profiles = load_profiles(path)
    assert profiles[HAIKU].difficulty_correlation == 0.0
    assert profiles[SONNET].confident_wrong_rate == 0.3  # others keep the defaults
    path.write_text("models:\n  claude-haiku-5-5:\n    confident_wrong_rate: 1.5\n")
    with pytest.raises(ValueError, match="confident_wrong_rate must be within"):
        load_profiles(path)


def test_point9_without_confident_mistakes_a_threshold_catches_more() -> None:
    """The knob does what it says: with rate 0 no wrong answer reaches 0.9 confidence."""
    items = [DatasetItem(f"item {i}", "a") for i in range(400)]
    labels = ["a", "b", "c"]
    for rate, expect_some in ((0.0, False), (0.3, True)):
        answers = [
            answer_item(i, labels, model=HAIKU, seed=1, behaviour=Behaviour(0.8, 0.6, rate))
            for i in items
        ]
        confident_wrong = [a for a in answers if not a.correct and a.confidence >= 0.9]
        assert bool(confident_wrong) is expect_some


def test_a_bad_dataset_over_the_admin_api_is_a_400_and_keeps_the_loaded_one() -> None:
    from emulator_helpers import raw_request

    dataset = Dataset([DatasetItem("my invoice is wrong", "billing")])
    with EmulatorThread(EmulatorConfig(zero_latency=True, dataset=dataset)) as emu:
        for items in (["not an object"], [{"input": "x"}], [{"grader": {"type": "nope"}}]):
            status, _h, raw = raw_request(emu.base_url, "/_emulator/dataset", {"items": items})
            assert status == 400, raw
            assert b"items: " in raw
        assert emu.call(lambda: emu.emulator.dataset) is not None
        client = anthropic.Anthropic(base_url=emu.base_url, api_key=API_KEY, max_retries=0)
        text = (
            client.messages.create(model=HAIKU, max_tokens=50, messages=user("my invoice is wrong"))
            .content[0]
            .text
        )
        assert set(json.loads(text)) == {"label", "confidence"}  # still recognised
