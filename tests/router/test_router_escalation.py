"""Escalation signals over Messages API answers (no network)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest

from tierwise.router.escalation import NOT_JSON, answer_text, escalation_reason, parse_answer_json
from tierwise.routerconfig import (
    InvalidJSONSignal,
    JSONFieldBelowSignal,
    JSONFieldNotInSignal,
    RegexSignal,
    StopReasonSignal,
)


def msg(text: str, stop: str = "end_turn") -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "stop_reason": stop}


BELOW = JSONFieldBelowSignal(("confidence",), Decimal("0.8"))
NOT_IN = JSONFieldNotInSignal(("label",), frozenset({"billing", "bug"}))


def test_text_is_the_concatenation_of_text_blocks() -> None:
    message = {
        "content": [
            {"type": "text", "text": '{"a":'},
            {"type": "tool_use", "id": "t", "name": "x", "input": {}},
            {"type": "text", "text": " 1}"},
        ]
    }
    assert answer_text(message) == '{"a": 1}'
    assert parse_answer_json(answer_text(message)) == {"a": 1}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('  {"a": 1}\n', {"a": 1}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('```\n{"a": 1}```', {"a": 1}),
        ("null", None),
        ('Sure! {"a": 1}', NOT_JSON),
        ("", NOT_JSON),
    ],
)
def test_json_parsing_strips_one_fence(text: str, value: Any) -> None:
    parsed = parse_answer_json(text)
    if value is NOT_JSON:
        assert parsed is NOT_JSON
    else:
        assert parsed == value


def test_stop_reason() -> None:
    sig = StopReasonSignal(frozenset({"max_tokens", "refusal"}))
    # A refusal is its own reason (a reason to ask another model), not a quality verdict.
    assert escalation_reason([sig], msg("x", "refusal")) == "refusal"
    assert escalation_reason([], msg("x", "refusal")) == "refusal"
    assert escalation_reason([sig], msg("x", "end_turn")) is None


def test_invalid_json() -> None:
    assert escalation_reason([InvalidJSONSignal()], msg("not json")) == "invalid_json"
    assert escalation_reason([InvalidJSONSignal()], msg('{"ok": true}')) is None


@pytest.mark.parametrize(
    ("text", "fires"),
    [
        ('{"confidence": 0.79}', True),
        ('{"confidence": 0.8}', False),  # not below: exact decimal comparison
        ('{"confidence": 0.95}', False),
        ('{"confidence": "0.95"}', True),  # a string is not a number
        ('{"confidence": true}', True),
        ('{"other": 1}', True),  # missing
        ("no json at all", True),
        ("[0.9]", True),
    ],
)
def test_json_field_below(text: str, fires: bool) -> None:
    assert (escalation_reason([BELOW], msg(text)) == "json_field_below") is fires


def test_json_field_below_follows_dot_paths() -> None:
    sig = JSONFieldBelowSignal(("result", "scores", "0"), Decimal("0.5"))
    assert escalation_reason([sig], msg('{"result": {"scores": [0.4]}}')) == "json_field_below"
    assert escalation_reason([sig], msg('{"result": {"scores": [0.6]}}')) is None


@pytest.mark.parametrize(
    ("text", "fires"),
    [
        ('{"label": "bug"}', False),
        ('{"label": "refund"}', True),
        ('{"label": 1}', True),
        ("{}", True),
        ("bug", True),
    ],
)
def test_json_field_not_in(text: str, fires: bool) -> None:
    assert (escalation_reason([NOT_IN], msg(text)) == "json_field_not_in") is fires


def test_regex() -> None:
    sig = RegexSignal(re.compile(r"(?i)i can(no|')t"))
    assert escalation_reason([sig], msg("Sorry, I can't help")) == "regex"
    assert escalation_reason([sig], msg("Sure")) is None


def test_first_firing_signal_names_the_reason() -> None:
    signals = [StopReasonSignal(frozenset({"max_tokens"})), InvalidJSONSignal(), BELOW]
    assert escalation_reason(signals, msg('{"confidence": 0.1}')) == "json_field_below"
    assert escalation_reason(signals, msg("oops", "max_tokens")) == "stop_reason"
    assert escalation_reason([], msg("anything")) is None
