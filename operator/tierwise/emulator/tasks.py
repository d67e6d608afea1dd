"""Dataset items and how an emulated model answers them (pure functions, deterministic).

A dataset item carries a request's text and its reference (``label``, ``expected``,
``accept``, ``pattern``) plus the ``Task`` it belongs to: the grader the route is judged by
(``jsonField``, ``allowedSet``, ``regex``, ``exact`` or ``judge``), so the model answers in
the shape that grader reads — the graded field at its dot path (with a confidence beside
it), a text that matches the pattern, the exact reference text, or an answer a judge model
can grade. A judge request (``Answer to grade:`` after ``Request:``) gets a
``{"pass": ..., "reason": ...}`` verdict.

Whether a model answers an item right is a correlated draw (a Gaussian copula): an item's
difficulty ``z_item`` is shared by every model, each model adds its own ``z_model``, and the
model is right when ``sqrt(rho) * z_item + sqrt(1 - rho) * z_model`` stays under the
quantile of its accuracy. The marginal accuracy is the profile's; with ``rho`` > 0 the items
the cheap model gets wrong are more often wrong for the strong one too, as real models'
errors are (docs/emulator.md gives the sources). A wrong answer is confidently wrong with
the profile's ``confident_wrong_rate``: its confidence is drawn from the right answers'
range, so no confidence threshold catches it. Every draw comes from a hash of (seed, model,
item): the same question gets the same answer.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from re import _parser as sre_parse  # type: ignore[attr-defined]
from statistics import NormalDist
from typing import Any

TASK_TYPES = ("jsonField", "allowedSet", "regex", "exact", "judge")
JUDGE_REQUEST = "Request:\n"
JUDGE_ANSWER = "\n\nAnswer to grade:\n"
JUDGE_REFERENCE = "\n\nReference answer:\n"
UNSURE_TEXTS = ("I am not sure.", "unknown", "-", "n/a")
_NORMAL = NormalDist()
_MAX_REPEAT = 3  # a generated regex example repeats an open-ended part at most this often


@dataclass(frozen=True, slots=True)
class Task:
    """How a dataset's answers are graded (mirrors the route's grader), and where the
    answer's confidence goes (``None``: no confidence field)."""

    type: str = "jsonField"
    field: str = "label"
    values: tuple[str, ...] = ()
    pattern: str | None = None
    confidence_field: str | None = "confidence"
    labels: tuple[str, ...] = ()  # the dataset's label set: where wrong labels come from

    def __post_init__(self) -> None:
        if self.type not in TASK_TYPES:
            raise ValueError(f"grader type must be one of {list(TASK_TYPES)}, got {self.type!r}")

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], labels: Sequence[str] = ()) -> Task:
        """A task from a grader document (``spec.evaluation...grader``'s fields)."""
        confidence = doc.get("confidenceField", "confidence")
        return cls(
            labels=tuple(labels),
            type=str(doc.get("type") or "jsonField"),
            field=str(doc.get("field") or "label"),
            values=tuple(str(v) for v in doc.get("values") or ()),
            pattern=doc.get("pattern"),
            confidence_field=str(confidence) if confidence else None,
        )


DEFAULT_TASK = Task()


@dataclass(frozen=True, slots=True)
class DatasetItem:
    """One request the emulator recognises (``input``: the text found in a prompt)."""

    input: str
    label: str | None = None
    expected: str | None = None
    accept: tuple[str, ...] | None = None
    pattern: str | None = None
    task: Task = DEFAULT_TASK


@dataclass(frozen=True, slots=True)
class Calibration:
    """Confidence ranges: right answers ~ U(right), wrong ones ~ U(wrong) (unless confidently
    wrong, which draw from ``right``)."""

    right: tuple[float, float] = (0.75, 0.99)
    wrong: tuple[float, float] = (0.35, 0.85)


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What decides a model's answers to dataset items (from its profile and request)."""

    accuracy: float
    difficulty_correlation: float = 0.0
    confident_wrong_rate: float = 0.0
    calibration: Calibration = Calibration()


@dataclass(frozen=True, slots=True)
class ItemAnswer:
    """A model's answer to an item: its text, whether it is right, its confidence.

    ``problem`` says why the answer could not follow the task (then the text says so too)."""

    text: str
    correct: bool
    confidence: float
    value: str | None = None  # the graded value (a label), when the task has one
    problem: str | None = None


