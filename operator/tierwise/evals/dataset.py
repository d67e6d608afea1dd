"""Eval datasets: JSONL, one item per line, parsed with line-numbered errors.

An item is one request and what a correct answer is (docs/evaluation.md):

    {"input": "Email #7: I was charged twice", "label": "billing"}
    {"id": "refund-1", "messages": [{"role": "user", "content": "..."}],
     "system": "...", "expected": "...", "accept": ["a", "b"], "pattern": "..."}

The request is either ``input`` (text, filled into the dataset's template) or ``messages``
(with an optional ``system``). The reference is any of ``label`` (jsonField grader),
``accept`` (allowedSet), ``pattern`` (regex) and ``expected`` (exact, and the judge's
reference answer). A line ``{"labels": [...]}`` declares the label set, blank lines and lines
starting with ``#`` are skipped.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEMPLATE_PLACEHOLDER = "{{input}}"
DEFAULT_MAX_TOKENS = 1024
SAMPLE_SEED = "tierwise-eval"
# A token holding a digit (a number, an order id, a uuid, "#007"): normalised away, so
# "Email #7: I was charged twice" and "email #123: i was  charged twice" are one item.
_ID_TOKEN = re.compile(r"[#\w-]*\d[\w-]*")
_ITEM_KEYS = frozenset(
    {"id", "input", "messages", "system", "label", "expected", "accept", "pattern", "maxTokens"}
)


class DatasetError(ValueError):
    """A dataset that cannot be used; ``line`` is 1-based, ``None`` for the whole file."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        where = f"{source} line {line}" if line is not None else source
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Item:
    id: str
    line: int
    input: str | None = None
    messages: tuple[Mapping[str, Any], ...] | None = None
    system: Any = None
    label: str | None = None
    expected: str | None = None
    accept: tuple[str, ...] | None = None
    pattern: str | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS

    def request(self, model: str, template: str | None = None) -> dict[str, Any]:
        """The Messages API request body this item sends (``model``: the route alias)."""
        if self.messages is not None:
            messages = [dict(m) for m in self.messages]
        else:
            assert self.input is not None
            text = template.replace(TEMPLATE_PLACEHOLDER, self.input) if template else self.input
            messages = [{"role": "user", "content": text}]
        body: dict[str, Any] = {"model": model, "max_tokens": self.max_tokens, "messages": messages}
        if self.system is not None:
            body["system"] = self.system
        return body

    def question(self) -> str:
        """The request as text, for a judge."""
        if self.input is not None:
            return self.input
        parts = []
        for message in self.messages or ():
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(b.get("text", "") for b in content if isinstance(b, Mapping))
            parts.append(f"{message.get('role')}: {content}")
        return "\n".join(parts)


def duplicate_key(item: Item) -> str:
    """What makes two items the same evidence: the request after normalising case,
    whitespace and numbers/ids, and the reference answer (so "2+2" and "3+5" with different
    expected answers stay two items)."""
    text = item.question()
    if item.system is not None:
        text = f"{json.dumps(item.system, ensure_ascii=False)}\n{text}"
    text = " ".join(_ID_TOKEN.sub("0", text.casefold()).split())
    reference = [item.label, item.expected, list(item.accept or ()), item.pattern]
    return text + "\x00" + json.dumps(reference)


@dataclass(frozen=True)
class Dataset:
    source: str
    items: tuple[Item, ...]
    labels: tuple[str, ...] = field(default=())

    def sample(self, size: int | None) -> Dataset:
        """A deterministic sample: the same ``size`` items every time for the same file."""
        if size is None or size >= len(self.items):
            return self
        ranked = sorted(
            self.items,
            key=lambda item: hashlib.sha256(f"{SAMPLE_SEED}:{item.id}".encode()).hexdigest(),
        )
        chosen = {item.id for item in ranked[:size]}
        return Dataset(self.source, tuple(i for i in self.items if i.id in chosen), self.labels)

    def distinct(self) -> tuple[Dataset, tuple[tuple[Item, Item], ...]]:
        """(the first item of each group of duplicates, ``(duplicate, first)`` pairs).

        Repeating an item adds no evidence: an interval over 40 items repeated five times is
        the interval of 40 items, not of 200.
        """
        first: dict[str, Item] = {}
        kept: list[Item] = []
        repeats: list[tuple[Item, Item]] = []
        for item in self.items:
            key = duplicate_key(item)
            if key in first:
                repeats.append((item, first[key]))
            else:
                first[key] = item
                kept.append(item)
        return Dataset(self.source, tuple(kept), self.labels), tuple(repeats)

    def split(self, held_out: float, seed: str = "split") -> tuple[Dataset, Dataset]:
        """(tuning, held-out) by a hash of each item's id and ``seed``, so the split is
        stable; another ``seed`` draws a fresh one."""
        tune, hold = [], []
        for item in self.items:
            digest = hashlib.sha256(f"{SAMPLE_SEED}:{seed}:{item.id}".encode()).digest()
            (hold if digest[0] / 256 < held_out else tune).append(item)
        return (
            Dataset(self.source, tuple(tune), self.labels),
            Dataset(self.source, tuple(hold), self.labels),
        )


