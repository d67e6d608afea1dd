"""Scripted responses and random fault rates, per model, for tests that need a tier to fail.

Scripts are queues consumed one step per request, in order; ``"*"`` is a queue shared by
all models, used when a model has no steps of its own. Fault rates apply when no script
step does, drawn from a seeded RNG so a run is reproducible.

Every operation is a single dict/deque operation, so tests may call them from another
thread while the server runs (``EmulatorThread``).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tierwise.emulator.errors import ApiError

ANY_MODEL = "*"

_STEP_KEYS = frozenset(
    {
        "text",
        "stop_reason",
        "tool_use",
        "output_tokens",
        "usage",
        "error",
        "error_type",
        "message",
        "retry_after",
        "stream_error_after_tokens",
        "first_token_delay",
        "thinking_tokens",
        "stop_details",
        "spend_limit",
    }
)
STOP_REASONS = frozenset(
    {
        "end_turn",
        "max_tokens",
        "stop_sequence",
        "tool_use",
        "pause_turn",
        "refusal",
        "model_context_window_exceeded",
    }
)
# A 429 for a spend limit: no ``retry-after``, since waiting does not help (the limit holds
# until the billing period ends or someone raises it).
SPEND_LIMIT_MESSAGE = (
    "You have reached your specified workspace API usage limits. You will regain access "
    "when your limits reset or when the limits are raised."
)


@dataclass(frozen=True)
class ScriptStep:
    """What the next request to a model gets. Keys combine (e.g. text plus a delay).

    * ``text`` / ``stop_reason`` / ``tool_use`` / ``output_tokens`` / ``usage``: the answer
      (``usage`` overrides fields of the computed usage);
    * ``error`` (HTTP status) with optional ``error_type``, ``message``, ``retry_after``;
    * ``stream_error_after_tokens``: a stream sends that many tokens then an
      ``overloaded_error`` event; a non-streaming request gets a 529;
    * ``first_token_delay``: seconds before the first token (on top of the profile);
    * ``thinking_tokens``: how many tokens a thinking request thinks (billed in full);
    * ``stop_details``: the message's ``stop_details`` (a refusal's category/explanation);
    * ``spend_limit``: a 429 without ``retry-after`` (``retry_after: null`` also omits it).
    """

    text: str | None = None
    stop_reason: str | None = None
    tool_use: Mapping[str, Any] | None = None
    output_tokens: int | None = None
    usage: Mapping[str, Any] | None = None
    error: int | None = None
    error_type: str | None = None
    message: str | None = None
    retry_after: float | None = None
    stream_error_after_tokens: int | None = None
    first_token_delay: float | None = None
    thinking_tokens: int | None = None
    stop_details: Mapping[str, Any] | None = None
    spend_limit: bool = False
    omit_retry_after: bool = False

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ScriptStep:
        if not isinstance(raw, Mapping):
            raise ValueError("each scripted response must be an object")
        unknown = set(raw) - _STEP_KEYS
        if unknown:
            raise ValueError(f"unknown keys in scripted response: {sorted(unknown)}")
        values = dict(raw)
        if "retry_after" in values and values["retry_after"] is None:
            values["omit_retry_after"] = True
        step = cls(**values)
        step._check()
        return step

    def _check(self) -> None:
        if self.stop_reason is not None and self.stop_reason not in STOP_REASONS:
            raise ValueError(f"unknown stop_reason {self.stop_reason!r}")
        if self.error is not None and not (400 <= int(self.error) <= 599):
            raise ValueError(f"error must be an HTTP error status, got {self.error}")
        if self.tool_use is not None and (
            not isinstance(self.tool_use, Mapping) or not self.tool_use.get("name")
        ):
            raise ValueError("tool_use needs at least a 'name'")
        if self.thinking_tokens is not None and int(self.thinking_tokens) < 0:
            raise ValueError("thinking_tokens must not be negative")
        if self.stop_details is not None and not isinstance(self.stop_details, Mapping):
            raise ValueError("stop_details must be an object")
        for name in ("first_token_delay", "retry_after"):
            value = getattr(self, name)
            if value is not None and float(value) < 0:
                raise ValueError(f"{name} must not be negative")

    def api_error(self) -> ApiError | None:
        if self.spend_limit:
            return ApiError(429, self.message or SPEND_LIMIT_MESSAGE)
        if self.error is None:
            return None
        retry_after = self.retry_after if self.retry_after is not None else _retry(self.error)
        return ApiError(
            int(self.error),
            self.message,
            error_type=self.error_type,
            retry_after=None if self.omit_retry_after else retry_after,
        )


def tool_use_block(raw: Mapping[str, Any], number: int) -> dict[str, Any]:
    """A complete ``tool_use`` content block from a scripted ``{"name", "input"?, "id"?}``."""
    return {
        "type": "tool_use",
        "id": str(raw.get("id") or f"toolu_emu{number:018d}"),
        "name": str(raw["name"]),
        "input": dict(raw.get("input") or {}),
    }


def _retry(status: int) -> float | None:
    return 1.0 if int(status) == 429 else None


@dataclass
class FaultRates:
    """Probabilities of each injected error for one model."""

    rate_429: float = 0.0
    rate_529: float = 0.0
    rate_500: float = 0.0
    retry_after: float = 1.0
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("rate_429", "rate_529", "rate_500"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.rate_429 + self.rate_529 + self.rate_500 > 1.0:
            raise ValueError("fault rates add up to more than 1")
        self._rng = random.Random(self.seed)

    @property
    def active(self) -> bool:
        return (self.rate_429 + self.rate_529 + self.rate_500) > 0.0

    def draw(self) -> ApiError | None:
        u = self._rng.random()
        if u < self.rate_429:
            return ApiError(429, retry_after=self.retry_after)
        if u < self.rate_429 + self.rate_529:
            return ApiError(529)
        if u < self.rate_429 + self.rate_529 + self.rate_500:
            return ApiError(500)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate_429": self.rate_429,
            "rate_529": self.rate_529,
            "rate_500": self.rate_500,
            "retry_after": self.retry_after,
            "seed": self.seed,
        }


# The batch endpoints a fault can be injected into (``FaultPlan.fail_batches``).
BATCH_OPERATIONS = frozenset({"create", "list", "retrieve", "results", "cancel", "delete"})


class FaultPlan:
    """Scripts and fault rates of all models, and faults of the batch endpoints."""

    def __init__(self) -> None:
        self._scripts: dict[str, deque[ScriptStep]] = {}
        self._rates: dict[str, FaultRates] = {}
        self._batch_failures: dict[str, deque[int]] = {}
        self.batch_create_delay = 0.0

    def clear(self) -> None:
        self._scripts = {}
        self._rates = {}
        self._batch_failures = {}
        self.batch_create_delay = 0.0

    def fail_batches(
        self, operation: str, statuses: Iterable[int], create_delay: float | None = None
    ) -> int:
        """The next calls of a batch ``operation`` fail with ``statuses`` (one each, in order);
        ``create_delay``: seconds a create waits *after* the batch exists before answering
        (a client that gives up meanwhile leaves a batch it never learnt the id of)."""
        if operation not in BATCH_OPERATIONS:
            raise ValueError(f"operation must be one of {sorted(BATCH_OPERATIONS)}")
        queue = self._batch_failures.setdefault(operation, deque())
        for status in statuses:
            if not 400 <= int(status) <= 599:
                raise ValueError(f"a batch fault is an HTTP error status, got {status}")
            queue.append(int(status))
        if create_delay is not None:
            if create_delay < 0:
                raise ValueError("create_delay must not be negative")
            self.batch_create_delay = float(create_delay)
        return len(queue)

    def batch_failure(self, operation: str) -> ApiError | None:
        queue = self._batch_failures.get(operation)
        if not queue:
            return None
        try:
            status = queue.popleft()
        except IndexError:
            return None
        return ApiError(status, retry_after=_retry(status))

    def script(self, model: str, steps: Iterable[ScriptStep]) -> int:
        """Append steps to a model's queue; returns the queue's new length."""
        queue = self._scripts.setdefault(model, deque())
        queue.extend(steps)
        return len(queue)

    def set_rates(self, model: str, rates: FaultRates) -> None:
        if rates.active:
            self._rates[model] = rates
        else:
            self._rates.pop(model, None)

    def next_step(self, model: str) -> ScriptStep | None:
        for name in (model, ANY_MODEL):
            queue = self._scripts.get(name)
            if queue:
                try:
                    return queue.popleft()
                except IndexError:  # emptied by a concurrent consumer
                    continue
        return None

    def random_fault(self, model: str) -> ApiError | None:
        rates = self._rates.get(model) or self._rates.get(ANY_MODEL)
        return rates.draw() if rates is not None else None

    def pending(self) -> dict[str, int]:
        return {model: len(queue) for model, queue in self._scripts.items() if queue}

    def rates(self) -> dict[str, dict[str, Any]]:
        return {model: rates.to_dict() for model, rates in self._rates.items()}
