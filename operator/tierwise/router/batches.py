"""Message Batches: ``/v1/messages/batches*``, passed through or run as a cascade.

A batch belongs to the caller that created it: its owner is the caller's identity (a digest
of its key, the notion the response cache uses; never the key), and every other caller gets
the API's 404 for it and never sees it listed. The body is received to disk (up to the API's
own limit, ``MAX_BATCH_BYTES``) and checked item by item, never held whole in memory.

A batch for a single-step route goes to that step's tier, with the step's caps, format
instruction and cache breakpoints applied to every request, and is priced at the tier's
batch prices the first time its results are read (recorded on disk, so a restart does not
count it again). A batch for a multi-step route is a batch cascade (``batch_cascade``): one
batch per step, escalated items only, one batch to the client. ``results_url`` in batch
objects points at the router, so SDKs fetch results through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from tierwise.pricing import Usage
from tierwise.router.batch_cascade import (
    FINAL_TYPES,
    MAX_BATCH_BYTES,
    BatchCascadeRun,
    BatchStore,
    Entry,
    load_state,
    new_cascade_id,
    new_state,
    now_iso,
    save_state,
    store_requests,
    write_step_payload,
)
from tierwise.router.cascade import Exchange, route_mixes_models
from tierwise.router.errors import RouterError, invalid_request, not_found, too_large
from tierwise.router.jsonutil import dumps, loads
from tierwise.router.pipeline import Action, Call, Pipeline, json_response, response_headers
from tierwise.router.request import build_step_request, check_messages_request
from tierwise.router.response_cache import caller_identity
from tierwise.router.routing import RouteNotFound, select_route
from tierwise.router.runtime import Runtime
from tierwise.router.upstream import (
    BATCH_ID,
    BATCHES_PATH,
    Reply,
    UpstreamFailure,
    created_batch_id,
    forwarded_headers,
)
from tierwise.routerconfig import ROUTE_HEADER, Route, Tier

log = logging.getLogger("tierwise.router")

CHUNK = 1 << 20
MAX_PAGE = 1000


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


def rewrite_results_url(batch: Any, origin: str) -> Any:
    """Point a batch's ``results_url`` at the router."""
    if isinstance(batch, dict) and isinstance(batch.get("results_url"), str):
        parts = urlsplit(batch["results_url"])
        batch = {**batch, "results_url": origin + parts.path}
    return batch


def batch_not_found(batch_id: str) -> RouterError:
    return not_found(f"message_batch_id: {batch_id[:80]} not found")


def page_of(entries: list[Entry], query: Mapping[str, str]) -> tuple[list[Entry], bool]:
    """One page of a newest-first listing, as the API pages (``limit``, ``after_id``,
    ``before_id``); only names are looked at."""
    raw = query.get("limit", "20")
    try:
        limit = int(raw)
    except ValueError:
        raise invalid_request("limit: Input should be a valid integer") from None
    if not 1 <= limit <= MAX_PAGE:
        raise invalid_request(f"limit: Input should be between 1 and {MAX_PAGE}")
    ids = [e.id for e in entries]
    after, before = query.get("after_id"), query.get("before_id")
    if after is not None and before is not None:
        raise invalid_request("after_id, before_id: give at most one of them")
    if after is not None:
        start = ids.index(after) + 1 if after in ids else len(ids)
        return entries[start : start + limit], len(entries) > start + limit
    if before is not None:
        end = ids.index(before) if before in ids else 0
        return entries[max(0, end - limit) : end], end - limit > 0
    return entries[:limit], len(entries) > limit


