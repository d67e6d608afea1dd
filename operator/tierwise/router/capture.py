"""Capture of live requests for future eval datasets: opt-in, sampled, redacted.

Off unless the router is started with ``--capture-dir`` (a volume the platform team mounts
and controls). A sampled fraction of the answered ``/v1/messages`` requests is appended to
``<dir>/capture-<namespace>.<policy>-<YYYY-MM-DD>.jsonl`` in the eval's JSONL item format
(``id``, ``messages``, ``system``, ``maxTokens``; no label: a person adds it), each item after
a ``#`` comment line with the route and production's answer, which ``tierwise eval`` skips and
``tierwise dataset draft`` reads. Every string of the request and the answer goes through the
redaction rules first (e-mail addresses, phone numbers and key-shaped strings by default, plus
the operator's own), so nothing they match reaches the file. A request with the header
``x-tierwise-no-capture`` is never captured; a day's file stops growing at
``max_bytes_per_day``. Writes happen off the event loop, after the client has its answer, and
a failing write is logged and counted, never seen by a client.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import logging
import random
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from tierwise.router.cascade import Exchange
from tierwise.router.escalation import answer_text
from tierwise.router.metrics import RouterMetrics

log = logging.getLogger("tierwise.router.capture")

NO_CAPTURE_HEADER = "x-tierwise-no-capture"
COMMENT_PREFIX = "# tierwise-capture "
# The default redaction rules: name -> pattern. Keys: the shapes of common API keys and
# tokens, and any long unbroken run of key characters (32+), which prose never has.
DEFAULT_REDACTIONS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "phone": r"(?<![\w.])\+?\d(?:[\s().-]*\d){6,14}(?![\w.])",
    "key": (
        r"(?:sk-ant-[A-Za-z0-9_-]{8,}|sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}"
        r"|gh[pousr]_[A-Za-z0-9]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}"
        r"|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"
        r"|(?<![A-Za-z0-9_-])[A-Za-z0-9_+/=-]{32,})"
    ),
}


@dataclass(frozen=True)
class CaptureSettings:
    directory: Path
    rate: float = 0.01
    redactions: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_REDACTIONS))
    max_bytes_per_day: int = 100 * 2**20


class Redactor:
    """Replaces every match of the rules with ``[REDACTED:<name>]``, in every string."""

    def __init__(self, rules: Mapping[str, str]) -> None:
        self.rules = [(name, re.compile(pattern)) for name, pattern in rules.items()]

    def text(self, value: str) -> str:
        for name, pattern in self.rules:
            value = pattern.sub(f"[REDACTED:{name}]", value)
        return value

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, Mapping):
            return {k: self.value(v) for k, v in value.items()}
        return value


def parse_redactions(specs: Sequence[str]) -> dict[str, str]:
    """``NAME=REGEX`` options on top of the defaults (a default's name replaces it); a bad
    pattern is refused with its name."""
    rules = dict(DEFAULT_REDACTIONS)
    for spec in specs:
        name, sep, pattern = spec.partition("=")
        if not sep or not name.strip() or not pattern:
            raise ValueError(f"--capture-redact {spec!r}: expected NAME=REGEX")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(
                f"--capture-redact {name}: not a valid regular expression: {exc}"
            ) from None
        rules[name.strip()] = pattern
    return rules


class Capture:
    def __init__(
        self,
        settings: CaptureSettings,
        metrics: RouterMetrics,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.redactor = Redactor(settings.redactions)
        self._rng = rng
        self._lock = threading.Lock()
        self.written = Counter(
            "tierwise_capture_items",
            "Live requests captured for datasets, by result (written, full, error).",
            ["result"],
            registry=metrics.registry,
        )
        settings.directory.mkdir(parents=True, exist_ok=True)

    def offer(
        self,
        ex: Exchange,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        answer: Mapping[str, Any] | bytes,
    ) -> None:
        """A request answered in full: maybe capture it, off the event loop. Never raises."""
        try:
            if headers.get(NO_CAPTURE_HEADER) is not None or self._rng() >= self.settings.rate:
                return
            message = json.loads(answer) if isinstance(answer, (bytes, str)) else answer
            record = self.record(ex.runtime.policy, ex.route.name, body, message)
            loop = asyncio.get_running_loop()
            loop.run_in_executor(None, self._write, ex.runtime.policy, record)
        except Exception:
            log.exception("capturing a request failed")
            self.written.labels("error").inc()

    def record(
        self, policy: str, route: str, body: Mapping[str, Any], message: Mapping[str, Any]
    ) -> str:
        """The two lines written for one request: the comment, then the eval item."""
        item: dict[str, Any] = {"messages": self.redactor.value(body.get("messages") or [])}
        if body.get("system") is not None:
            item["system"] = self.redactor.value(body["system"])
        if isinstance(body.get("max_tokens"), int) and body["max_tokens"] >= 1:
            item["maxTokens"] = body["max_tokens"]
        digest = hashlib.sha256(json.dumps(item, sort_keys=True).encode()).hexdigest()[:12]
        item = {"id": f"{route}-{digest}", **item}
        note = {
            "route": route,
            "policy": policy,
            "answer": self.redactor.text(answer_text(message)),
            "capturedAt": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return (
            COMMENT_PREFIX
            + json.dumps(note, ensure_ascii=False)
            + "\n"
            + json.dumps(item, ensure_ascii=False)
            + "\n"
        )

    def path(self, policy: str) -> Path:
        day = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", policy.replace("/", "."))
        return self.settings.directory / f"capture-{safe}-{day}.jsonl"

    def _write(self, policy: str, record: str) -> None:
        data = record.encode()
        path = self.path(policy)
        with self._lock:
            try:
                size = path.stat().st_size if path.exists() else 0
                if size + len(data) > self.settings.max_bytes_per_day:
                    self.written.labels("full").inc()
                    return
                with path.open("ab") as handle:
                    handle.write(data)
            except OSError:
                log.exception("writing the capture file %s failed", path)
                self.written.labels("error").inc()
                return
        self.written.labels("written").inc()
