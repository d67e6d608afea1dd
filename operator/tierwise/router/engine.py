"""Run requests through a config's cascades without serving HTTP (evals, calibration, tools).

The same request path the router serves with (``router.request_path``): the request check,
the route's input budget (count, trim or refuse), routing, caps, format instructions,
effort/thinking, cache breakpoints, retries, fallback, hedging, escalation signals and exact
cost. No response cache and no streaming: every step is buffered, so each answer can be
checked.

    from tierwise.routerconfig import load
    from tierwise.router.engine import CascadeEngine

    async with CascadeEngine(load("router-config.json"), env=os.environ) as engine:
        result = await engine.run({"model": "tierwise/triage", "max_tokens": 256,
                                   "messages": [{"role": "user", "content": "..."}]})
        result.message, result.cost, result.escalations, result.steps, result.seconds
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp

from tierwise.router.cascade import Cascade, Exchange, StepRecord
from tierwise.router.errors import RouterError, not_found
from tierwise.router.metrics import RouterMetrics
from tierwise.router.request_path import RequestPath
from tierwise.router.routing import RouteNotFound, select_route
from tierwise.router.runtime import build_runtime
from tierwise.router.upstream import Upstream, UpstreamFailure, forwarded_headers
from tierwise.routerconfig import RouterConfig


@dataclass
class RunResult:
    """The outcome of one request: the final message, or the error the client would get."""

    route: str
    status: int  # 200, or the HTTP status of the error
    message: dict[str, Any] | None = None
    error: bytes | None = None  # the error body in the API's shape, when status != 200
    tier: str = ""  # the tier of the final answer (or of the failure)
    cost: Decimal = Decimal(0)  # USD, every step's answer included
    escalations: int = 0
    steps: list[StepRecord] = field(default_factory=list)  # per upstream answer, in order
    seconds: float = 0.0
    trimmed_tokens: int = 0  # prompt tokens the route's input budget removed

    @property
    def ok(self) -> bool:
        return self.status == 200

    @classmethod
    def of(
        cls,
        ex: Exchange,
        status: int,
        message: dict[str, Any] | None = None,
        error: bytes | None = None,
    ) -> RunResult:
        """The result of ``ex`` as it stands (cost, escalations, steps so far)."""
        return cls(
            route=ex.route.name,
            status=status,
            message=message,
            error=error,
            tier=ex.tier,
            cost=ex.cost,
            escalations=ex.escalations,
            steps=ex.steps,
            seconds=time.perf_counter() - ex.started,
            trimmed_tokens=ex.trimmed_tokens,
        )


class CascadeEngine:
    """A config's cascades against its upstreams. Use as an async context manager.

    ``env`` holds the tiers' API key variables (``os.environ`` by default); ``metrics``
    receives the same series the router records (a private registry by default);
    ``batch_prices`` prices every answer at the tiers' Message Batches prices (what the same
    requests would cost sent as a batch).
    """

    def __init__(
        self,
        config: RouterConfig,
        *,
        env: Mapping[str, str] | None = None,
        metrics: RouterMetrics | None = None,
        batch_prices: bool = False,
    ) -> None:
        self.config = config
        self.metrics = metrics or RouterMetrics()
        self.batch_prices = batch_prices  # price tokens at the tiers' batch prices
        self.runtime = build_runtime(config, os.environ if env is None else env)
        self._session: aiohttp.ClientSession | None = None
        self._path: RequestPath | None = None

    async def __aenter__(self) -> CascadeEngine:
        # No connection cap of its own: the caller bounds how many requests are in flight
        # (an eval at concurrency 200 must not queue in the pool and count it as latency).
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
        )
        upstream = Upstream(self._session, self._on_failure, self._on_retry)
        self._path = RequestPath(Cascade(upstream, self.metrics), self.metrics)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def run(
        self,
        body: dict[str, Any],
        *,
        route: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> RunResult:
        """``body`` (a Messages API request) through ``route`` (else chosen by its model)."""
        assert self._path is not None, "use CascadeEngine as an async context manager"
        started = time.perf_counter()
        headers = headers or {}
        try:
            chosen = select_route(self.config, body.get("model"), route)
        except RouteNotFound as exc:
            error = not_found(exc.message)
            return RunResult(route or "", error.status, error=error.body())
        ex = Exchange(
            runtime=self.runtime,
            route=chosen,
            body=body,
            forwarded=forwarded_headers(headers),
            started=started,
            batch=self.batch_prices,
        )
        try:
            answer = await self._path.run(ex)
            status, message, error = 200, answer.message, None
        except RouterError as exc:
            status, message, error = exc.status, None, exc.body()
        except UpstreamFailure as failure:
            status, message, error = failure.status, None, failure.body
        return RunResult.of(ex, status, message, error)

    def _on_failure(self, tier: str, kind: str) -> None:
        self.metrics.upstream_errors.labels(self.runtime.policy, tier, kind).inc()

    def _on_retry(self, tier: str) -> None:
        self.metrics.retries.labels(self.runtime.policy, tier).inc()
