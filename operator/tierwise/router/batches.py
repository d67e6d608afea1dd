"""Message Batches pass-through: ``/v1/messages/batches*`` to a route's batch tier.

A batch has no synchronous answer to check, so it cannot cascade: it goes to the route's
first (cheapest) step's tier, with that step's caps, format instruction and cache
breakpoints applied to every request, and is priced at the tier's batch prices when its
results are read. Batch ids are remembered (bounded) so later calls for a batch reach the
tier that holds it; without that memory the ``x-tierwise-route`` header, else the default
route, decides. ``results_url`` in batch objects is rewritten to point at the router, so
SDKs fetch results through it (with the tier's key) rather than upstream directly.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from tierwise.pricing import Usage
from tierwise.router.cascade import Exchange
from tierwise.router.errors import RouterError, invalid_request, not_found, upstream_error_body
from tierwise.router.jsonutil import dumps, loads
from tierwise.router.request import build_step_request
from tierwise.router.routing import RouteNotFound, select_route
from tierwise.router.upstream import UpstreamFailure, forwarded_headers
from tierwise.routerconfig import ROUTE_HEADER, PromptCaching, Route, RouterConfig, Tier

if TYPE_CHECKING:
    from tierwise.router.server import Router

BATCHES_PATH = "/v1/messages/batches"
JSON_TYPE = "application/json"
REMEMBERED_BATCHES = 10_000


def batch_route(config: RouterConfig, body: Mapping[str, Any], header: str | None) -> Route:
    """The one route of a batch: by header, else by the models of its requests."""
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise invalid_request("requests: a batch needs a non-empty list of requests")
    routes: dict[str, Route] = {}
    for index, item in enumerate(requests):
        params = item.get("params") if isinstance(item, Mapping) else None
        if not isinstance(params, Mapping):
            raise invalid_request(f"requests.{index}.params: must be an object")
        try:
            route = select_route(config, params.get("model"), header)
        except RouteNotFound as exc:
            raise not_found(exc.message) from exc
        routes[route.name] = route
    if len(routes) > 1:
        raise invalid_request(
            f"a batch goes to one route; its requests select {', '.join(sorted(routes))}"
        )
    return next(iter(routes.values()))


def rewrite_batch_requests(
    body: Mapping[str, Any], route: Route, tier: Tier, caching: PromptCaching
) -> dict[str, Any]:
    """Every request's params as the route's first step sends them to ``tier``."""
    step = route.steps[0]
    return {
        **body,
        "requests": [
            {
                **item,
                "params": build_step_request(
                    item["params"], route, step, tier, caching, stream=False
                ),
            }
            for item in body["requests"]
        ],
    }


def rewrite_results_urls(document: Any, origin: str) -> Any:
    """Point ``results_url`` of a batch (or of each batch in a list) at the router."""

    def fix(batch: Any) -> Any:
        if isinstance(batch, dict) and isinstance(batch.get("results_url"), str):
            parts = urlsplit(batch["results_url"])
            batch = {**batch, "results_url": origin + parts.path}
        return batch

    if isinstance(document, dict) and isinstance(document.get("data"), list):
        return {**document, "data": [fix(b) for b in document["data"]]}
    return fix(document)


def succeeded_usages(jsonl: bytes) -> list[Usage]:
    """Usage of every succeeded result in a results file."""
    usages = []
    for line in jsonl.splitlines():
        if not line.strip():
            continue
        try:
            result = loads(line).get("result") or {}
        except (ValueError, AttributeError):
            continue
        if result.get("type") == "succeeded":
            usages.append(Usage.from_anthropic((result.get("message") or {}).get("usage") or {}))
    return usages


@dataclass
class _Known:
    route: str
    tier: str
    accounted: bool = False


class BatchProxy:
    """The batch endpoints of one router."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self._known: OrderedDict[str, _Known] = OrderedDict()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(BATCHES_PATH, self.create)
        app.router.add_get(BATCHES_PATH, self.listing)
        app.router.add_get(BATCHES_PATH + "/{id}", self.by_id)
        app.router.add_delete(BATCHES_PATH + "/{id}", self.by_id)
        app.router.add_post(BATCHES_PATH + "/{id}/cancel", self.by_id)
        app.router.add_get(BATCHES_PATH + "/{id}/results", self.results)

    def _remember(self, batch_id: str, route: str, tier: str) -> None:
        self._known[batch_id] = _Known(route, tier)
        self._known.move_to_end(batch_id)
        while len(self._known) > REMEMBERED_BATCHES:
            self._known.popitem(last=False)

    def _route_for(self, request: web.Request, batch_id: str | None) -> tuple[Route, Tier]:
        config = self.router.config
        known = self._known.get(batch_id) if batch_id else None
        if (
            known is not None
            and known.route in config.routes_by_name
            and known.tier in config.tiers
        ):
            route = config.routes_by_name[known.route]
            return route, config.tiers[known.tier]
        header = request.headers.get(ROUTE_HEADER)
        name = header or config.default_route
        if name is None or name not in config.routes_by_name:
            raise not_found(
                "cannot tell which route holds this batch: send x-tierwise-route"
                if name is None
                else f"route {name!r} does not exist"
            )
        route = config.routes_by_name[name]
        return route, config.tiers[route.steps[0].tier]

    async def create(self, request: web.Request) -> web.StreamResponse:
        async def action() -> web.Response:
            body = await self.router._read_json(request)
            config = self.router.config
            route = batch_route(config, body, request.headers.get(ROUTE_HEADER))
            tier = config.tiers[route.steps[0].tier]
            payload = rewrite_batch_requests(body, route, tier, config.cache.prompt_caching)
            reply = await self._call(request, route, tier, BATCHES_PATH, dumps(payload))
            document = loads(reply.body)
            if isinstance(document, dict) and isinstance(document.get("id"), str):
                self._remember(document["id"], route.name, tier.name)
            return self._json(request, document, route, tier, reply.request_id)

        return await self._guard(request, action)

    async def listing(self, request: web.Request) -> web.StreamResponse:
        async def action() -> web.Response:
            route, tier = self._route_for(request, None)
            path = BATCHES_PATH + (f"?{request.query_string}" if request.query_string else "")
            reply = await self._call(request, route, tier, path, None, method="GET")
            return self._json(request, loads(reply.body), route, tier, reply.request_id)

        return await self._guard(request, action)

    async def by_id(self, request: web.Request) -> web.StreamResponse:
        async def action() -> web.Response:
            batch_id = request.match_info["id"]
            route, tier = self._route_for(request, batch_id)
            reply = await self._call(
                request,
                route,
                tier,
                request.path,
                None if request.method != "POST" else b"",
                method=request.method,
            )
            return self._json(request, loads(reply.body), route, tier, reply.request_id)

        return await self._guard(request, action)

    async def results(self, request: web.Request) -> web.StreamResponse:
        async def action() -> web.Response:
            batch_id = request.match_info["id"]
            route, tier = self._route_for(request, batch_id)
            reply = await self._call(request, route, tier, request.path, None, method="GET")
            self._account(batch_id, route, tier, reply.body)
            return web.Response(
                body=reply.body,
                content_type=reply.content_type,
                headers=_headers(route, tier, reply.request_id),
            )

        return await self._guard(request, action)

    def _account(self, batch_id: str, route: Route, tier: Tier, jsonl: bytes) -> None:
        """Batch-priced cost of the results, counted once per batch however often read."""
        known = self._known.get(batch_id)
        if known is None:
            known = _Known(route.name, tier.name)
            self._known[batch_id] = known
        if known.accounted:
            return
        known.accounted = True
        runtime = self.router._runtime
        cascade = self.router._cascade
        assert cascade is not None
        ex = Exchange(runtime=runtime, route=route, body={}, forwarded={}, batch=True)
        for usage in succeeded_usages(jsonl):
            cascade.account(ex, tier, usage)
            cascade.account_counterfactual(ex, usage)

    async def _call(
        self,
        request: web.Request,
        route: Route,
        tier: Tier,
        path: str,
        payload: bytes | None,
        *,
        method: str = "POST",
    ) -> Any:
        upstream = self.router._upstream
        assert upstream is not None
        runtime = self.router._runtime
        return await upstream.call(
            runtime.clients[tier.name],
            path,
            payload,
            forwarded_headers(request.headers),
            runtime.config.retry,
            method=method,
        )

    def _json(
        self, request: web.Request, document: Any, route: Route, tier: Tier, request_id: str | None
    ) -> web.Response:
        origin = f"{request.scheme}://{request.host}"
        return web.Response(
            body=dumps(rewrite_results_urls(document, origin)),
            content_type=JSON_TYPE,
            headers=_headers(route, tier, request_id),
        )

    async def _guard(self, request: web.Request, action: Any) -> web.StreamResponse:
        """Errors in the API's shape, and the request metric, around one batch call."""
        started = time.perf_counter()
        outcome, route, tier = "success", "", ""
        try:
            response: web.Response = await action()
            route = response.headers.get("x-tierwise-route", "")
            tier = response.headers.get("x-tierwise-tier", "")
            return response
        except RouterError as exc:
            outcome = exc.outcome
            return web.Response(status=exc.status, body=exc.body(), content_type=JSON_TYPE)
        except UpstreamFailure as failure:
            outcome = "client_error" if failure.status < 500 else "upstream_error"
            return web.Response(
                status=failure.status,
                content_type=JSON_TYPE,
                body=upstream_error_body(failure.status, failure.body),
            )
        finally:
            self.router.metrics.record_request(
                self.router._runtime.policy,
                route,
                tier,
                "batches",
                outcome,
                time.perf_counter() - started,
            )


def _headers(route: Route, tier: Tier, request_id: str | None) -> dict[str, str]:
    headers = {"x-tierwise-route": route.name, "x-tierwise-tier": tier.name}
    if request_id:
        headers["request-id"] = request_id
    return headers
