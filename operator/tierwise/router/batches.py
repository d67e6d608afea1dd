"""Message Batches: ``/v1/messages/batches*``, passed through or run as a cascade.

A batch for a single-step route goes to that step's tier, with the step's caps, format
instruction and cache breakpoints applied to every request, and is priced at the tier's
batch prices when its results are read. A batch for a multi-step route is a batch cascade
(``batch_cascade``): one batch per step, escalated items only, one batch to the client. Batch ids are remembered (bounded) so later calls for a batch reach the
tier that holds it; without that memory the ``x-tierwise-route`` header, else the default
route, decides. ``results_url`` in batch objects is rewritten to point at the router, so
SDKs fetch results through it (with the tier's key) rather than upstream directly.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from tierwise.pricing import Usage
from tierwise.router.batch_cascade import BatchCascades, BatchStateStore
from tierwise.router.cascade import Exchange
from tierwise.router.errors import RouterError, invalid_request, not_found
from tierwise.router.jsonutil import dumps, loads
from tierwise.router.pipeline import Action, Call, Pipeline, json_response, response_headers
from tierwise.router.request import build_step_request, check_messages_request
from tierwise.router.routing import RouteNotFound, select_route
from tierwise.router.upstream import BATCH_ID, BATCHES_PATH
from tierwise.routerconfig import ROUTE_HEADER, PromptCaching, Route, RouterConfig, Tier

# Batch ids are opaque tokens (`msgbatch_…`); anything else (`..`, `/`, `%2F`, a query)
# never reaches an upstream URL.
REMEMBERED_BATCHES = 10_000  # ids whose route and tier are remembered (oldest forgotten first)


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
            check_messages_request(params)
        except RouterError as exc:
            raise invalid_request(f"requests.{index}.params.{exc.message}") from exc
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


def batch_path(batch_id: str, action: str = "") -> str:
    """The upstream path of one batch, from the fixed prefix and a validated id only."""
    if not BATCH_ID.fullmatch(batch_id):
        raise not_found(f"batch {batch_id[:80]!r} does not exist (not a valid batch id)")
    return f"{BATCHES_PATH}/{batch_id}{action}"


class BatchProxy:
    """The batch endpoints of one router, served through the shared request pipeline."""

    def __init__(self, pipeline: Pipeline, cascades: BatchCascades | None = None) -> None:
        self.pipeline = pipeline
        self.cascades = cascades or BatchCascades(pipeline, BatchStateStore(None))
        self._known: OrderedDict[str, _Known] = OrderedDict()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(BATCHES_PATH, self._handler(self.create))
        app.router.add_get(BATCHES_PATH, self._handler(self.listing))
        app.router.add_get(BATCHES_PATH + "/{id}", self._handler(self.retrieve))
        app.router.add_delete(BATCHES_PATH + "/{id}", self._handler(self.delete))
        app.router.add_post(BATCHES_PATH + "/{id}/cancel", self._handler(self.cancel))
        app.router.add_get(BATCHES_PATH + "/{id}/results", self._handler(self.results))

    def _handler(self, action: Action) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.pipeline.handle(request, "batches", action)

        return handle

    def remembered(self) -> int:
        return len(self._known)

    def _remember(self, batch_id: str, route: str, tier: str) -> _Known:
        known = self._known.get(batch_id) or _Known(route, tier)
        self._known[batch_id] = known
        self._known.move_to_end(batch_id)
        while len(self._known) > REMEMBERED_BATCHES:
            self._known.popitem(last=False)
        return known

    def _begin(self, call: Call, batch_id: str | None) -> tuple[Exchange, Tier]:
        """The route and tier holding a batch: remembered, else header, else default."""
        config = call.runtime.config
        known = self._known.get(batch_id) if batch_id else None
        if (
            known is not None
            and known.route in config.routes_by_name
            and known.tier in config.tiers
        ):
            route, tier = config.routes_by_name[known.route], config.tiers[known.tier]
        else:
            header = call.request.headers.get(ROUTE_HEADER)
            name = header or config.default_route
            if name is None or name not in config.routes_by_name:
                raise not_found(
                    "cannot tell which route holds this batch: send x-tierwise-route"
                    if name is None
                    else f"route {name!r} does not exist"
                )
            route = config.routes_by_name[name]
            tier = config.tiers[route.steps[0].tier]
        ex = call.begin(route, {}, batch=True)
        ex.tier = tier.name
        return ex, tier

    async def create(self, call: Call) -> web.StreamResponse:
        body = await self.pipeline.read_json(call.request)
        config = call.runtime.config
        route = batch_route(config, body, call.request.headers.get(ROUTE_HEADER))
        if len(route.steps) > 1:  # a cascade: the router runs it step by step
            return await self.cascades.create(call, body, route)
        ex = call.begin(route, {}, batch=True)
        tier = config.tiers[route.steps[0].tier]
        ex.tier = tier.name
        payload = rewrite_batch_requests(body, route, tier, config.cache.prompt_caching)
        reply = await self.pipeline.call_tier(call, ex, tier, BATCHES_PATH, dumps(payload))
        document = reply.document
        if isinstance(document.get("id"), str) and BATCH_ID.fullmatch(document["id"]):
            self._remember(document["id"], route.name, tier.name)
        return self._json(call, ex, document, reply.request_id)

    async def listing(self, call: Call) -> web.StreamResponse:
        ex, tier = self._begin(call, None)
        query = call.request.query_string
        path = BATCHES_PATH + (f"?{urlencode(list(call.request.query.items()))}" if query else "")
        reply = await self.pipeline.call_tier(call, ex, tier, path, None, method="GET")
        document = self.cascades.merge_listing(call, reply.document)
        return self._json(call, ex, document, reply.request_id)

    async def retrieve(self, call: Call) -> web.StreamResponse:
        return await self._by_id(call, "", "GET")

    async def delete(self, call: Call) -> web.StreamResponse:
        return await self._by_id(call, "", "DELETE")

    async def cancel(self, call: Call) -> web.StreamResponse:
        return await self._by_id(call, "/cancel", "POST")

    async def _by_id(self, call: Call, action: str, method: str) -> web.StreamResponse:
        batch_id = call.request.match_info["id"]
        if self.cascades.handles(batch_id):
            if method == "GET":
                return await self.cascades.retrieve(call, batch_id)
            if method == "DELETE":
                return await self.cascades.delete(call, batch_id)
            return await self.cascades.cancel(call, batch_id)
        path = batch_path(batch_id, action)
        ex, tier = self._begin(call, batch_id)
        payload = b"" if method == "POST" else None
        reply = await self.pipeline.call_tier(call, ex, tier, path, payload, method=method)
        return self._json(call, ex, reply.document, reply.request_id)

    async def results(self, call: Call) -> web.StreamResponse:
        batch_id = call.request.match_info["id"]
        if self.cascades.handles(batch_id):
            return await self.cascades.results(call, batch_id)
        path = batch_path(batch_id, "/results")
        ex, tier = self._begin(call, batch_id)
        reply = await self.pipeline.call_tier(
            call, ex, tier, path, None, method="GET", expect_json=False
        )
        self._account(batch_id, ex, tier, reply.body)
        return web.Response(
            body=reply.body,
            content_type=reply.content_type,
            headers=response_headers(ex, reply.request_id),
        )

    def _account(self, batch_id: str, ex: Exchange, tier: Tier, jsonl: bytes) -> None:
        """Batch-priced cost of the results, counted once per batch however often read."""
        known = self._remember(batch_id, ex.route.name, tier.name)
        if known.accounted:
            return
        known.accounted = True
        cascade = self.pipeline.services.cascade
        assert cascade is not None
        for usage in succeeded_usages(jsonl):
            cascade.account(ex, tier, usage)
            cascade.account_counterfactual(ex, usage)

    def _json(
        self, call: Call, ex: Exchange, document: Any, request_id: str | None
    ) -> web.Response:
        origin = f"{call.request.scheme}://{call.request.host}"
        return json_response(dumps(rewrite_results_urls(document, origin)), ex, request_id)
