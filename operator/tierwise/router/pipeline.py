"""The one request pipeline shared by ``/v1/messages``, ``count_tokens`` and the batch proxy.

``Pipeline.handle`` wraps an endpoint's action: it reads the body (bounded, strict, large
bodies decoded off the event loop), picks the route, turns every failure into the API's
error shape with one classification, and records the request metric the same way on every
endpoint. Endpoints only say what is specific to them.

Outcomes (the ``outcome`` label): ``rejected`` the router refused the client's request
(4xx it answers itself: bad JSON, unknown route, missing field, too large); ``client_error``
the upstream refused it (4xx other than 429); ``upstream_error`` the upstream failed (429,
5xx, timeout, unreachable, a broken answer); ``cancelled``; ``internal_error`` a bug.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tierwise.memory import release_memory
from tierwise.pricing import format_usd
from tierwise.router.body import (
    BodyBudget,
    body_charge,
    decode_json_object_async,
    read_body,
)
from tierwise.router.cascade import Cascade, Exchange
from tierwise.router.errors import (
    RouterError,
    forget_frames,
    invalid_request,
    not_found,
    too_large,
    upstream_error_body,
)
from tierwise.router.metrics import RouterMetrics
from tierwise.router.request import check_model
from tierwise.router.routing import RouteNotFound, select_route
from tierwise.router.runtime import Runtime
from tierwise.router.upstream import Reply, Upstream, UpstreamFailure, forwarded_headers
from tierwise.routerconfig import ROUTE_HEADER, Route, Tier
from tierwise.routerconfig.sidecar import BODY_BYTES_IN_FLIGHT, BODY_WAIT_SECONDS

log = logging.getLogger("tierwise.router")

JSON_TYPE = "application/json"
# The official SDKs honour this header: when the router has already retried a call, the
# client's own retries would multiply the attempts (see "Attempt budget" in docs/router.md).
SHOULD_RETRY_HEADER = "x-should-retry"


@dataclass
class Services:
    """What serving a request needs besides the request: the current runtime and engines.

    ``runtime`` is read once per request, so a reload never changes a request midway.
    """

    current: Callable[[], Runtime]
    metrics: RouterMetrics
    upstream: Upstream | None = None
    cascade: Cascade | None = None


@dataclass
class Call:
    """One client request on its way through the pipeline."""

    request: web.Request
    endpoint: str
    runtime: Runtime
    started: float = field(default_factory=time.perf_counter)
    exchange: Exchange | None = None

    def begin(self, route: Route, body: dict[str, Any], **fields: Any) -> Exchange:
        """The request's ``Exchange`` on ``route`` (from here on, errors name the route)."""
        self.exchange = Exchange(
            runtime=self.runtime,
            route=route,
            body=body,
            forwarded=forwarded_headers(self.request.headers),
            started=self.started,
            endpoint=self.endpoint,
            **fields,
        )
        return self.exchange


Action = Callable[[Call], Awaitable[web.StreamResponse]]


# Where a request records the body bytes it holds of the router's ``BodyBudget``.
BODY_HELD = web.RequestKey("tierwise.body_held", int)
# After a body this large, freed memory is returned to the system (glibc would keep it).
RELEASE_AFTER_BYTES = 4 * 1024 * 1024