def draws(key: str) -> tuple[float, float, float, float]:
    """Four independent uniforms in (0, 1) from a hash of ``key``."""
    digest = hashlib.blake2b(key.encode(), digest_size=32).digest()
    scale = float(1 << 64)
    return tuple(  # type: ignore[return-value]
        (int.from_bytes(digest[i : i + 8], "big") + 0.5) / scale for i in range(0, 32, 8)
    )


def is_right(item_key: str, model: str, seed: int, behaviour: Behaviour) -> tuple[bool, float]:
    """(right?, the model's own uniform for the rest of its answer) by the correlated draw.

    Raising ``accuracy`` only ever turns wrong answers right (the draws do not move)."""
    shared = draws(f"{seed}\x1fitem\x1f{item_key}")[0]
    own, rest, _, _ = draws(f"{seed}\x1f{model}\x1f{item_key}")
    accuracy = behaviour.accuracy
    if accuracy >= 1.0 or accuracy <= 0.0:
        return accuracy >= 1.0, rest
    rho = min(1.0, max(0.0, behaviour.difficulty_correlation))
    latent = math.sqrt(rho) * _NORMAL.inv_cdf(shared) + math.sqrt(1 - rho) * _NORMAL.inv_cdf(own)
    return latent < _NORMAL.inv_cdf(accuracy), rest


def answer_item(
    item: DatasetItem, labels: Sequence[str], *, model: str, seed: int, behaviour: Behaviour
) -> ItemAnswer:
    """The model's deterministic answer to ``item``, in the shape its task is graded in."""
    right, _ = is_right(item.input, model, seed, behaviour)
    _, _, draw_confidence, draw_choice = draws(f"{seed}\x1f{model}\x1f{item.input}")
    confident_draw = draws(f"{seed}\x1f{model}\x1fconfident\x1f{item.input}")[0]
    calibration = behaviour.calibration
    confident = right or confident_draw < behaviour.confident_wrong_rate
    low, high = calibration.right if confident else calibration.wrong
    confidence = round(low + (high - low) * draw_confidence, 2)
    task = item.task
    if task.type in ("jsonField", "allowedSet"):
        return _json_answer(item, labels, right, confidence, draw_choice)
    if task.type == "regex":
        return _regex_answer(item, right, confidence)
    if task.type == "exact":
        reference = item.expected if item.expected is not None else item.label
        if reference is None:
            return _unanswerable(item, confidence, "the item has no expected text or label")
        text = reference if right else wrong_text(reference, labels, draw_choice)
        return ItemAnswer(text, text.strip() == reference.strip(), confidence)
    text = judge_target(item) if right else f"I believe the answer is: {_gist(item.input)}."
    return ItemAnswer(text, right, confidence)


def _json_answer(
    item: DatasetItem, labels: Sequence[str], right: bool, confidence: float, draw: float
) -> ItemAnswer:
    task = item.task
    if task.type == "jsonField":
        if item.label is None:
            return _unanswerable(item, confidence, "the item has no label")
        accepted: tuple[str, ...] = (item.label,)
    else:
        accepted = item.accept if item.accept is not None else task.values
        if not accepted:
            return _unanswerable(item, confidence, "no accept list on the item or the grader")
    pool = list(dict.fromkeys([*labels, *task.values]))
    others = [label for label in pool if label not in accepted] or ["none of these"]
    if right:
        value = item.label if item.label in accepted else accepted[int(draw * len(accepted))]
    else:
        value = others[int(draw * len(others))]
    document: dict[str, Any] = {}
    _put(document, task.field, value)
    if task.confidence_field:
        _put(document, task.confidence_field, confidence)
    return ItemAnswer(json.dumps(document), value in accepted, confidence, value)


def _regex_answer(item: DatasetItem, right: bool, confidence: float) -> ItemAnswer:
    pattern = item.pattern or item.task.pattern
    if pattern is None:
        return _unanswerable(item, confidence, "no pattern on the item or the grader")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        return _unanswerable(item, confidence, f"the pattern is not valid: {exc}")
    if right:
        for text in (item.expected, item.label, example_matching(pattern)):
            if text is not None and compiled.search(text):
                return ItemAnswer(text, True, confidence)
        return _unanswerable(item, confidence, f"no text matching {pattern!r} could be made")
    for text in UNSURE_TEXTS:
        if not compiled.search(text):
            return ItemAnswer(text, False, confidence)
    return ItemAnswer(UNSURE_TEXTS[0], True, confidence)  # the pattern matches anything


