"""Escalation signals: should a cascade step's answer be replaced by the next step's?

Pure functions over the Messages API response (a dict), per docs/router-config.md:
the answer's text is the concatenation of its ``text`` blocks; its JSON is that text
parsed after stripping whitespace and one surrounding Markdown code fence.
``answerProbabilityBelow`` also reads the token log-probabilities an OpenAI-compatible tier
returned with the answer (``TokenLogprob``s; ``None`` when there are none).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from tierwise.routerconfig import (
    AnswerProbabilitySignal,
    InvalidJSONSignal,
    JSONFieldBelowSignal,
    JSONFieldNotInSignal,
    RegexSignal,
    Signal,
    StopReasonSignal,
)

_FENCE = re.compile(r"\A```[A-Za-z0-9_-]*[ \t]*\n(?P<body>.*?)\n?```\Z", re.DOTALL)


class _NotJSON:
    """Marker for text that is not JSON (``None`` is valid JSON: ``null``)."""

    def __repr__(self) -> str:
        return "NOT_JSON"


NOT_JSON: Any = _NotJSON()
_MISSING = object()


def answer_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(
        block.get("text", "")
        for block in content
        if isinstance(block, Mapping) and block.get("type") == "text"
    )


def parse_answer_json(text: str) -> Any:
    """The answer's JSON value, or ``NOT_JSON``."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group("body").strip()
    try:
        # The standard library, not orjson: it accepts exactly JSON, and answers are small.
        return json.loads(stripped)
    except ValueError:
        return NOT_JSON


_CATEGORY = re.compile(r"[a-z0-9_]{1,40}")


def refusal_reason(message: Mapping[str, Any]) -> str | None:
    """``refusal`` or ``refusal:<category>`` when the answer is a refusal, else ``None``.

    A refusal (``stop_reason: refusal``, with ``stop_details.category`` naming the policy
    area when there is one) says nothing about the quality a cheaper tier can reach: it
    is a reason to ask another model, so it escalates (or, on the last step, falls back)
    whatever the step's signals are. The category goes into the metric's ``reason`` label
    only when it has the API's shape (bounded label values).
    """
    if message.get("stop_reason") != "refusal":
        return None
    details = message.get("stop_details")
    category = details.get("category") if isinstance(details, Mapping) else None
    if isinstance(category, str) and _CATEGORY.fullmatch(category):
        return f"refusal:{category}"
    return "refusal"


def escalation_reason(
    signals: Sequence[Signal], message: Mapping[str, Any], logprobs: Sequence[Any] | None = None
) -> str | None:
    """The metric ``reason`` of a refusal or of the first signal that fires; ``None`` to
    accept. ``logprobs``: the answer's token log-probabilities, when its tier returned them."""
    refusal = refusal_reason(message)
    if refusal is not None:
        return refusal
    if not signals:
        return None
    answer = _Answer(message, logprobs, allowed_values(signals))
    for signal in signals:
        if _fires(signal, answer):
            return signal.reason
    return None


def allowed_values(signals: Sequence[Signal]) -> dict[tuple[str, ...], tuple[str, ...]]:
    """The allowed values of each field a ``jsonFieldNotIn`` signal names."""
    return {s.field: s.values for s in signals if isinstance(s, JSONFieldNotInSignal)}


class _Answer:
    """Text and JSON of an answer, computed at most once however many signals ask."""

    def __init__(
        self,
        message: Mapping[str, Any],
        logprobs: Sequence[Any] | None,
        allowed: Mapping[tuple[str, ...], tuple[str, ...]],
    ) -> None:
        self.message = message
        self.logprobs = logprobs
        self.allowed = allowed
        self._text: str | None = None
        self._json: Any = _MISSING

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = answer_text(self.message)
        return self._text

    @property
    def json(self) -> Any:
        if self._json is _MISSING:
            self._json = parse_answer_json(self.text)
        return self._json


def _fires(signal: Signal, answer: _Answer) -> bool:
    if isinstance(signal, StopReasonSignal):
        return answer.message.get("stop_reason") in signal.values
    if isinstance(signal, InvalidJSONSignal):
        return answer.json is NOT_JSON
    if isinstance(signal, JSONFieldBelowSignal):
        number = _as_decimal(_lookup(answer.json, signal.field))
        return number is None or number < signal.threshold
    if isinstance(signal, JSONFieldNotInSignal):
        value = _lookup(answer.json, signal.field)
        return not isinstance(value, str) or value not in signal.values
    if isinstance(signal, RegexSignal):
        return signal.pattern.search(answer.text) is not None
    if isinstance(signal, AnswerProbabilitySignal):
        allowed = answer.allowed.get(signal.field) if signal.field else None
        probability = answer_probability(answer.logprobs, signal.field, allowed)
        return probability is None or probability < float(signal.threshold)
    raise TypeError(f"unknown signal {signal!r}")


def answer_field(message: Mapping[str, Any], path: Sequence[str]) -> tuple[bool, Any]:
    """``(found, value)`` of the dot-path field of an answer's JSON (the escalation signals'
    and the shadow comparison's one reading of a field)."""
    value = _lookup(parse_answer_json(answer_text(message)), tuple(path))
    return (value is not _MISSING, None if value is _MISSING else value)


