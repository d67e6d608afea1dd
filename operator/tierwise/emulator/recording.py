"""What reached the emulator: recorded requests and counters, for tests to assert on."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class RecordedRequest:
    """One API request as received, and how it ended.

    ``api_key`` is the credential sent, from ``x-api-key`` or ``Authorization: Bearer``
    (recent SDKs send the latter). ``cancelled`` is true when the client went away before the response was complete
    (a disconnect mid-stream, or a timeout while the emulator was still "thinking").
    """

    id: str
    method: str
    path: str
    headers: dict[str, str]
    received_at: float
    api_key: str | None = None
    body: Any = None
    model: str | None = None
    stream: bool = False
    status: int | None = None
    error_type: str | None = None
    usage: dict[str, Any] | None = None
    cancelled: bool = False
    completed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "api_key": self.api_key,
            "body": self.body,
            "model": self.model,
            "stream": self.stream,
            "status": self.status,
            "error_type": self.error_type,
            "usage": self.usage,
            "cancelled": self.cancelled,
            "completed": self.completed,
            "received_at": self.received_at,
        }


@dataclass
class Stats:
    """Counters kept even when requests are not recorded; ``by_model`` counts answered
    messages per profile name."""

    requests: int = 0
    by_model: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    injected_errors: int = 0
    cancelled_requests: int = 0
    cancelled_streams: int = 0
    streams: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_model": dict(self.by_model),
            "by_status": {str(k): v for k, v in self.by_status.items()},
            "injected_errors": self.injected_errors,
            "cancelled_requests": self.cancelled_requests,
            "cancelled_streams": self.cancelled_streams,
            "streams": self.streams,
        }


class RequestLog:
    """A bounded log, newest last; old entries drop off in long benchmarks."""

    def __init__(self, max_entries: int) -> None:
        self._entries: deque[RecordedRequest] = deque(maxlen=max_entries)

    def append(self, entry: RecordedRequest) -> None:
        self._entries.append(entry)

    def clear(self) -> None:
        self._entries.clear()

    def select(self, *, model: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        return [
            e
            for e in list(self._entries)
            if (model is None or e.model == model) and (path is None or e.path == path)
        ]
