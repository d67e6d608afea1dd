"""Graders: is an answer correct for its item?

Deterministic graders are pure functions of (item, answer message). The judge asks a model;
it is given a callable that runs one request through a judge route (see ``runner``), so this
module stays free of I/O. A verdict of ``None`` means "not gradable" (the item carries no
reference for this grader, or the judge gave no usable verdict): such items count against
``maxErrorRate``, never as correct or wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tierwise.evals.dataset import Item
from tierwise.router.escalation import NOT_JSON, answer_text, parse_answer_json

JUDGE_SYSTEM = (
    "You grade an assistant's answer to a request. Reply with JSON only, no prose: "
    '{"pass": true or false, "reason": "one short sentence"}.'
)


@dataclass(frozen=True)
class Verdict:
    correct: bool | None
    predicted: str | None = None  # what the answer said (a label), for the confusion table
    expected: str | None = None
    note: str = ""


@dataclass(frozen=True)
class GraderSpec:
    """A grader as the eval plan carries it (mirrors spec.evaluation...grader)."""

    type: str = "jsonField"
    field: str = "label"
    values: tuple[str, ...] = ()
    pattern: str | None = None
    tier: str | None = None
    criteria: str | None = None

    def to_document(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "field": self.field,
            "values": list(self.values),
            "pattern": self.pattern,
            "tier": self.tier,
            "criteria": self.criteria,
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> GraderSpec:
        return cls(
            type=doc.get("type", "jsonField"),
            field=doc.get("field") or "label",
            values=tuple(doc.get("values") or ()),
            pattern=doc.get("pattern"),
            tier=doc.get("tier"),
            criteria=doc.get("criteria"),
        )


Judge = Callable[[dict[str, Any]], Awaitable[Mapping[str, Any]]]


async def grade(
    spec: GraderSpec, item: Item, message: Mapping[str, Any], judge: Judge | None = None
) -> Verdict:
    if spec.type == "judge":
        if judge is None:
            raise ValueError("a judge grader needs a judge route")
        return await judge_answer(spec, item, message, judge)
    return grade_deterministic(spec, item, message)


def grade_deterministic(spec: GraderSpec, item: Item, message: Mapping[str, Any]) -> Verdict:
    text = answer_text(message)
    if spec.type == "jsonField":
        if item.label is None:
            return Verdict(None, note="item has no label")
        value = json_field(text, spec.field)
        return Verdict(value == item.label, _show(value), item.label, _absent(spec, value))
    if spec.type == "allowedSet":
        accepted = item.accept if item.accept is not None else spec.values
        if not accepted:
            return Verdict(None, note="no accept list on the item or the grader")
        value = json_field(text, spec.field)
        return Verdict(value in accepted, _show(value), item.label, _absent(spec, value))
    if spec.type == "regex":
        pattern = item.pattern or spec.pattern
        if pattern is None:
            return Verdict(None, note="no pattern on the item or the grader")
        try:
            found = re.search(pattern, text) is not None
        except re.error as exc:
            return Verdict(None, note=f"item pattern is not a valid regular expression: {exc}")
        return Verdict(found)
    if spec.type == "exact":
        reference = item.expected if item.expected is not None else item.label
        if reference is None:
            return Verdict(None, note="item has no expected text")
        return Verdict(text.strip() == reference.strip())
    raise ValueError(f"unknown grader type {spec.type!r}")


def _absent(spec: GraderSpec, value: Any) -> str:
    return FIELD_ABSENT.format(field=spec.field) if value is None else ""


FIELD_ABSENT = "field `{field}` absent"

_REFERENCE = {
    "jsonField": ("`label`", lambda item: item.label),
    "allowedSet": ("`accept` list", lambda item: item.accept),
    "regex": ("`pattern`", lambda item: item.pattern),
    "exact": (
        "`expected` or `label`",
        lambda item: item.expected if item.expected is not None else item.label,
    ),
}


def check_gradable(spec: GraderSpec, items: Sequence[Item], source: str) -> str | None:
    """Why ``spec`` can grade none of ``items``, found before any model is called (or a
    pattern that cannot compile); None when some can be graded."""
    if spec.type == "regex":
        for item in items:
            for pattern in (spec.pattern, item.pattern):
                try:
                    re.compile(pattern or "")
                except re.error as exc:
                    where = "grader.pattern" if pattern is spec.pattern else f"line {item.line}"
                    return f"{source}: {where}: pattern is not a valid regular expression: {exc}"
    if spec.type not in _REFERENCE:
        return None
    if (spec.type == "allowedSet" and spec.values) or (spec.type == "regex" and spec.pattern):
        return None
    what, reference = _REFERENCE[spec.type]
    missing = sum(1 for item in items if reference(item) is None)
    if missing < len(items):
        return None
    fallback = {
        "allowedSet": " and the grader has no values",
        "regex": " and the grader no pattern",
    }
    return (
        f"{source}: {spec.type} grader: {missing}/{len(items)} items have no {what}"
        f"{fallback.get(spec.type, '')}: nothing can be graded"
    )


def json_field(text: str, path: str) -> Any:
    """The value at the dot ``path`` of the answer's JSON, or None."""
    value = parse_answer_json(text)
    if value is NOT_JSON:
        return None
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _show(value: Any) -> str:
    """A predicted value as a confusion-table label."""
    if value is None:
        return "(no answer)"
    return value if isinstance(value, str) else json.dumps(value)


def judge_request(spec: GraderSpec, item: Item, answer: str) -> dict[str, Any]:
    reference = item.expected if item.expected is not None else item.label
    parts = [
        f"Criteria: {spec.criteria or 'The answer is correct, complete and follows the request.'}",
        f"Request:\n{item.question()}",
    ]
    if reference is not None:
        parts.append(f"Reference answer:\n{reference}")
    parts.append(f"Answer to grade:\n{answer}")
    return {
        "model": "tierwise/judge",
        "max_tokens": 256,
        "system": JUDGE_SYSTEM,
        "messages": [{"role": "user", "content": "\n\n".join(parts)}],
    }


async def judge_answer(
    spec: GraderSpec, item: Item, message: Mapping[str, Any], judge: Judge
) -> Verdict:
    reply = await judge(judge_request(spec, item, answer_text(message)))
    verdict = parse_answer_json(answer_text(reply))
    passed = verdict.get("pass") if isinstance(verdict, Mapping) else None
    if not isinstance(passed, bool):
        return Verdict(None, note="the judge gave no pass/fail verdict")
    return Verdict(passed, "pass" if passed else "fail", None, str(verdict.get("reason", "")))
