"""Kubernetes status conditions as the operator builds them: one value type and the two
rules every status follows (keep ``lastTransitionTime`` while a status holds; an Event per
transition). Pure; imported by every module that reports a condition."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str

    def to_dict(self, generation: int | None, transition_time: str) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": "True" if self.status else "False",
            "reason": self.reason,
            "message": self.message,
            "observedGeneration": generation,
            "lastTransitionTime": transition_time,
        }


def merge_conditions(
    previous: Sequence[Mapping[str, Any]] | None,
    new: Iterable[Condition],
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """New conditions, keeping lastTransitionTime when a condition's status did not change."""
    before = {c.get("type"): c for c in previous or ()}
    merged = []
    for condition in new:
        old = before.get(condition.type)
        status = "True" if condition.status else "False"
        unchanged = (
            old is not None and old.get("status") == status and old.get("lastTransitionTime")
        )
        merged.append(
            condition.to_dict(generation, old["lastTransitionTime"] if unchanged else now)
        )
    return merged


def transitions(
    previous: Sequence[Mapping[str, Any]] | None, current: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Conditions whose status or reason changed: each deserves a Kubernetes Event."""
    before = {c.get("type"): c for c in previous or ()}
    return [
        c
        for c in current
        if (old := before.get(c["type"])) is None
        or (old.get("status"), old.get("reason")) != (c["status"], c["reason"])
    ]
