"""Replay items through a route over the Message Batches API, at the tiers' batch prices.

For ``spec.evaluation.useBatchAPI`` (only when latency is not gated): each cascade step is one
batch holding the items still unanswered. The requests are the router's own step requests
(``build_step_request``: model, caps, format instruction, cache breakpoints), an answer is
accepted or escalated by the router's own signals (``escalation_reason``), the calls go
through the router's ``Upstream`` (retries, keys), and the tokens are priced by the same cost
model at batch prices. What this does not reproduce is per-request latency (a batch answers
when the batch ends) and the fallback tier on overload (a failed item is an error).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import aiohttp

from tierwise.evals.engine import Outcome
from tierwise.pricing import Usage, cost_usd
from tierwise.router.escalation import escalation_reason
from tierwise.router.jsonutil import dumps, loads
from tierwise.router.request import build_step_request
from tierwise.router.runtime import build_runtime
from tierwise.router.upstream import Upstream, UpstreamFailure
from tierwise.routerconfig import RouterConfig, Step

BATCHES_PATH = "/v1/messages/batches"
MAX_BATCH_REQUESTS = 100_000  # the API's limit per batch


class BatchCascadeEngine:
    """Whole routes of items over batches; use as ``async with BatchCascadeEngine(...)``."""

    def __init__(
        self, config: RouterConfig, env: Mapping[str, str], *, poll_seconds: float = 5.0
    ) -> None:
        self.config = config
        self.runtime = build_runtime(config, env)
        self.poll_seconds = poll_seconds
        self._session: aiohttp.ClientSession | None = None
        self._upstream: Upstream | None = None
        self.spent = Decimal(0)

    async def __aenter__(self) -> BatchCascadeEngine:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self._upstream = Upstream(self._session, lambda tier, kind: None, lambda tier: None)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def run_all(self, route_name: str, bodies: Sequence[dict[str, Any]]) -> list[Outcome]:
        route = self.config.routes_by_name[route_name]
        started = time.perf_counter()
        messages: dict[int, Mapping[str, Any]] = {}
        errors: dict[int, str] = {}
        tiers: dict[int, str] = {}
        costs = {i: Decimal(0) for i in range(len(bodies))}
        escalations = dict.fromkeys(range(len(bodies)), 0)
        pending = list(range(len(bodies)))
        for index, step in enumerate(route.steps):
            if not pending:
                break
            last = index == len(route.steps) - 1
            answered = await self._step(route_name, step, {i: bodies[i] for i in pending})
            escalated = []
            for i in pending:
                tiers[i] = step.tier
                result = answered.get(i)
                if isinstance(result, str):
                    errors[i] = result
                    continue
                assert result is not None
                message, usage = result
                cost = cost_usd(usage, self.config.tiers[step.tier].prices, batch=True)
                costs[i] += cost
                self.spent += cost
                if last or escalation_reason(step.escalate_when, message) is None:
                    messages[i] = message
                else:
                    escalations[i] += 1
                    escalated.append(i)
            pending = escalated
        seconds = time.perf_counter() - started
        return [
            Outcome(
                messages.get(i),
                tiers.get(i, ""),
                costs[i],
                escalations[i],
                seconds,
                error=None if i in messages else errors.get(i, "no batch result"),
            )
            for i in range(len(bodies))
        ]

    async def _step(
        self, route_name: str, step: Step, bodies: Mapping[int, dict[str, Any]]
    ) -> dict[int, tuple[Mapping[str, Any], Usage] | str]:
        """One batch for ``step``: each item's (message, usage), or an error text."""
        assert self._upstream is not None
        route = self.config.routes_by_name[route_name]
        tier = self.config.tiers[step.tier]
        client = self.runtime.clients[tier.name]
        caching = self.config.cache.prompt_caching
        found: dict[int, tuple[Mapping[str, Any], Usage] | str] = {}
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
                found.update({i: f"batch {failure.kind} ({failure.status})" for i, _ in chunk})
        return found

    async def _one_batch(
        self, client: Any, requests: list[dict[str, Any]]
    ) -> dict[int, tuple[Mapping[str, Any], Usage] | str]:
        assert self._upstream is not None
        retry = self.config.retry
        created = loads(
            (
                await self._upstream.call(
                    client, BATCHES_PATH, dumps({"requests": requests}), {}, retry
                )
            ).body
        )
        batch_id = created["id"]
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
        found: dict[int, tuple[Mapping[str, Any], Usage] | str] = {}
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
                error = (result.get("error") or {}).get("error") or result.get("error") or {}
                detail = error.get("message") if isinstance(error, Mapping) else None
                found[index] = f"batch item {result.get('type', 'missing')}" + (
                    f": {detail}" if detail else ""
                )
        return found
