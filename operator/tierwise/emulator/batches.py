"""The Message Batches API: every request is answered when the batch is created.

A batch reports ``in_progress`` for ``batch_processing_seconds`` (emulator clock, so tests
can advance it), then ``ended``. Items go through the same engine as interactive requests
(cache accounting, scripts, faults) and report ``service_tier: "batch"``; the batch
discount is a pricing matter, so usage is the same as for an interactive request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tierwise.emulator.errors import ApiError, invalid
from tierwise.emulator.wire import new_id

MAX_CUSTOM_ID_LENGTH = 64
RESULT_RETENTION = timedelta(hours=24)


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass
class Batch:
    id: str
    created_at: datetime
    ready_at: float
    results: list[dict[str, Any]]
    cancel_initiated_at: datetime | None = None
    ended_at: datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def ended(self, now: float) -> bool:
        return self.cancel_initiated_at is not None or now >= self.ready_at

    def to_dict(self, now: float, base_url: str) -> dict[str, Any]:
        done = self.ended(now)
        if done and self.ended_at is None:
            self.ended_at = datetime.now(UTC)
        total = len(self.results)
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if done:
            counts.update(self.counts)
        else:
            counts["processing"] = total
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": "ended" if done else "in_progress",
            "request_counts": counts,
            "ended_at": _rfc3339(self.ended_at) if done and self.ended_at else None,
            "created_at": _rfc3339(self.created_at),
            "expires_at": _rfc3339(self.created_at + RESULT_RETENTION),
            "archived_at": None,
            "cancel_initiated_at": (
                _rfc3339(self.cancel_initiated_at) if self.cancel_initiated_at else None
            ),
            "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if done else None,
        }


ItemProcessor = Callable[[Mapping[str, Any]], dict[str, Any]]


class BatchStore:
    """Batches of one emulator, newest last."""

    def __init__(self, clock: Callable[[], float], processing_seconds: float) -> None:
        self._clock = clock
        self._processing_seconds = processing_seconds
        self._batches: dict[str, Batch] = {}

    def clear(self) -> None:
        self._batches.clear()

    def create(self, body: Any, process: ItemProcessor) -> Batch:
        requests = _validate_batch(body)
        results = [
            {"custom_id": item["custom_id"], "result": process(item["params"])} for item in requests
        ]
        counts = {"succeeded": 0, "errored": 0}
        for line in results:
            counts[line["result"]["type"]] += 1
        batch = Batch(
            id=new_id("msgbatch"),
            created_at=datetime.now(UTC),
            ready_at=self._clock() + self._processing_seconds,
            results=results,
            counts=counts,
        )
        self._batches[batch.id] = batch
        return batch

    def get(self, batch_id: str) -> Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"message_batch_id: {batch_id} not found")
        return batch

    def page(
        self, limit: int, after_id: str | None, before_id: str | None
    ) -> tuple[list[Batch], bool]:
        """Newest first, paged by id as the API pages."""
        ordered = list(reversed(self._batches.values()))
        ids = [b.id for b in ordered]
        if after_id is not None and after_id in ids:
            ordered = ordered[ids.index(after_id) + 1 :]
        elif before_id is not None and before_id in ids:
            ordered = ordered[: ids.index(before_id)]
        return ordered[:limit], len(ordered) > limit

    def cancel(self, batch_id: str) -> Batch:
        batch = self.get(batch_id)
        if batch.ended(self._clock()):
            return batch
        batch.cancel_initiated_at = datetime.now(UTC)
        for line in batch.results:
            line["result"] = {"type": "canceled"}
        batch.counts = {"canceled": len(batch.results)}
        return batch

    def delete(self, batch_id: str) -> dict[str, str]:
        batch = self.get(batch_id)
        if not batch.ended(self._clock()):
            raise invalid(f"Batch {batch_id} cannot be deleted while it is in progress")
        del self._batches[batch_id]
        return {"id": batch_id, "type": "message_batch_deleted"}

    def results(self, batch_id: str) -> list[dict[str, Any]]:
        batch = self.get(batch_id)
        if not batch.ended(self._clock()):
            raise invalid(f"Batch {batch_id} has not ended yet; results are not available")
        return batch.results


def _validate_batch(body: Any) -> list[Mapping[str, Any]]:
    if not isinstance(body, dict):
        raise invalid("Request body must be a JSON object")
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise invalid("requests: at least one request is required")
    seen: set[str] = set()
    for i, item in enumerate(requests):
        if not isinstance(item, dict):
            raise invalid(f"requests.{i}: Input should be a valid dictionary")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= MAX_CUSTOM_ID_LENGTH:
            raise invalid(f"requests.{i}.custom_id: must be a string of 1 to 64 characters")
        if custom_id in seen:
            raise invalid(f"requests.{i}.custom_id: duplicate custom_id {custom_id!r}")
        seen.add(custom_id)
        if not isinstance(item.get("params"), dict):
            raise invalid(f"requests.{i}.params: Field required")
        if item["params"].get("stream"):
            raise invalid(f"requests.{i}.params.stream: streaming is not supported in batches")
    return requests
