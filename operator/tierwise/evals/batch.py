"""Replay items through a route over the Message Batches API, at the tiers' batch prices.

For ``spec.evaluation.useBatchAPI`` (only when latency is not gated). This runs the router's
own batch cascade (``router.batch_cascade.BatchCascadeRun``): the same step requests, the
same acceptance and escalation, the same pricing and metrics, the same durability rules —
driven here by polling until the cascade ends instead of by a client's polls. Each item ends
as the router's ``RunResult``. What this does not reproduce is per-request latency (an item
waits for its whole batch) and the fallback tier on overload (a failed item is an error).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from tierwise.pricing import Usage
from tierwise.router.batch_cascade import (
    MAX_BATCH_REQUESTS,
    BatchCascadeRun,
    BatchStore,
    Entry,
    item_error_status,
    new_cascade_id,
    new_state,
    read_requests,
    save_state,
)
from tierwise.router.cascade import Exchange, StepRecord
from tierwise.router.engine import RunResult
from tierwise.router.jsonutil import dumps
from tierwise.router.metrics import RouterMetrics
from tierwise.router.runtime import build_runtime
from tierwise.router.upstream import Reply, Upstream, UpstreamFailure
from tierwise.routerconfig import RouterConfig, Tier

OWNER = "eval"


class BatchCascadeEngine:
    """Whole routes of items over batches; use as ``async with BatchCascadeEngine(...)``."""

    def __init__(
        self, config: RouterConfig, env: Mapping[str, str], *, poll_seconds: float = 5.0
    ) -> None:
        self.config = config
        self.runtime = build_runtime(config, env)
        self.metrics = RouterMetrics()  # its own registry: nothing global is touched
        self.poll_seconds = poll_seconds
        self._session: aiohttp.ClientSession | None = None
        self._upstream: Upstream | None = None
        self._store: BatchStore | None = None

    async def __aenter__(self) -> BatchCascadeEngine:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self._upstream = Upstream(self._session, lambda tier, kind: None, lambda tier: None)
        self._store = BatchStore(None)  # a temporary directory, gone with the engine
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def run_all(self, route_name: str, bodies: Sequence[dict[str, Any]]) -> list[RunResult]:
        assert self._store is not None, "use the engine in an async with block"
        if len(bodies) > MAX_BATCH_REQUESTS:
            raise ValueError(f"a batch holds at most {MAX_BATCH_REQUESTS} requests")
        route = self.config.routes_by_name[route_name]
        entry = self._entry(route_name, bodies)
        run = BatchCascadeRun(self._store, entry, self.runtime, self.metrics, self._call)
        started = time.perf_counter()
        failure: UpstreamFailure | None = None
        while True:
            try:
                state = await run.advance()
            except UpstreamFailure as exc:  # the upstream gave up: unfinished items fail
                failure = exc
                break
            if state["endedAt"] is not None:
                break
            await asyncio.sleep(self.poll_seconds)
        finals = _finals(entry)
        results = []
        for index, body in enumerate(bodies):
            ex = Exchange(runtime=self.runtime, route=route, body=body, forwarded={}, batch=True)
            ex.started = started
            ex.tier = route.steps[0].tier
            line = finals.get(f"item-{index}")
            if line is None:
                assert failure is not None
                results.append(RunResult.of(ex, failure.status, error=failure.body))
                continue
            results.append(_result(ex, line))
        return results

    def _entry(self, route_name: str, bodies: Sequence[dict[str, Any]]) -> Entry:
        assert self._store is not None
        directory = self._store.incoming()
        with open(directory / "requests.jsonl", "wb") as out:
            for index, body in enumerate(bodies):
                out.write(dumps({"custom_id": f"item-{index}", "params": body}) + b"\n")
        batch_id = new_cascade_id()
        entry = self._store.add(OWNER, batch_id, directory)
        save_state(entry, new_state(batch_id, route_name, len(bodies), {}))
        return entry

    async def _call(
        self, tier: Tier, path: str, payload: bytes | Path | None, method: str, expect: bool
    ) -> Reply:
        assert self._upstream is not None
        return await self._upstream.call(
            self.runtime.clients[tier.name],
            path,
            payload,
            {},
            self.config.retry,
            method=method,
            expect_json=expect,
        )


def _finals(entry: Entry) -> dict[str, dict[str, Any]]:
    """Every final line the cascade wrote so far (steps' files, or the merged results)."""
    finals: dict[str, dict[str, Any]] = {}
    paths = sorted(entry.path.glob("step-*.jsonl"))
    if entry.results_path.exists():
        paths.append(entry.results_path)
    for path in paths:
        for line in read_requests(path):
            finals[line["custom_id"]] = line
    return finals


def _result(ex: Exchange, line: Mapping[str, Any]) -> RunResult:
    """One item's final line as the router's ``RunResult``."""
    tierwise = line.get("tierwise") or {}
    for record in tierwise.get("steps", []):
        ex.steps.append(
            StepRecord(
                tier=record["tier"],
                usage=Usage.from_anthropic(record.get("usage") or {}),
                cost=Decimal(record["cost"]),
                seconds=float(record.get("seconds", 0.0)),
                escalation=record.get("escalation"),
            )
        )
    ex.cost = Decimal(tierwise.get("cost_usd", "0"))
    ex.escalations = int(tierwise.get("escalations", 0))
    ex.tier = tierwise.get("tier") or ex.tier
    result = line.get("result") or {}
    if result.get("type") == "succeeded":
        return RunResult.of(ex, 200, dict(result.get("message") or {}))
    status, error = item_error_status(result)
    return RunResult.of(ex, status, error=error)