def load_dataset(path: str | Path) -> Dataset:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(str(path), None, f"cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(str(path), None, f"not UTF-8 text: {exc}") from exc
    return parse_dataset(text, str(path))


def parse_dataset(text: str, source: str = "dataset") -> Dataset:
    """Parse JSONL; the first bad line raises ``DatasetError`` naming it."""
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    items: list[Item] = []
    labels: list[str] = []
    ids: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                source, number, f"not valid JSON ({exc.msg} at column {exc.colno})"
            ) from exc
        if not isinstance(value, dict):
            raise DatasetError(source, number, "an item must be a JSON object")
        if set(value) == {"labels"}:
            labels.extend(_strings(value["labels"], source, number, "labels"))
            continue
        item = _item(value, source, number)
        if item.id in ids:
            raise DatasetError(
                source, number, f"duplicate id {item.id!r} (first on line {ids[item.id]})"
            )
        ids[item.id] = number
        items.append(item)
    if not items:
        raise DatasetError(source, None, "no items")
    if not labels:
        labels = sorted({i.label for i in items if i.label is not None})
    return Dataset(source, tuple(items), tuple(labels))


def _item(value: Mapping[str, Any], source: str, number: int) -> Item:
    unknown = sorted(set(value) - _ITEM_KEYS)
    if unknown:
        raise DatasetError(
            source,
            number,
            f"unknown field {unknown[0]!r} (known: {', '.join(sorted(_ITEM_KEYS))})",
        )
    has_input, has_messages = "input" in value, "messages" in value
    if has_input == has_messages:
        raise DatasetError(source, number, "an item needs exactly one of input or messages")
    text = _opt_string(value, "input", source, number)
    if text is not None and not text.strip():
        raise DatasetError(source, number, "input must not be empty")
    messages = None
    if has_messages:
        raw = value["messages"]
        if not isinstance(raw, list) or not raw or not all(isinstance(m, dict) for m in raw):
            raise DatasetError(source, number, "messages must be a non-empty list of objects")
        for index, message in enumerate(raw):
            if message.get("role") not in ("user", "assistant") or "content" not in message:
                raise DatasetError(
                    source,
                    number,
                    f"messages[{index}] needs role user or assistant, and content",
                )
        messages = tuple(raw)
    max_tokens = value.get("maxTokens", DEFAULT_MAX_TOKENS)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise DatasetError(source, number, "maxTokens must be a positive integer")
    accept = value.get("accept")
    item_id = value.get("id", f"line-{number}")
    if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
        raise DatasetError(source, number, "id must be a string or an integer")
    return Item(
        id=str(item_id),
        line=number,
        input=text,
        messages=messages,
        system=value.get("system"),
        label=_opt_string(value, "label", source, number),
        expected=_opt_string(value, "expected", source, number),
        accept=tuple(_strings(accept, source, number, "accept")) if accept is not None else None,
        pattern=_opt_string(value, "pattern", source, number),
        max_tokens=max_tokens,
    )


def _opt_string(value: Mapping[str, Any], key: str, source: str, number: int) -> str | None:
    found = value.get(key)
    if found is not None and not isinstance(found, str):
        raise DatasetError(source, number, f"{key} must be a string")
    return found


def _strings(value: Any, source: str, number: int, key: str) -> Sequence[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DatasetError(source, number, f"{key} must be a list of strings")
    return value