def _unanswerable(item: DatasetItem, confidence: float, why: str) -> ItemAnswer:
    text = f"[emulator: cannot answer this {item.task.type} item: {why}]"
    return ItemAnswer(text, False, confidence, problem=why)


def wrong_text(reference: str, labels: Sequence[str], draw: float) -> str:
    """A plausible wrong answer: another label, else the reference slightly off."""
    others = [label for label in labels if label.strip() != reference.strip()]
    if others:
        return others[int(draw * len(others))]
    return f"{reference} (probably)"


def judge_target(item: DatasetItem) -> str:
    """The answer a judge passes for ``item``: its reference, else a fixed right answer."""
    if item.expected is not None:
        return item.expected
    if item.label is not None:
        return item.label
    return f"A complete and correct answer to: {_gist(item.input)}."


def _gist(text: str) -> str:
    words = text.split()
    return " ".join(words[:10]) + (" ..." if len(words) > 10 else "")


def _put(document: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at the dot ``path`` (a digit part indexes a list)."""
    parts = path.split(".")
    node: Any = document
    for part, following in itertools.pairwise(parts):
        child: Any = [] if following.isdigit() else {}
        if isinstance(node, list):
            index = int(part)
            while len(node) <= index:
                node.append(None)
            node[index] = node[index] if node[index] is not None else child
            node = node[index]
        else:
            node = node.setdefault(part, child)
    last = parts[-1]
    if isinstance(node, list):
        index = int(last)
        while len(node) <= index:
            node.append(None)
        node[index] = value
    else:
        node[last] = value


# --- judge requests ------------------------------------------------------------------------


def judge_parts(text: str) -> tuple[str, str] | None:
    """(the graded request, the answer to grade) of a judge request, else ``None``."""
    start = text.find(JUDGE_REQUEST)
    cut = text.rfind(JUDGE_ANSWER)
    if start < 0 or cut < start:
        return None
    request = text[start + len(JUDGE_REQUEST) : cut]
    request = request.split(JUDGE_REFERENCE, 1)[0]
    return request, text[cut + len(JUDGE_ANSWER) :]


def judge_verdict(
    item: DatasetItem, answer: str, *, model: str, seed: int, behaviour: Behaviour
) -> str:
    """The judge model's ``{"pass", "reason"}`` on ``answer``: right with its accuracy."""
    truth = answer.strip() == judge_target(item).strip()
    sound, _ = is_right(f"judge\x1f{item.input}\x1f{answer}", model, seed, behaviour)
    passed = truth if sound else not truth
    reason = "matches the reference" if passed else "does not answer the request correctly"
    return json.dumps({"pass": passed, "reason": reason})


# --- a text that matches a regular expression ----------------------------------------------


def example_matching(pattern: str) -> str | None:
    """A short text ``re.search(pattern, text)`` finds, or ``None`` for constructs not covered
    (look-arounds, back-references)."""
    try:
        parsed = sre_parse.parse(pattern)
        text = _build(parsed)
    except (re.error, _Unsupported, RecursionError):
        return None
    return text if re.search(pattern, text) else None


class _Unsupported(Exception):
    pass


def _build(parsed: Any) -> str:
    out: list[str] = []
    for op, arg in parsed:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "NOT_LITERAL":
            out.append("a" if chr(arg) != "a" else "b")
        elif name == "ANY":
            out.append("x")
        elif name == "IN":
            out.append(_from_set(arg))
        elif name == "BRANCH":
            out.append(_build(arg[1][0]))
        elif name == "SUBPATTERN":
            out.append(_build(arg[-1]))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, sub = arg
            count = low if low > 0 else min(1, high)
            out.append(_build(sub) * min(count, max(low, _MAX_REPEAT)))
        elif name in ("AT", "ATOMIC_GROUP"):
            if name == "ATOMIC_GROUP":
                out.append(_build(arg))
        else:
            raise _Unsupported(name)
    return "".join(out)


def _from_set(items: Any) -> str:
    if items and str(items[0][0]) == "NEGATE":
        return "~"  # checked by the caller's final search
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            return chr(arg)
        if name == "RANGE":
            return chr(arg[0])
        if name == "CATEGORY":
            return {"CATEGORY_DIGIT": "7", "CATEGORY_SPACE": " "}.get(str(arg), "a")
    return "a"
