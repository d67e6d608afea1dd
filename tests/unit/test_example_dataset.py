"""The support-triage example's dataset is evidence: every email is a different email."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "examples" / "support-triage" / "dataset.jsonl"


def normalised(text: str) -> str:
    """Case, whitespace, numbers and a leading "Email #NNN:" style prefix removed."""
    text = re.sub(r"^\s*email\s*#?\s*\d+\s*:\s*", "", text.lower())
    return " ".join(re.sub(r"\d+", "#", text).split())


def test_point4_example_dataset_has_at_least_200_distinct_emails() -> None:
    items = [json.loads(line) for line in DATASET.read_text().splitlines() if line.strip()]
    texts = Counter(normalised(item["input"]) for item in items)
    repeated = {text: n for text, n in texts.items() if n > 1}
    assert not repeated, f"{len(repeated)} texts repeat, e.g. {next(iter(repeated))!r}"
    assert len(texts) >= 200
    labels = Counter(item["label"] for item in items)
    assert set(labels) == {"billing", "bug", "account", "feature-request", "other"}
    assert min(labels.values()) >= 40  # every label has real weight in the gate


def test_point4_dataset_generator_reproduces_the_committed_files() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "support_dataset", ROOT / "hack/support_dataset.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = [json.dumps(item) for item in module.build()]
    assert DATASET.read_text() == "\n".join(lines) + "\n"