def _lookup(value: Any, path: tuple[str, ...]) -> Any:
    """Follow a dot path through objects (and lists, by numeric segment)."""
    for part in path:
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _as_decimal(value: Any) -> Decimal | None:
    """An exact decimal of a JSON number; booleans and strings are not numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def answer_probability(
    logprobs: Sequence[Any] | None,
    field: Sequence[str] | None = None,
    allowed: Sequence[str] | None = None,
) -> float | None:
    """The model's probability of its answer from its tokens' log-probabilities.

    With ``field``: the probability of the tokens that spell that field's value in the JSON
    answer (the product over every token overlapping the value, quotes excluded). With the
    field's ``allowed`` values too (and the server's alternatives per token), the value's
    probability among the allowed values: see ``_among_allowed``. Without ``field``: the
    geometric mean of the per-token probabilities, exp(mean log-probability), so long and
    short answers compare. ``None`` (the signal fires) when there are no log-probabilities,
    the answer is not JSON or lacks the field. Positions come from the tokens' own text, so
    the answer text and the tokens cannot disagree.
    """
    if not logprobs:
        return None
    if field is None:
        return math.exp(sum(t.logprob for t in logprobs) / len(logprobs))
    text = "".join(t.token for t in logprobs)
    value = _lookup(parse_answer_json(text), tuple(field))
    if value is _MISSING:
        return None
    span = json_value_span(text, field)
    if span is None:
        return None
    tokens = list(_value_tokens(logprobs, span))
    if allowed and value in allowed and any(token.top for _, token in tokens):
        return _among_allowed(text, span, tokens, value, allowed)
    return math.exp(sum(token.logprob for _, token in tokens))


def _value_tokens(logprobs: Sequence[Any], span: tuple[int, int]) -> Iterator[tuple[int, Any]]:
    """The tokens overlapping the character ``span``, with the position each starts at."""
    start, end = span
    position = 0
    for token in logprobs:
        token_end = position + len(token.token)
        if token_end > start and position < end:
            yield position, token
        position = token_end


def _among_allowed(
    text: str,
    span: tuple[int, int],
    tokens: Sequence[tuple[int, Any]],
    value: str,
    allowed: Sequence[str],
) -> float:
    """The probability of ``value`` against the field's other allowed values, on the
    cautious side.

    Servers report each token's probability before any constraint (a grammar or JSON schema
    only masks what the model may write), so a small model forced into a label it would
    never have begun unprompted gets a raw probability near 0 whichever label it picks. What
    separates a sure label from a guess is how the model weighs the allowed labels where they
    part: at each value token, the chosen token's probability over itself plus its rivals,
    the alternatives that continue another allowed value but not this one. Rivals come from
    the alternatives the server listed (``top_logprobs``); each other allowed value still
    possible at that point but not among them counts at the probability of the least likely
    listed alternative (an unlisted token is at most that likely). Alternatives that still
    spell this value (another tokenization) or no allowed value (what a constraint masks) do
    not count.
    """
    start, _ = span
    probability = 1.0
    for position, token in tokens:
        lead = text[position:start]  # the part of the token before the value (an opening quote)
        written = text[start:position]  # the value's text before this token
        rivals = 0.0
        listed: set[str] = set()
        for alternative, logprob in token.top:
            if alternative == token.token or not alternative.startswith(lead):
                continue
            spelled = written + alternative[len(lead) :]
            if _continues(spelled, value):
                continue
            others = {other for other in allowed if other != value and _continues(spelled, other)}
            if others:
                listed |= others
                rivals += math.exp(logprob)
        unlisted = [o for o in allowed if o != value and o not in listed and _continues(written, o)]
        if unlisted and token.top:
            rivals += len(unlisted) * math.exp(min(logprob for _, logprob in token.top))
        chosen = math.exp(token.logprob)
        probability *= chosen / (chosen + rivals)
    return probability


def _continues(spelled: str, value: str) -> bool:
    """Whether ``spelled`` (value text, perhaps with the closing quote and more) can still
    be, or already is, the JSON string ``value``."""
    target = value + '"'
    return target.startswith(spelled) or spelled.startswith(target)


def json_value_span(text: str, field: Sequence[str]) -> tuple[int, int] | None:
    """Character span of the value of a dot-path ``field`` in JSON ``text`` (inside the
    quotes of a string value), found by following each key in turn."""
    position = 0
    for part in field:
        found = re.compile(r'"' + re.escape(part) + r'"\s*:\s*').search(text, position)
        if found is None:
            return None
        position = found.end()
    if position >= len(text):
        return None
    if text[position] == '"':
        end = position + 1
        while end < len(text) and text[end] != '"':
            end += 2 if text[end] == "\\" else 1
        return (position + 1, min(end, len(text)))
    scalar = re.compile(r"[^,}\]\s]+").match(text, position)
    return (position, scalar.end()) if scalar else None