class BatchProxy:
    """The batch endpoints of one router, served through the shared request pipeline."""

    def __init__(self, pipeline: Pipeline, store: BatchStore) -> None:
        self.pipeline = pipeline
        self.store = store
        self._locks: dict[str, asyncio.Lock] = {}
        self._running: dict[str, asyncio.Task[dict[str, Any]]] = {}

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

    # -- create -----------------------------------------------------------------------------

    async def create(self, call: Call) -> web.StreamResponse:
        owner = caller_identity(call.request.headers)
        directory = self.store.incoming()
        try:
            route, count = await self._receive(call, directory)
            ex = call.begin(route, {}, batch=True)
            if route.input_budget is not None:
                raise invalid_request(
                    f"route {route.name!r} has an input budget (inputBudget), which the router "
                    "cannot apply to the items of a batch: send these requests to "
                    "/v1/messages, or batch them on a route without an input budget"
                )
            if len(route.steps) > 1:
                return await self._create_cascade(call, ex, owner, directory, count)
            return await self._create_passthrough(call, ex, owner, directory)
        finally:
            if directory.exists():
                shutil.rmtree(directory, ignore_errors=True)

    async def _receive(self, call: Call, directory: Path) -> tuple[Route, int]:
        """The body to disk (within the API's limit), then its items checked into
        ``requests.jsonl``; returns the batch's route and how many requests it holds."""
        request = call.request
        if request.content_length is not None and request.content_length > MAX_BATCH_BYTES:
            raise too_large(MAX_BATCH_BYTES)
        # A body takes twice its size while it is checked (the body, then the requests).
        free = await asyncio.to_thread(self.store.make_room, 2 * (request.content_length or 0))
        body = directory / "body.json"
        received = 0
        with open(body, "wb") as out:
            async for chunk in request.content.iter_chunked(CHUNK):
                received += len(chunk)
                if received > MAX_BATCH_BYTES:
                    raise too_large(MAX_BATCH_BYTES)
                if 2 * received > free:
                    raise self._storage_full(received)
                out.write(chunk)
        config = call.runtime.config
        header = request.headers.get(ROUTE_HEADER)

        def check(index: int, params: Mapping[str, Any]) -> str:
            try:
                check_messages_request(params)
            except RouterError as exc:
                raise invalid_request(f"requests.{index}.params.{exc.message}") from exc
            try:
                return select_route(config, params.get("model"), header).name
            except RouteNotFound as exc:
                raise not_found(exc.message) from exc

        try:
            name, count = await asyncio.to_thread(store_requests, body, directory, check)
        except (UnicodeDecodeError, RecursionError):
            raise invalid_request("The request body is not valid JSON") from None
        finally:
            body.unlink(missing_ok=True)
        return config.routes_by_name[name], count

    def _storage_full(self, size: int) -> RouterError:
        limit = self.store.max_bytes
        if 2 * size > limit:
            return RouterError(
                413,
                f"a batch body of {size} bytes needs twice that of the router's batch storage, "
                f"which holds {limit} bytes (--batch-state-max-bytes)",
            )
        return RouterError(
            429,
            f"the router's batch storage ({limit} bytes, --batch-state-max-bytes) is held by "
            "batches still in progress: try again when some have ended, or delete ended ones",
        )

    async def _create_cascade(
        self, call: Call, ex: Exchange, owner: str, directory: Path, count: int
    ) -> web.StreamResponse:
        batch_id = new_cascade_id()
        headers = forwarded_headers(call.request.headers)
        entry = self.store.add(owner, batch_id, directory)
        save_state(entry, new_state(batch_id, ex.route.name, count, headers))
        state = await self._advanced(call, entry)
        ex.tier = ex.route.steps[0].tier
        return json_response(dumps(self._cascade_object(call, state)), ex, None)

    async def _create_passthrough(
        self, call: Call, ex: Exchange, owner: str, directory: Path
    ) -> web.StreamResponse:
        config = call.runtime.config
        route = ex.route
        step = route.steps[0]
        tier = config.tiers[step.tier]
        ex.tier = tier.name
        caching = config.cache.prompt_caching
        mixed = route_mixes_models(config, route)
        provisional = Entry(directory, "", 0)
        payload = await asyncio.to_thread(
            write_step_payload,
            provisional,
            0,
            None,
            lambda params: build_step_request(
                params, route, step, tier, caching, stream=False, mixed_models=mixed
            ),
        )
        reply = await self.pipeline.call_tier(call, ex, tier, BATCHES_PATH, payload)
        batch_id = created_batch_id(reply.document, tier.name)
        payload.unlink(missing_ok=True)
        (directory / "requests.jsonl").unlink(missing_ok=True)
        entry = self.store.add(owner, batch_id, directory)
        record = {"route": route.name, "tier": tier.name, "accounted": False}
        save_state(entry, {**record, "createdAt": now_iso()})
        self.store.claim(batch_id, entry)
        return self._json(call, ex, reply.document, reply.request_id)

    # -- list -------------------------------------------------------------------------------

    async def listing(self, call: Call) -> web.StreamResponse:
        owner = caller_identity(call.request.headers)
        entries, has_more = page_of(self.store.entries(owner), call.request.query)
        data = []
        for entry in entries:
            batch = await self._object(call, entry)
            if batch is not None:
                data.append(batch)
        document = {
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
        return json_response(dumps(document), None, None)

    async def _object(self, call: Call, entry: Entry) -> dict[str, Any] | None:
        """One batch of a listing as it stands (a cascade is not moved forward here)."""
        if not entry.passthrough:
            return self._cascade_object(call, load_state(entry))
        record = load_state(entry)
        tier = call.runtime.config.tiers.get(record["tier"])
        if tier is None:
            return None
        try:
            reply = await self._call_upstream(call, None, tier, f"{BATCHES_PATH}/{entry.id}")
        except UpstreamFailure as failure:
            if failure.status == 404:
                return None
            raise
        return rewrite_results_url(reply.document, self._origin(call))

    # -- one batch --------------------------------------------------------------------------

    def _entry(self, call: Call) -> Entry:
        batch_id = call.request.match_info["id"]
        if not BATCH_ID.fullmatch(batch_id):
            raise batch_not_found(batch_id)
        entry = self.store.find(caller_identity(call.request.headers), batch_id)
        if entry is None:
            raise batch_not_found(batch_id)
        return entry

    def _exchange(self, call: Call, route_name: str, tier: str | None) -> Exchange | None:
        route = call.runtime.config.routes_by_name.get(route_name)
        if route is None:
            return None
        ex = call.begin(route, {}, batch=True)
        ex.tier = tier or route.steps[0].tier
        return ex

    async def retrieve(self, call: Call) -> web.StreamResponse:
        entry = self._entry(call)
        if entry.passthrough:
            return await self._passthrough(call, entry, "", "GET")
        state = await self._advanced(call, entry)
        ex = self._exchange(call, state["route"], state["steps"][-1].get("tier"))
        return json_response(dumps(self._cascade_object(call, state)), ex, None)

    async def cancel(self, call: Call) -> web.StreamResponse:
        entry = self._entry(call)
        if entry.passthrough:
            return await self._passthrough(call, entry, "/cancel", "POST")
        async with self._lock(entry.id):
            state = load_state(entry)
            ex = self._exchange(call, state["route"], state["steps"][-1].get("tier"))
            if state["endedAt"] is None and state["cancelInitiatedAt"] is None:
                state["cancelInitiatedAt"] = now_iso()
                save_state(entry, state)  # recorded before the upstream call
                await self._cancel_upstream(call, state)
        return json_response(dumps(self._cascade_object(call, state)), ex, None)

    async def _cancel_upstream(self, call: Call, state: Mapping[str, Any]) -> None:
        current = state["steps"][-1]
        tier = call.runtime.config.tiers.get(current.get("tier") or "")
        if current.get("batch") is None or tier is None:
            return  # nothing upstream yet: the next poll ends the items canceled
        path = f"{BATCHES_PATH}/{current['batch']}/cancel"
        try:
            await self._call_upstream(call, state, tier, path, b"", method="POST")
        except UpstreamFailure as failure:
            log.warning("cancelling upstream batch %s failed: %s", current["batch"], failure)

    async def delete(self, call: Call) -> web.StreamResponse:
        entry = self._entry(call)
        if entry.passthrough:
            response = await self._passthrough(call, entry, "", "DELETE")
            self.store.remove(entry)
            return response
        async with self._lock(entry.id):
            state = load_state(entry)
            ex = self._exchange(call, state["route"], state["steps"][-1].get("tier"))
            if state["endedAt"] is None:
                raise invalid_request(
                    f"batch {entry.id} is still {self._status(state)}: cancel it and wait for "
                    "it to end before deleting it"
                )
            self.store.remove(entry)
        return json_response(dumps({"id": entry.id, "type": "message_batch_deleted"}), ex, None)

    async def results(self, call: Call) -> web.StreamResponse:
        entry = self._entry(call)
        if entry.passthrough:
            return await self._passthrough_results(call, entry)
        state = await self._advanced(call, entry)
        ex = self._exchange(call, state["route"], state["steps"][-1].get("tier"))
        if state["endedAt"] is None:
            raise invalid_request(
                f"batch {entry.id} has not ended yet (processing_status "
                f"{self._status(state)!r}); results are available once it has"
            )
        if ex is not None:
            ex.cost = Decimal(state["costUsd"])
            ex.escalations = state["escalations"]
        headers = response_headers(ex, None)
        headers["Content-Type"] = "application/binary"
        return web.FileResponse(entry.results_path, headers=headers)

    # -- pass-through batches ---------------------------------------------------------------

    async def _passthrough(
        self, call: Call, entry: Entry, action: str, method: str
    ) -> web.StreamResponse:
        record = load_state(entry)
        tier = self._record_tier(call, record, entry.id)
        ex = self._exchange(call, record["route"], tier.name)
        payload = b"" if method == "POST" else None
        path = f"{BATCHES_PATH}/{entry.id}{action}"
        reply = await self._call_upstream(call, None, tier, path, payload, method=method)
        return self._json(call, ex, reply.document, reply.request_id)

    async def _passthrough_results(self, call: Call, entry: Entry) -> web.StreamResponse:
        record = load_state(entry)
        tier = self._record_tier(call, record, entry.id)
        ex = self._exchange(call, record["route"], tier.name)
        path = f"{BATCHES_PATH}/{entry.id}/results"
        reply = await self._call_upstream(call, None, tier, path, None, expect_json=False)
        if not record["accounted"]:
            # Counted once per batch however often (and by however many processes) read:
            # the record says so on disk before the metrics are counted.
            record["accounted"] = True
            save_state(entry, record)
            cascade = self.pipeline.services.cascade
            assert cascade is not None
            if ex is not None:
                for usage in succeeded_usages(reply.body):
                    cascade.account(ex, tier, usage)
                    cascade.account_counterfactual(ex, usage)
        return web.Response(
            body=reply.body,
            content_type=reply.content_type,
            headers=response_headers(ex, reply.request_id),
        )

    @staticmethod
    def _record_tier(call: Call, record: Mapping[str, Any], batch_id: str) -> Tier:
        tier = call.runtime.config.tiers.get(record["tier"])
        if tier is None:
            raise RouterError(
                410,
                f"batch {batch_id} is held by tier {record['tier']!r}, which a config reload "
                "removed; the router can no longer reach it",
                "not_found_error",
            )
        return tier

    # -- the cascade ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lock(self, batch_id: str) -> AsyncIterator[None]:
        """One holder per batch at a time (the entry is forgotten once nobody needs it)."""
        lock = self._locks.setdefault(batch_id, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._locks.get(batch_id) is lock:
                self._locks.pop(batch_id, None)  # no holder, no waiter: forget it

    async def _advanced(self, call: Call, entry: Entry) -> dict[str, Any]:
        """The cascade's state after moving it forward as far as the upstream allows.

        The work runs as its own task, shared by concurrent polls and shielded from the
        client: a client that disconnects mid-step never leaves a step half done.
        """
        task = self._running.get(entry.id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._advance(call.runtime, entry))
            self._running[entry.id] = task
            task.add_done_callback(lambda done: self._finished(entry.id, done))
        try:
            return await asyncio.shield(task)
        except UpstreamFailure as failure:
            # The upstream is unreachable or failing: the batch is still in progress and
            # the next poll tries again. Nothing is lost, nothing counted twice.
            log.warning("batch %s: upstream not available (%s)", entry.id, failure.kind)
            return load_state(entry)

    def _finished(self, batch_id: str, task: asyncio.Task[dict[str, Any]]) -> None:
        if self._running.get(batch_id) is task:
            del self._running[batch_id]
        if not task.cancelled():
            task.exception()  # retrieved: a failure nobody awaited is not an error

    async def _advance(self, runtime: Runtime, entry: Entry) -> dict[str, Any]:
        async with self._lock(entry.id):
            state = load_state(entry)
            if state["endedAt"] is not None:
                return state
            headers: Mapping[str, str] = state["headers"]
            upstream = self.pipeline.services.upstream
            assert upstream is not None

            async def call_upstream(
                tier: Tier, path: str, payload: bytes | Path | None, method: str, expect: bool
            ) -> Reply:
                return await upstream.call(
                    runtime.clients[tier.name],
                    path,
                    payload,
                    headers,  # the creator's anthropic-version and -beta, on every step
                    runtime.config.retry,
                    method=method,
                    expect_json=expect,
                )

            run = BatchCascadeRun(
                self.store, entry, runtime, self.pipeline.services.metrics, call_upstream
            )
            return await run.advance()

    async def _call_upstream(
        self,
        call: Call,
        state: Mapping[str, Any] | None,
        tier: Tier,
        path: str,
        payload: bytes | None = None,
        *,
        method: str = "GET",
        expect_json: bool = True,
    ) -> Reply:
        upstream = self.pipeline.services.upstream
        assert upstream is not None
        headers = state["headers"] if state else forwarded_headers(call.request.headers)
        return await upstream.call(
            call.runtime.clients[tier.name],
            path,
            payload,
            headers,
            call.runtime.config.retry,
            method=method,
            expect_json=expect_json,
        )

    # -- what the client sees ---------------------------------------------------------------

    @staticmethod
    def _status(state: Mapping[str, Any]) -> str:
        if state["endedAt"] is not None:
            return "ended"
        return "canceling" if state["cancelInitiatedAt"] else "in_progress"

    def _cascade_object(self, call: Call, state: Mapping[str, Any]) -> dict[str, Any]:
        counts = {t: state["counts"].get(t, 0) for t in FINAL_TYPES}
        processing = state["count"] - sum(counts.values())
        ended = state["endedAt"] is not None
        return {
            "id": state["id"],
            "type": "message_batch",
            "processing_status": self._status(state),
            "request_counts": {"processing": processing, **counts},
            "created_at": state["createdAt"],
            "expires_at": state["expiresAt"],
            "ended_at": state["endedAt"],
            "cancel_initiated_at": state["cancelInitiatedAt"],
            "archived_at": None,
            "results_url": (
                f"{self._origin(call)}{BATCHES_PATH}/{state['id']}/results" if ended else None
            ),
        }

    @staticmethod
    def _origin(call: Call) -> str:
        return f"{call.request.scheme}://{call.request.host}"

    def _json(
        self, call: Call, ex: Exchange | None, document: Any, request_id: str | None
    ) -> web.Response:
        body = dumps(rewrite_results_url(document, self._origin(call)))
        return json_response(body, ex, request_id)
