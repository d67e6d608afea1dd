"""Dataset parsing: the item format, line-numbered errors, sampling and splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierwise.evals.dataset import DatasetError, load_dataset, parse_dataset

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_dataset_loads():
    dataset = load_dataset(ROOT / "examples/support-triage/dataset.jsonl")
    assert len(dataset.items) == 400
    assert set(dataset.labels) == {"billing", "bug", "account", "feature-request", "other"}


def test_item_forms_and_requests():
    text = "\n".join(
        [
            '{"labels": ["a", "b"]}',
            "# a comment",
            "",
            '{"input": "hello", "label": "a"}',
            '{"id": "m1", "messages": [{"role": "user", "content": "hi"}], "system": "be brief",'
            ' "expected": "hi!", "maxTokens": 50}',
        ]
    )
    dataset = parse_dataset(text)
    first, second = dataset.items
    assert dataset.labels == ("a", "b")
    assert first.id == "line-4" and first.line == 4
    assert first.request("tierwise/x", "Classify: {{input}}")["messages"] == [
        {"role": "user", "content": "Classify: hello"}
    ]
    body = second.request("tierwise/x")
    assert body["system"] == "be brief" and body["max_tokens"] == 50 and second.id == "m1"


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ('{"input": "a", "label": "x"}\n{"input": "b", "label": ', 2, "not valid JSON"),
        ('["a"]', 1, "must be a JSON object"),
        ('{"input": "a", "messages": []}', 1, "exactly one of input or messages"),
        ('{"label": "x"}', 1, "exactly one of input or messages"),
        ('{"input": "a", "lable": "x"}', 1, "unknown field 'lable'"),
        ('{"input": "a", "label": 3}', 1, "label must be a string"),
        ('{"messages": [{"role": "bot", "content": "x"}]}', 1, "role user or assistant"),
        ('{"input": "a", "maxTokens": 0}', 1, "maxTokens must be a positive integer"),
        ('{"id": "x", "input": "a"}\n{"id": "x", "input": "b"}', 2, "duplicate id 'x'"),
    ],
)
def test_bad_lines_are_named(text, line, says):
    with pytest.raises(DatasetError) as error:
        parse_dataset(text, "data.jsonl")
    assert error.value.line == line
    assert f"data.jsonl line {line}: " in str(error.value) and says in str(error.value)


def test_empty_and_unreadable_files(tmp_path):
    with pytest.raises(DatasetError, match="no items"):
        parse_dataset("\n# nothing\n", "empty.jsonl")
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(tmp_path / "missing.jsonl")
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(DatasetError, match="not UTF-8"):
        load_dataset(binary)


def test_sample_is_deterministic_and_split_is_disjoint():
    dataset = load_dataset(ROOT / "examples/support-triage/dataset.jsonl")
    sample = dataset.sample(50)
    assert len(sample.items) == 50 and sample == dataset.sample(50)
    assert dataset.sample(500) is dataset
    tune, held = dataset.split(0.5)
    assert {i.id for i in tune.items}.isdisjoint(i.id for i in held.items)
    assert len(tune.items) + len(held.items) == 400 and 120 < len(held.items) < 280


def test_a_byte_order_mark_is_not_an_error():
    dataset = parse_dataset('\ufeff{"input": "a", "label": "x"}\n')
    assert dataset.items[0].label == "x"
