"""Labelled-dataset answers: lookup, determinism, accuracy and calibration."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import pytest
from emulator_helpers import API_KEY, HAIKU, OPUS, SONNET, user

from tierwise.emulator import Dataset, DatasetItem, EmulatorConfig, EmulatorThread
from tierwise.emulator.tasks import Behaviour, answer_item

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]

LABELS = ["billing", "bug", "feature", "account", "other"]


def synthetic(n: int) -> Dataset:
    return Dataset(
        [
            DatasetItem(f"Support email number {i}: something about topic {i % 7}.", LABELS[i % 5])
            for i in range(n)
        ]
    )


def test_find_by_exact_text_line_and_substring() -> None:
    dataset = Dataset(
        [
            DatasetItem("my invoice is wrong", "billing"),
            DatasetItem("the app crashes on start", "bug"),
        ]
    )
    assert dataset.find("  my invoice is wrong ").label == "billing"
    assert dataset.find("Classify:\nthe app crashes on start\nAnswer JSON.").label == "bug"
    assert dataset.find("Email: <<my invoice is wrong>> please").label == "billing"
    assert dataset.find("nothing relevant") is None
    assert dataset.labels == ("billing", "bug")


def test_longest_contained_input_wins() -> None:
    dataset = Dataset(
        [DatasetItem("refund", "billing"), DatasetItem("refund denied twice", "account")]
    )
    assert dataset.find("Text: refund denied twice, help").label == "account"


def test_jsonl_with_declared_labels(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    lines = [
        {"labels": ["a", "b", "c"]},
        {"input": "one", "label": "a"},
        {"input": "two", "label": "b"},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    dataset = Dataset.from_jsonl(path)
    assert dataset.labels == ("a", "b", "c") and len(dataset) == 2


def test_item_labels_must_be_declared() -> None:
    with pytest.raises(ValueError, match="not in the label list"):
        Dataset([DatasetItem("x", "z")], labels=["a", "b"])


def labelled(item: DatasetItem, model: str, accuracy: float, seed: int, **behaviour: float):
    return answer_item(
        item, LABELS, model=model, seed=seed, behaviour=Behaviour(accuracy, **behaviour)
    )


def test_answers_are_deterministic_per_seed_model_and_input() -> None:
    item = DatasetItem("some input", "billing")
    first = labelled(item, HAIKU, 0.8, 1)
    assert labelled(item, HAIKU, 0.8, 1) == first
    dataset = synthetic(200)
    by_seed = [[labelled(i, HAIKU, 0.8, s) for i in dataset.items] for s in (1, 2)]
    assert by_seed[0] != by_seed[1]


@pytest.mark.parametrize(("model", "accuracy"), [(HAIKU, 0.82), (SONNET, 0.93), (OPUS, 0.97)])
def test_accuracy_and_calibration_over_500_items(model: str, accuracy: float) -> None:
    dataset = synthetic(500)
    answers = [
        labelled(item, model, accuracy, 42, difficulty_correlation=0.6, confident_wrong_rate=0.3)
        for item in dataset.items
    ]
    correct = [a for a in answers if a.correct]
    wrong = [a for a in answers if not a.correct]
    assert abs(len(correct) / 500 - accuracy) < 0.05  # correlation keeps the marginal accuracy
    for answer, item in zip(answers, dataset.items, strict=True):
        assert json.loads(answer.text)["label"] == answer.value
        assert (answer.value == item.label) is answer.correct
    assert all(0.75 <= a.confidence <= 0.99 for a in correct)
    if len(wrong) >= 40:  # expected share caught: 0.7 * 0.9 + 0.3 * 0.21 = 0.69
        caught = sum(a.confidence < 0.8 for a in wrong) / len(wrong)
        assert 0.45 < caught < 0.9  # a 0.8 threshold escalates many wrong answers, not all


def test_sdk_gets_json_labels_with_the_configured_accuracy() -> None:
    dataset = synthetic(300)
    config = EmulatorConfig(zero_latency=True, dataset=dataset, seed=1)
    with EmulatorThread(config) as thread:
        client = anthropic.Anthropic(base_url=thread.base_url, api_key=API_KEY, max_retries=0)
        hits = 0
        for item in dataset.items:
            prompt = f"Classify this support email into one of {LABELS}.\n\n{item.input}\n\nAnswer in JSON."
            message = client.messages.create(model=HAIKU, max_tokens=50, messages=user(prompt))
            answer = json.loads(message.content[0].text)
            assert set(answer) == {"label", "confidence"}  # the default task: jsonField label
            assert answer["label"] in LABELS
            hits += answer["label"] == item.label
        assert abs(hits / 300 - 0.82) < 0.07
        again = client.messages.create(
            model=HAIKU, max_tokens=50, messages=user(dataset.items[0].input)
        )
        first = client.messages.create(
            model=HAIKU, max_tokens=50, messages=user(dataset.items[0].input)
        )
        assert again.content[0].text == first.content[0].text
        truncated = client.messages.create(
            model=HAIKU, max_tokens=3, messages=user(dataset.items[0].input)
        )
        assert truncated.stop_reason == "max_tokens"


def test_dataset_can_be_loaded_over_the_admin_api(
    emu: EmulatorThread, client: anthropic.Anthropic
) -> None:
    from emulator_helpers import raw_request

    items = [{"input": "please reset my password", "label": "account"}]
    status, _h, raw = raw_request(
        emu.base_url, "/_emulator/dataset", {"items": items, "labels": LABELS}
    )
    assert status == 200 and json.loads(raw) == {"items": 1, "labels": LABELS}
    message = client.messages.create(
        model=OPUS, max_tokens=50, messages=user("please reset my password")
    )
    assert json.loads(message.content[0].text)["label"] in LABELS
    raw_request(emu.base_url, "/_emulator/dataset", {"clear": True})
    message = client.messages.create(
        model=OPUS, max_tokens=50, messages=user("please reset my password")
    )
    assert "You asked" in message.content[0].text
    assert "no dataset item" not in message.content[0].text  # no dataset loaded any more


def test_effort_and_thinking_move_accuracy_monotonically() -> None:
    """Lower effort costs quality, thinking adds some; the same draws decide every setting."""
    dataset = synthetic(400)
    model = "claude-opus-4-6"
    with EmulatorThread(EmulatorConfig(zero_latency=True, dataset=dataset)) as emu:
        client = anthropic.Anthropic(base_url=emu.base_url, api_key=API_KEY, max_retries=0)

        def right(**extra: object) -> set[int]:
            correct = set()
            for i, item in enumerate(dataset.items[:150]):
                message = client.messages.create(
                    model=model, max_tokens=6000, messages=user(item.input), **extra
                )
                text = next(b.text for b in message.content if b.type == "text")
                if json.loads(text)["label"] == item.label:
                    correct.add(i)
            return correct

        low = right(output_config={"effort": "low"})
        high = right()
        thinking = right(thinking={"type": "adaptive"})
    assert low <= high <= thinking  # only ever wrong -> right as settings go up
    assert len(low) < len(thinking)