class Pipeline:
    def __init__(
        self,
        services: Services,
        max_body_bytes: int,
        body_bytes_in_flight: int | None = None,
        body_wait_seconds: float = BODY_WAIT_SECONDS,
    ) -> None:
        self.services = services
        self.max_body_bytes = max_body_bytes
        self.bodies = BodyBudget(max(body_bytes_in_flight or BODY_BYTES_IN_FLIGHT, max_body_bytes))
        self.body_wait_seconds = body_wait_seconds

    @property
    def metrics(self) -> RouterMetrics:
        return self.services.metrics

    async def handle(
        self, request: web.Request, endpoint: str, action: Action
    ) -> web.StreamResponse:
        """Run ``action`` for one request: errors in the API's shape, one metric."""
        call = Call(request, endpoint, self.services.current())
        self.metrics.in_flight.inc()
        outcome = "success"
        try:
            response = await action(call)
            if call.exchange is not None:
                outcome = call.exchange.outcome
            return response
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as exc:
            outcome, response = self.failure_response(exc, call.exchange)
            # The traceback's frames hold the request's body and upstream payload, in a
            # cycle with the exception: free them now, not at some later garbage collection.
            forget_frames(exc)
            return response
        finally:
            self._release_body(request)
            self.metrics.in_flight.dec()
            self._record(call, outcome)

    def _release_body(self, request: web.Request) -> None:
        """Give the request's body bytes back to the budget; after a large body, when no
        other body is in flight, give the freed memory back to the system too."""
        held = request.get(BODY_HELD, 0)
        self.bodies.release(held)
        if held >= RELEASE_AFTER_BYTES and self.bodies.free == self.bodies.limit:
            release_memory()

    def failure_response(self, exc: Exception, ex: Exchange | None) -> tuple[str, web.Response]:
        """The one classification of failures: (outcome label, response)."""
        if isinstance(exc, RecursionError):
            exc = invalid_request("The request is nested too deeply")
        if isinstance(exc, RouterError):
            return exc.outcome, error_response(exc, ex)
        if isinstance(exc, UpstreamFailure):
            return failure_outcome(exc), upstream_failure_response(exc, ex)
        log.exception("unexpected error serving a request")
        return "internal_error", error_response(RouterError(500, "internal router error"), ex)

    def _record(self, call: Call, outcome: str) -> None:
        ex = call.exchange
        if ex is not None:
            ex.outcome = outcome
        self.metrics.record_request(
            call.runtime.policy,
            ex.route.name if ex else "",
            ex.tier if ex else "",
            call.endpoint,
            outcome,
            time.perf_counter() - call.started,
        )

    async def read_json(self, request: web.Request) -> dict[str, Any]:
        """The body as a JSON object (see ``tierwise.router.body``), within the size limit
        and the router's budget of body bytes in flight (waiting for it, else a 429)."""
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            raise too_large(self.max_body_bytes)
        wanted = self.max_body_bytes if length is None else length
        held = await self.bodies.acquire(wanted, self.body_wait_seconds)
        if held is None:
            raise RouterError(
                429,
                f"the router is holding its limit of {self.bodies.limit // 2**20} MiB of "
                f"request bodies and this {wanted} byte body waited "
                f"{self.body_wait_seconds:g}s for room; retry shortly",
            )
        request[BODY_HELD] = request.get(BODY_HELD, 0) + held
        raw = await read_body(request.content, self.max_body_bytes)
        extra = min(body_charge(raw), self.bodies.limit) - held
        if extra > 0:  # more than its length (many small values), or no length was sent
            if not self.bodies.try_acquire(extra):
                raise RouterError(
                    429,
                    f"this request body decodes to more than the router has room for now "
                    f"(it holds at most {self.bodies.limit // 2**20} MiB of request bodies); "
                    "retry shortly",
                )
            request[BODY_HELD] += extra
        elif extra < 0 and length is None:  # reserved at the limit, read less: give it back
            self.bodies.release(-extra)
            request[BODY_HELD] += extra
        return await decode_json_object_async(raw)

    async def call_tier(
        self,
        call: Call,
        ex: Exchange,
        tier: Tier,
        path: str,
        payload: bytes | None,
        *,
        method: str = "POST",
        expect_json: bool = True,
    ) -> Reply:
        """One upstream call to ``tier`` with the exchange's forwarded headers and retries."""
        upstream = self.services.upstream
        assert upstream is not None, "the router app is not started"
        return await upstream.call(
            call.runtime.clients[tier.name],
            path,
            payload,
            ex.forwarded,
            call.runtime.config.retry,
            method=method,
            expect_json=expect_json,
        )

    def route(self, call: Call, model: object) -> Route:
        """The route of a request for ``model``, by header, model or default (else 404)."""
        check_model(model)  # a non-string model is the API's 400, never the default route
        try:
            return select_route(call.runtime.config, model, call.request.headers.get(ROUTE_HEADER))
        except RouteNotFound as exc:
            raise not_found(exc.message) from exc


def failure_outcome(failure: UpstreamFailure) -> str:
    return (
        "client_error"
        if 400 <= failure.status < 500 and failure.status != 429
        else "upstream_error"
    )


def response_headers(
    ex: Exchange | None, request_id: str | None = None, *, cost: bool = True
) -> dict[str, str]:
    """The ``x-tierwise-*`` headers: what the router did for this request."""
    headers: dict[str, str] = {}
    if ex is not None:
        headers["x-tierwise-route"] = ex.route.name
        headers["x-tierwise-tier"] = ex.tier
        headers["x-tierwise-escalations"] = str(ex.escalations)
        headers["x-tierwise-cache"] = ex.cache_status
        if cost:
            headers["x-tierwise-cost-usd"] = format_usd(ex.cost)
        if ex.trimmed_tokens:
            headers["x-tierwise-input-trimmed-tokens"] = str(ex.trimmed_tokens)
    if request_id:
        headers["request-id"] = request_id
    return headers


def error_response(error: RouterError, ex: Exchange | None = None) -> web.Response:
    return web.Response(
        status=error.status,
        body=error.body(),
        headers={**response_headers(ex), **error.headers},
        content_type=JSON_TYPE,
    )


def upstream_failure_response(failure: UpstreamFailure, ex: Exchange | None) -> web.Response:
    """The upstream's error as the client gets it, with what the router knows."""
    headers = response_headers(ex, failure.request_id)
    if failure.retry_after is not None:
        headers["retry-after"] = f"{failure.retry_after:g}"
    if failure.retried:
        headers[SHOULD_RETRY_HEADER] = "false"
    return web.Response(
        status=failure.status,
        body=upstream_error_body(failure.status, failure.body),
        headers=headers,
        content_type=JSON_TYPE,
    )


def json_response(body: bytes, ex: Exchange | None, request_id: str | None) -> web.Response:
    return web.Response(body=body, headers=response_headers(ex, request_id), content_type=JSON_TYPE)
