"""What the emulated models answer (pure functions, deterministic).

Two behaviours:

* **Datasets.** When the last user message contains a dataset item's text (an ``input``,
  or the last user message of a ``messages`` item), the model answers it in the shape of the
  item's task (``tierwise.emulator.tasks``: the route's grader), right with the profile's
  accuracy and correlated difficulty, some wrong answers confidently wrong. A judge request
  about an item gets a pass/fail verdict. Every draw comes from a hash of
  (seed, model, item): the same question gets the same answer.
* **Everything else** gets a short echo of the question (noting, when a dataset is loaded,
  that no item was recognised), or filler of a requested length when the message carries a
  marker: ``[[emulator:tokens=N]]`` (exactly N output tokens), ``[[emulator:long]]``
  (``LONG_ANSWER_TOKENS``) or ``[[emulator:refusal]]``.

Both respect ``max_tokens`` (truncated, ``stop_reason: "max_tokens"``) and
``stop_sequences`` (cut, ``stop_reason: "stop_sequence"``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierwise.emulator.tasks import DEFAULT_TASK, DatasetItem, Task
from tierwise.emulator.tokens import CHARS_PER_TOKEN, canonical_json, text_tokens

LONG_ANSWER_TOKENS = 8_192
ECHO_WORDS = 12
REFUSAL_TEXT = "I can't help with that request."
_MARKER = re.compile(r"\[\[emulator:(tokens|long|refusal)(?:=(\d+))?\]\]")
_FILLER = "The emulated model keeps writing deterministic filler text for this answer. "
_MEMO_LIMIT = 4_096


class Dataset:
    """Labelled items, found by their input inside a prompt."""

    def __init__(self, items: Iterable[DatasetItem], labels: Sequence[str] | None = None) -> None:
        self.items: tuple[DatasetItem, ...] = tuple(items)
        if not self.items:
            raise ValueError("a dataset needs at least one item")
        found = list(dict.fromkeys(item.label for item in self.items if item.label is not None))
        self.labels: tuple[str, ...] = tuple(labels) if labels else tuple(found)
        missing = set(found) - set(self.labels)
        if missing:
            raise ValueError(f"items use labels not in the label list: {sorted(missing)}")
        self._by_input = {item.input.strip(): item for item in self.items}
        # Longest first, so an input that contains another one wins the scan.
        self._scan_order = sorted(self._by_input.items(), key=lambda kv: -len(kv[0]))
        self._memo: dict[str, DatasetItem | None] = {}

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def from_records(
        cls, records: Iterable[Mapping[str, Any]], labels: Sequence[str] | None = None
    ) -> Dataset:
        """Items from dataset records (``tierwise eval``'s JSONL format).

        An item has ``input`` (text) or ``messages`` (its last user message is what is looked
        for in a prompt) and any of ``label``, ``expected``, ``accept``, ``pattern``. A record
        with only ``labels`` lists the labels; one with only ``grader`` (a grader document,
        optionally with ``confidenceField``) sets the task of the items after it.
        """
        items: list[DatasetItem] = []
        declared = list(labels or [])
        task = DEFAULT_TASK
        for number, record in enumerate(records, start=1):
            if not isinstance(record, Mapping):
                raise ValueError(f"record {number}: must be a JSON object")
            if set(record) == {"labels"}:
                declared.extend(str(label) for label in record["labels"])
                continue
            if set(record) == {"grader"} and isinstance(record["grader"], Mapping):
                task = Task.from_document(record["grader"])
                continue
            items.append(_item(record, number, task))
        return cls(items, list(dict.fromkeys(declared)) or None)

    @classmethod
    def from_jsonl(cls, path: str | Path, labels: Sequence[str] | None = None) -> Dataset:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        return cls.from_records(records, labels)

    def find(self, text: str) -> DatasetItem | None:
        """The item whose input the text contains (the longest one if several do)."""
        key = text.strip()
        item = self._by_input.get(key)
        if item is not None:
            return item
        if key in self._memo:
            return self._memo[key]
        item = self._find_by_line(key) or self._find_by_scan(key)
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = item
        return item

    def _find_by_line(self, text: str) -> DatasetItem | None:
        for line in text.splitlines():
            item = self._by_input.get(line.strip())
            if item is not None:
                return item
        return None

    def _find_by_scan(self, text: str) -> DatasetItem | None:
        for stripped, item in self._scan_order:
            if stripped and stripped in text:
                return item
        return None


def _item(record: Mapping[str, Any], number: int, task: Task) -> DatasetItem:
    text = record.get("input")
    if text is None and isinstance(record.get("messages"), list):
        text = last_user_text(record["messages"])
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"record {number}: needs a string 'input' or 'messages' with user text")
    references = {k: record.get(k) for k in ("label", "expected", "pattern")}
    for key, value in references.items():
        if value is not None and not isinstance(value, str):
            references[key] = str(value) if key == "label" else None
    accept = record.get("accept")
    if not any(references.values()) and accept is None:
        raise ValueError(
            f"record {number}: needs a reference: 'label', 'expected', 'accept' or 'pattern'"
        )
    return DatasetItem(
        text,
        label=references["label"],
        expected=references["expected"],
        accept=tuple(str(a) for a in accept) if isinstance(accept, list) else None,
        pattern=references["pattern"],
        task=task,
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """A model turn: content blocks, why it stopped and the output tokens it cost.

    ``output_tokens`` is what is billed, thinking included (``thinking_tokens`` of it),
    even when the thinking block shows only a summary or nothing.
    """

    content: tuple[dict[str, Any], ...]
    stop_reason: str
    stop_sequence: str | None
    output_tokens: int
    thinking_tokens: int = 0
    stop_details: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        return "".join(b["text"] for b in self.content if b["type"] == "text")


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last user message (text blocks joined by newlines)."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return "\n".join(str(b.get("text", "")) for b in content or () if b.get("type") == "text")
    return ""


UNRECOGNISED_NOTE = "[emulator: no dataset item in this request]"


def natural_text(
    model: str, question: str, *, unrecognised: bool = False
) -> tuple[str, str | None]:
    """The unconstrained answer text and, for a refusal marker, its stop reason.

    ``unrecognised``: a dataset is loaded but no item is in the question; the echo says so."""
    if "[[emulator:" in question:
        match = _MARKER.search(question)
        if match is not None:
            kind, number = match.groups()
            if kind == "refusal":
                return REFUSAL_TEXT, "refusal"
            tokens = LONG_ANSWER_TOKENS if kind == "long" else int(number or 0)
            return filler(tokens), None
    words = question.split()
    echo = " ".join(words[:ECHO_WORDS]) + (" ..." if len(words) > ECHO_WORDS else "")
    note = f"{UNRECOGNISED_NOTE} " if unrecognised else ""
    return f"{note}[{model}] You asked: {echo or '(no text)'}", None


def filler(tokens: int) -> str:
    """Deterministic text of exactly ``tokens`` tokens under the 4-characters rule."""
    chars = tokens * CHARS_PER_TOKEN
    repeats = chars // len(_FILLER) + 1
    return (_FILLER * repeats)[:chars]


def finish(
    text: str,
    *,
    max_tokens: int,
    stop_sequences: Sequence[str] = (),
    stop_reason: str | None = None,
    tool_use: Mapping[str, Any] | None = None,
    limit_reason: str = "max_tokens",
) -> Answer:
    """Apply stop sequences and the ``max_tokens`` cap to an answer text.

    An explicit ``stop_reason`` (scripted answers, refusals) is kept as given.
    ``limit_reason`` is the stop reason of a cut answer: ``max_tokens``, or
    ``model_context_window_exceeded`` when the context window left less room than that.
    """
    stop_sequence = None
    if stop_reason is None and stop_sequences:
        text, stop_sequence = _cut_at_stop_sequence(text, stop_sequences)
    tokens = text_tokens(text)
    if stop_reason is None:
        if tokens > max_tokens:
            text, tokens, stop_reason = (
                text[: max_tokens * CHARS_PER_TOKEN],
                max_tokens,
                limit_reason,
            )
        elif stop_sequence is not None:
            stop_reason = "stop_sequence"
        elif tool_use is not None:
            stop_reason = "tool_use"
        else:
            stop_reason = "end_turn"
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text or not tool_use else []
    if tool_use is not None and stop_reason != limit_reason:
        content.append(dict(tool_use))
        tokens += text_tokens(canonical_json(tool_use))
    if stop_reason != "stop_sequence":
        stop_sequence = None
    return Answer(tuple(content), stop_reason, stop_sequence, max(tokens, 1))


def _cut_at_stop_sequence(text: str, stop_sequences: Sequence[str]) -> tuple[str, str | None]:
    best: tuple[int, str] | None = None
    for sequence in stop_sequences:
        position = text.find(sequence)
        if position >= 0 and (best is None or position < best[0]):
            best = (position, sequence)
    if best is None:
        return text, None
    return text[: best[0]], best[1]
