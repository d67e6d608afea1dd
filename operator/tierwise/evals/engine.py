"""Run one request through a route of a router config with the router's own cascade.

No HTTP server in between: the eval builds the same ``Runtime`` the sidecar builds and hands
each item to the same ``Cascade`` (steps, caps, format instruction, cache breakpoints,
escalation signals, retries, fallback, pricing), so what the eval measures is what the
sidecar would do with that config.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp

from tierwise.router.cascade import Cascade, Exchange
from tierwise.router.jsonutil import loads
from tierwise.router.metrics import RouterMetrics
from tierwise.router.runtime import build_runtime
from tierwise.router.upstream import Upstream, UpstreamFailure
from tierwise.routerconfig import RouterConfig


@dataclass(frozen=True)
class Outcome:
    """What one request through a route gave: the final message, or an error."""

    message: Mapping[str, Any] | None
    tier: str
    cost: Decimal
    escalations: int
    seconds: float
    error: str | None = None


class CascadeEngine:
    """Requests through one config's routes; use as ``async with CascadeEngine(...)``."""

    def __init__(
        self, config: RouterConfig, env: Mapping[str, str], *, batch_prices: bool = False
    ) -> None:
        self.config = config
        self.batch_prices = batch_prices  # price the tokens at the tiers' batch prices
        self.metrics = RouterMetrics()  # its own registry: nothing global is touched
        self.runtime = build_runtime(config, env)
        self._session: aiohttp.ClientSession | None = None
        self._cascade: Cascade | None = None
        self.spent = Decimal(0)  # every call's cost, answered or not

    async def __aenter__(self) -> CascadeEngine:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
        )
        upstream = Upstream(self._session, lambda tier, kind: None, lambda tier: None)
        self._cascade = Cascade(upstream, self.metrics)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def run(self, route_name: str, body: dict[str, Any]) -> Outcome:
        assert self._cascade is not None, "use the engine in an async with block"
        route = self.config.routes_by_name[route_name]
        ex = Exchange(
            runtime=self.runtime, route=route, body=body, forwarded={}, batch=self.batch_prices
        )
        started = time.perf_counter()
        try:
            answer = await self._cascade.first_accepted(ex, route.steps, last_is_final=True)
        except UpstreamFailure as failure:
            self.spent += ex.cost
            return Outcome(
                None,
                ex.tier,
                ex.cost,
                ex.escalations,
                time.perf_counter() - started,
                error=_failure_text(failure),
            )
        assert answer is not None
        self.spent += ex.cost
        return Outcome(
            answer.message,
            answer.tier.name,
            ex.cost,
            ex.escalations,
            time.perf_counter() - started,
        )


def _failure_text(failure: UpstreamFailure) -> str:
    try:
        message = loads(failure.body).get("error", {}).get("message", "")
    except (ValueError, AttributeError):
        message = ""
    return f"{failure.kind} ({failure.status}){': ' + message if message else ''}"
