"""Replay items through a route over the Message Batches API, at the tiers' batch prices.

For ``spec.evaluation.useBatchAPI`` (only when latency is not gated): each cascade step is one
batch holding the items still unanswered. The requests are the router's own step requests
(``build_step_request``: model, caps, format instruction, cache breakpoints), an answer is
accepted or escalated, priced (at batch prices) and counted by the router's own ``Cascade``
(``accepts``, ``record_step``), the calls go through the router's ``Upstream`` (retries,
keys), and each item ends as the router's ``RunResult``. What this does not reproduce is per-request latency (a batch answers
when the batch ends) and the fallback tier on overload (a failed item is an error).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from tierwise.pricing import Usage
from tierwise.router.cascade import Cascade, Exchange
from tierwise.router.engine import RunResult
from tierwise.router.errors import ERROR_TYPES, error_body
from tierwise.router.jsonutil import dumps, loads
from tierwise.router.metrics import RouterMetrics
from tierwise.router.request import build_step_request
from tierwise.router.runtime import build_runtime
from tierwise.router.upstream import BATCHES_PATH, Upstream, UpstreamFailure, created_batch_id
from tierwise.routerconfig import RouterConfig, Step

MAX_BATCH_REQUESTS = 100_000  # the API's limit per batch


# One item's answer in a batch: its message and usage, or (HTTP status, error body).
Found = tuple[Mapping[str, Any], Usage] | tuple[int, bytes]
STATUS_OF_ERROR = {kind: status for status, kind in reversed(ERROR_TYPES.items())}


class BatchCascadeEngine:
    """Whole routes of items over batches; use as ``async with BatchCascadeEngine(...)``.

    Each item is an ``Exchange`` accounted by the router's ``Cascade`` (cost at batch prices,
    steps, escalations, metrics), and ends as the router's ``RunResult``.
    """

    def __init__(
        self, config: RouterConfig, env: Mapping[str, str], *, poll_seconds: float = 5.0
    ) -> None:
        self.config = config
        self.runtime = build_runtime(config, env)
        self.metrics = RouterMetrics()  # its own registry: nothing global is touched
        self.poll_seconds = poll_seconds
        self._session: aiohttp.ClientSession | None = None
        self._upstream: Upstream | None = None
        self._cascade: Cascade | None = None

    async def __aenter__(self) -> BatchCascadeEngine:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self._upstream = Upstream(self._session, lambda tier, kind: None, lambda tier: None)
        self._cascade = Cascade(self._upstream, self.metrics)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def run_all(self, route_name: str, bodies: Sequence[dict[str, Any]]) -> list[RunResult]:
        assert self._cascade is not None, "use the engine in an async with block"
        route = self.config.routes_by_name[route_name]
        exchanges = [
            Exchange(runtime=self.runtime, route=route, body=body, forwarded={}, batch=True)
            for body in bodies
        ]
        results: dict[int, RunResult] = {}
        pending = list(range(len(bodies)))
        for index, step in enumerate(route.steps):
            if not pending:
                break
            last = index == len(route.steps) - 1
            tier = self.config.tiers[step.tier]
            started = time.perf_counter()
            found = await self._step(route_name, step, {i: bodies[i] for i in pending})
            seconds = time.perf_counter() - started  # an item waits for its whole batch
            escalated = []
            for i in pending:
                ex = exchanges[i]
                ex.tier = tier.name
                answer = found.get(i, (500, error_body("api_error", "no batch result")))
                if isinstance(answer[0], int):
                    status, error = answer
                    results[i] = RunResult.of(ex, status, error=error)
                    continue
                message, usage = answer
                self._cascade.record_step(ex, tier, usage, seconds)
                if last or self._cascade.accepts(ex, step, tier.name, message):
                    results[i] = RunResult.of(ex, 200, dict(message))
                else:
                    escalated.append(i)
            pending = escalated
        return [results[i] for i in range(len(bodies))]

    async def _step(
        self, route_name: str, step: Step, bodies: Mapping[int, dict[str, Any]]
    ) -> dict[int, Found]:
        """One batch for ``step``: each item's (message, usage), or (status, error body)."""
        assert self._upstream is not None
        route = self.config.routes_by_name[route_name]
        tier = self.config.tiers[step.tier]
        client = self.runtime.clients[tier.name]
        caching = self.config.cache.prompt_caching
        found: dict[int, Found] = {}
        items = list(bodies.items())
        for start in range(0, len(items), MAX_BATCH_REQUESTS):
            chunk = items[start : start + MAX_BATCH_REQUESTS]
            requests = [
                {
                    "custom_id": f"item-{i}",
                    "params": build_step_request(body, route, step, tier, caching, stream=False),
                }
                for i, body in chunk
            ]
            try:
                found.update(await self._one_batch(client, requests))
            except UpstreamFailure as failure:
                found.update({i: (failure.status, failure.body) for i, _ in chunk})
        return found

    async def _one_batch(self, client: Any, requests: list[dict[str, Any]]) -> dict[int, Found]:
        assert self._upstream is not None
        retry = self.config.retry
        created = loads(
            (
                await self._upstream.call(
                    client, BATCHES_PATH, dumps({"requests": requests}), {}, retry
                )
            ).body
        )
        batch_id = created_batch_id(created, client.tier.name)
        status = created
        while status.get("processing_status") != "ended":
            await asyncio.sleep(self.poll_seconds)
            reply = await self._upstream.call(
                client, f"{BATCHES_PATH}/{batch_id}", None, {}, retry, method="GET"
            )
            status = loads(reply.body)
        reply = await self._upstream.call(
            client,
            f"{BATCHES_PATH}/{batch_id}/results",
            None,
            {},
            retry,
            method="GET",
            expect_json=False,  # JSONL, one result per line
        )
        found: dict[int, Found] = {}
        for line in reply.body.decode().splitlines():
            if not line.strip():
                continue
            entry = loads(line)
            index = int(str(entry.get("custom_id", "item--1")).removeprefix("item-"))
            result = entry.get("result") or {}
            if result.get("type") == "succeeded":
                message = result.get("message") or {}
                found[index] = (message, Usage.from_anthropic(message.get("usage") or {}))
            else:
                found[index] = _item_error(result)
        return found


def _item_error(result: Mapping[str, Any]) -> tuple[int, bytes]:
    """A batch item that did not succeed (errored, canceled, expired), as an API error."""
    error = result.get("error")
    if isinstance(error, Mapping) and isinstance(error.get("error"), Mapping):
        kind = str(error["error"].get("type", "api_error"))
        return STATUS_OF_ERROR.get(kind, 500), dumps(dict(error))
    return 500, error_body("api_error", f"batch item {result.get('type', 'missing')}")
