"""Helpers shared by the emulator tests (named uniquely: test dirs have no packages)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

API_KEY = "test-key"
HAIKU = "claude-haiku-4-5"
SONNET = "claude-sonnet-4-5"
OPUS = "claude-opus-4-5"


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def raw_request(
    base_url: str,
    path: str,
    body: Any = None,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP call, for what the SDK would refuse to send (or to see raw bytes)."""
    sent = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
    sent.update(headers or {})
    payload = (
        data if data is not None else (json.dumps(body).encode() if body is not None else None)
    )
    if payload is not None:
        sent.setdefault("content-type", "application/json")
    request = urllib.request.Request(base_url + path, data=payload, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs of an SSE body, checking the wire framing as it goes."""
    events = []
    for chunk in raw.decode().split("\n\n"):
        if not chunk:
            continue
        name_line, data_line = chunk.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        events.append((name_line[len("event: ") :], json.loads(data_line[len("data: ") :])))
    return events
