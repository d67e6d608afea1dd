"""The Message Batches API, with the states and orderings the API documents.

Every request is answered (through the same engine as interactive requests) when the batch
is created, but its result *lands* at a point of the processing window: item k of n (in a
shuffled processing order) completes at ``created + processing_seconds * (k + 1) / n`` of
emulator time. That gives the API's behaviours ("Batch processing", read 2026-11-29):

* ``in_progress`` until every item completed, then ``ended``;
* ``cancel`` turns a batch ``canceling``; items not completed by then become ``canceled``,
  completed ones keep their result, and the batch ends ``canceling_seconds`` later;
* a batch not finished 24 hours after creation ends with its remaining items ``expired``;
* results come in any order (here: the processing order), so clients must match them by
  ``custom_id``;
* items of one batch do not read each other's prompt-cache writes (they run concurrently;
  the server reveals the batch's entries once it is processed).

Items report ``service_tier: "batch"``; the batch discount is a pricing matter, so usage is
the same as for an interactive request.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tierwise.emulator.errors import ApiError, invalid
from tierwise.emulator.wire import new_id

MAX_CUSTOM_ID_LENGTH = 64
EXPIRY_SECONDS = 24 * 3600.0
RESULT_RETENTION = timedelta(hours=24)


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass
class Batch:
    """One batch; ``results`` are in processing order, ``done_at[i]`` when item i lands."""

    id: str
    created_at: datetime
    started: float
    done_at: list[float]
    results: list[dict[str, Any]]
    canceling_seconds: float = 0.0
    cancel_at: float | None = None
    cancel_initiated_at: datetime | None = None
    ended_at: datetime | None = None
    _final: list[dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def expires(self) -> float:
        return self.started + EXPIRY_SECONDS

    def end_time(self) -> float:
        """Emulator time at which the batch ends."""
        natural = max(self.done_at, default=self.started)
        if self.cancel_at is not None:
            natural = min(natural, self.cancel_at + self.canceling_seconds)
        return min(natural, self.expires)

    def ended(self, now: float) -> bool:
        return now >= self.end_time()

    def status(self, now: float) -> str:
        if self.ended(now):
            return "ended"
        return "canceling" if self.cancel_at is not None else "in_progress"

    def lines(self, now: float) -> list[dict[str, Any]]:
        """Result lines as of ``now``: finished results, canceled or expired for the rest."""
        if self._final is not None:
            return self._final
        out = []
        for line, done in zip(self.results, self.done_at, strict=True):
            if self.cancel_at is not None and done > self.cancel_at:
                line = {"custom_id": line["custom_id"], "result": {"type": "canceled"}}
            elif done > self.expires:
                line = {"custom_id": line["custom_id"], "result": {"type": "expired"}}
            elif done > now:
                line = {"custom_id": line["custom_id"], "result": {"type": "processing"}}
            out.append(line)
        if self.ended(now):
            self._final = out
        return out

    def to_dict(self, now: float, base_url: str) -> dict[str, Any]:
        done = self.ended(now)
        if done and self.ended_at is None:
            self.ended_at = datetime.now(UTC)
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for line in self.lines(now):
            counts[line["result"]["type"]] += 1
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status(now),
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

    def __init__(
        self,
        clock: Callable[[], float],
        processing_seconds: float,
        canceling_seconds: float = 1.0,
    ) -> None:
        self._clock = clock
        self._processing_seconds = processing_seconds
        self._canceling_seconds = canceling_seconds
        self._batches: dict[str, Batch] = {}

    def clear(self) -> None:
        self._batches.clear()

    def create(self, body: Any, process: ItemProcessor) -> Batch:
        requests = _validate_batch(body)
        batch_id = new_id("msgbatch")
        # The API processes (and returns) items in no particular order.
        order = list(range(len(requests)))
        random.Random(batch_id).shuffle(order)
        results = [
            {"custom_id": requests[i]["custom_id"], "result": process(requests[i]["params"])}
            for i in order
        ]
        now = self._clock()
        total = len(results)
        done_at = [now + self._processing_seconds * (k + 1) / total for k in range(total)]
        batch = Batch(
            id=batch_id,
            created_at=datetime.now(UTC),
            started=now,
            done_at=done_at,
            results=results,
            canceling_seconds=self._canceling_seconds,
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
        now = self._clock()
        if batch.ended(now) or batch.cancel_at is not None:
            return batch
        batch.cancel_at = now
        batch.cancel_initiated_at = datetime.now(UTC)
        return batch

    def delete(self, batch_id: str) -> dict[str, str]:
        batch = self.get(batch_id)
        if not batch.ended(self._clock()):
            raise invalid(f"Batch {batch_id} cannot be deleted while it is in progress")
        del self._batches[batch_id]
        return {"id": batch_id, "type": "message_batch_deleted"}

    def results(self, batch_id: str) -> list[dict[str, Any]]:
        batch = self.get(batch_id)
        now = self._clock()
        if not batch.ended(now):
            raise invalid(f"Batch {batch_id} has not ended yet; results are not available")
        return batch.lines(now)


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
