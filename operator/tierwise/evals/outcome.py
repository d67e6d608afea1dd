"""What one eval item's request gave, as the report and the gate need it.

Requests run through the router's own ``tierwise.router.engine.CascadeEngine``, which takes
the router's one request path (``tierwise.router.request_path``: input budget, steps, caps,
format instruction, effort/thinking, cache breakpoints, escalation signals, retries, fallback,
hedging, pricing), so what the eval measures is what the sidecar would do with that config;
``Outcome`` is its ``RunResult`` with the error turned into one line of text (the report
counts errors by it) and the HTTP status the router's client would get.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tierwise.router.engine import RunResult
from tierwise.router.jsonutil import loads


@dataclass(frozen=True)
class Outcome:
    """What one request through a route gave: the final message, or an error."""

    message: Mapping[str, Any] | None
    tier: str
    cost: Decimal
    escalations: int
    seconds: float
    error: str | None = None
    status: int = 200  # the router's HTTP status for this request (0: no answer at all)

    @classmethod
    def of(cls, result: RunResult) -> Outcome:
        return cls(
            result.message if result.ok else None,
            result.tier,
            result.cost,
            result.escalations,
            result.seconds,
            error=None if result.ok else error_text(result.status, result.error or b""),
            status=result.status,
        )

    @classmethod
    def failed(cls, error: str) -> Outcome:
        """An item with no answer at all (the eval's timeout, an internal error)."""
        return cls(None, "", Decimal(0), 0, 0.0, error, status=0)


def error_text(status: int, body: bytes) -> str:
    """``type (status): message`` of an error body in the Messages API's shape."""
    try:
        error = loads(body).get("error", {})
        kind, message = error.get("type", "error"), error.get("message", "")
    except (ValueError, AttributeError):
        kind, message = "error", ""
    return f"{kind} ({status}){': ' + message if message else ''}"
