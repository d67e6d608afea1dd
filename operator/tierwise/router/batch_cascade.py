"""Batch cascades: a multi-step route run over the Message Batches API, one batch to the client.

The client submits one Message Batch. The router submits it to the route's first step (each
item's params built for that step, as for an interactive request); when that upstream batch
ends, the items whose answers escalate go out as a new batch to the next step, and so on.
The client sees one batch (``msgbatch_tw…``): its ``processing_status`` is ``in_progress``
until every item has a final result, its ``request_counts`` add up the items, and its
results come in the order the requests were submitted, each with the step that answered it,
its escalations and its cost at batch prices (``tierwise`` in the line).

The cascade moves forward when the client polls (retrieve or results), under one lock per
batch. Its state — the original requests, the upstream batch of each step and the results
so far — is written to the state directory (``tierwise router --batch-state-dir``; a volume)
after every change, so a router restart between steps loses nothing: the next poll picks up
where the last one stopped. An upstream batch that no longer exists (the upstream lost it)
is submitted again from the saved requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web

from tierwise.pricing import Usage, format_usd
from tierwise.router.cascade import Exchange
from tierwise.router.errors import RouterError, invalid_request, not_found
from tierwise.router.escalation import escalation_reason
from tierwise.router.jsonutil import dumps, loads
from tierwise.router.pipeline import Call, Pipeline, json_response, response_headers
from tierwise.router.request import build_step_request
from tierwise.router.upstream import BATCHES_PATH, UpstreamFailure, created_batch_id
from tierwise.routerconfig import Route, Tier

log = logging.getLogger("tierwise.router")

PREFIX = "msgbatch_tw"
CASCADE_ID = re.compile(PREFIX + r"[0-9a-f]{24}")
EXPIRY = timedelta(hours=24)
FINAL_TYPES = ("succeeded", "errored", "canceled", "expired")


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class BatchStateStore:
    """Batch cascade states by id: in memory, and as one JSON file each in ``directory``.

    Files are written to a temporary name and renamed, so a crash never leaves half a state.
    Without a directory the states live only as long as the process (documented).
    """

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.directory = Path(directory) if directory else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._memory: dict[str, dict[str, Any]] = {}

    def _path(self, batch_id: str) -> Path:
        assert self.directory is not None and CASCADE_ID.fullmatch(batch_id)
        return self.directory / f"{batch_id}.json"

    def load(self, batch_id: str) -> dict[str, Any] | None:
        state = self._memory.get(batch_id)
        if state is None and self.directory is not None:
            path = self._path(batch_id)
            if path.exists():
                state = json.loads(path.read_text(encoding="utf-8"))
                self._memory[batch_id] = state
        return state

    def save(self, state: dict[str, Any]) -> None:
        self._memory[state["id"]] = state
        if self.directory is not None:
            path = self._path(state["id"])
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(state, sort_keys=True), encoding="utf-8")
            os.replace(temporary, path)

    def all(self) -> list[dict[str, Any]]:
        """Every known state (the directory's and this process's), newest first."""
        if self.directory is not None:
            for path in self.directory.glob(PREFIX + "*.json"):
                if path.stem not in self._memory and CASCADE_ID.fullmatch(path.stem):
                    self.load(path.stem)
        return sorted(self._memory.values(), key=lambda s: s["createdAt"], reverse=True)

    def delete(self, batch_id: str) -> None:
        self._memory.pop(batch_id, None)
        if self.directory is not None:
            self._path(batch_id).unlink(missing_ok=True)


class BatchCascades:
    """The batch endpoints for batches of multi-step routes."""

    def __init__(self, pipeline: Pipeline, store: BatchStateStore) -> None:
        self.pipeline = pipeline
        self.store = store
        self._locks: dict[str, asyncio.Lock] = {}

    @staticmethod
    def handles(batch_id: str) -> bool:
        return CASCADE_ID.fullmatch(batch_id) is not None

    # -- endpoints --------------------------------------------------------------------------

    async def create(self, call: Call, body: Mapping[str, Any], route: Route) -> web.Response:
        ids = [item.get("custom_id") for item in body["requests"]]
        if len(set(ids)) != len(ids):
            raise invalid_request("requests: custom_id values must be unique within a batch")
        now = datetime.now(UTC)
        state: dict[str, Any] = {
            "id": PREFIX + secrets.token_hex(12),
            "route": route.name,
            "createdAt": now.isoformat().replace("+00:00", "Z"),
            "expiresAt": (now + EXPIRY).isoformat().replace("+00:00", "Z"),
            "requests": [
                {"custom_id": i["custom_id"], "params": i["params"]} for i in body["requests"]
            ],
            "steps": [],
            "items": {cid: {"costUsd": "0", "escalations": 0} for cid in ids},
            "results": {},
            "cancelInitiatedAt": None,
            "endedAt": None,
        }
        ex = call.begin(route, {}, batch=True)
        await self._submit(call, ex, state, 0, ids)
        self.store.save(state)
        return json_response(dumps(self._batch_object(call, state)), ex, None)

    async def retrieve(self, call: Call, batch_id: str) -> web.Response:
        state, ex = await self._advanced(call, batch_id)
        return json_response(dumps(self._batch_object(call, state)), ex, None)

    async def results(self, call: Call, batch_id: str) -> web.Response:
        state, ex = await self._advanced(call, batch_id)
        if state["endedAt"] is None:
            raise invalid_request(
                f"batch {batch_id} has not ended yet (processing_status "
                f"{self._status(state)!r}); results are available once it has"
            )
        lines = []
        total = Decimal(0)
        for request in state["requests"]:
            cid = request["custom_id"]
            final = state["results"][cid]
            item = state["items"][cid]
            total += Decimal(item["costUsd"])
            lines.append(
                dumps(
                    {
                        "custom_id": cid,
                        "result": final["result"],
                        "tierwise": {
                            "tier": final.get("tier"),
                            "escalations": item["escalations"],
                            "cost_usd": item["costUsd"],
                        },
                    }
                )
            )
        ex.cost = total
        ex.escalations = sum(i["escalations"] for i in state["items"].values())
        return web.Response(
            body=b"\n".join(lines) + b"\n",
            content_type="application/binary",
            headers=response_headers(ex, None),
        )

    async def cancel(self, call: Call, batch_id: str) -> web.Response:
        async with self._lock(batch_id):
            state, ex = self._load(call, batch_id)
            if state["endedAt"] is None and state["cancelInitiatedAt"] is None:
                state["cancelInitiatedAt"] = _now()
                step = state["steps"][-1]
                tier = self._tier(call, ex, step)
                try:
                    await self.pipeline.call_tier(
                        call, ex, tier, f"{BATCHES_PATH}/{step['batch']}/cancel", b""
                    )
                except UpstreamFailure as failure:
                    log.warning("cancelling upstream batch %s failed: %s", step["batch"], failure)
                self.store.save(state)
        return json_response(dumps(self._batch_object(call, state)), ex, None)

    async def delete(self, call: Call, batch_id: str) -> web.Response:
        async with self._lock(batch_id):
            state, ex = self._load(call, batch_id)
            if state["endedAt"] is None:
                raise invalid_request(
                    f"batch {batch_id} is still {self._status(state)}: cancel it and wait for it "
                    "to end before deleting it"
                )
            self.store.delete(batch_id)
        return json_response(dumps({"id": batch_id, "type": "message_batch_deleted"}), ex, None)

    def merge_listing(self, call: Call, document: Any) -> Any:
        """An upstream batch listing as the client should see it: the batches of its
        cascades in place of the upstream batches they are made of."""
        if not isinstance(document, dict) or not isinstance(document.get("data"), list):
            return document
        states = self.store.all()
        internal = {step["batch"] for state in states for step in state["steps"]}
        upstream = [b for b in document["data"] if b.get("id") not in internal]
        data = [self._batch_object(call, state) for state in states] + upstream
        return {**document, "data": data, "first_id": data[0]["id"] if data else None}

    # -- the cascade ------------------------------------------------------------------------

    def _lock(self, batch_id: str) -> asyncio.Lock:
        return self._locks.setdefault(batch_id, asyncio.Lock())

    def _load(self, call: Call, batch_id: str) -> tuple[dict[str, Any], Exchange]:
        state = self.store.load(batch_id)
        if state is None:
            raise not_found(f"batch {batch_id} does not exist")
        config = call.runtime.config
        route = config.routes_by_name.get(state["route"])
        if route is None:
            raise RouterError(
                409, f"batch {batch_id} belongs to route {state['route']!r}, which no longer exists"
            )
        ex = call.begin(route, {}, batch=True)
        if state["steps"]:
            ex.tier = state["steps"][-1]["tier"]
        return state, ex

    async def _advanced(self, call: Call, batch_id: str) -> tuple[dict[str, Any], Exchange]:
        """The batch's state after moving its cascade forward as far as the upstream allows."""
        async with self._lock(batch_id):
            state, ex = self._load(call, batch_id)
            if state["endedAt"] is None:
                try:
                    await self._advance(call, ex, state)
                except UpstreamFailure as failure:
                    # The upstream is unreachable or failing: the batch is still in progress;
                    # the next poll tries again. Nothing is lost.
                    log.warning("batch %s: upstream not available (%s)", batch_id, failure.kind)
                self.store.save(state)
        return state, ex

    async def _advance(self, call: Call, ex: Exchange, state: dict[str, Any]) -> None:
        step_state = state["steps"][-1]
        index = step_state["step"]
        route = ex.route
        tier = self._tier(call, ex, step_state)
        path = f"{BATCHES_PATH}/{step_state['batch']}"
        try:
            batch = (
                await self.pipeline.call_tier(call, ex, tier, path, None, method="GET")
            ).document
        except UpstreamFailure as failure:
            if failure.status != 404:
                raise
            log.warning("upstream lost batch %s; submitting step %d again", path, index)
            state["steps"].pop()
            await self._submit(call, ex, state, index, step_state["items"])
            return
        if batch.get("processing_status") != "ended":
            return
        reply = await self.pipeline.call_tier(
            call, ex, tier, path + "/results", None, method="GET", expect_json=False
        )
        by_id = {}
        for line in reply.body.splitlines():
            if line.strip():
                entry = loads(line)
                by_id[entry.get("custom_id")] = entry.get("result") or {}
        last = index == len(route.steps) - 1
        step = route.steps[index]
        escalated = []
        for cid in step_state["items"]:
            result = by_id.get(cid) or {
                "type": "errored",
                "error": {"type": "api_error", "message": "the upstream batch returned no result"},
            }
            item = state["items"][cid]
            if result.get("type") == "succeeded":
                usage = Usage.from_anthropic((result.get("message") or {}).get("usage") or {})
                cost = self._account(ex, tier, usage)
                item["costUsd"] = format_usd(Decimal(item["costUsd"]) + cost)
                reason = None
                if not last and state["cancelInitiatedAt"] is None:
                    reason = escalation_reason(step.escalate_when, result.get("message") or {})
                if reason is not None:
                    item["escalations"] += 1
                    self.pipeline.services.metrics.escalations.labels(
                        ex.runtime.policy, route.name, tier.name, reason
                    ).inc()
                    escalated.append(cid)
                    continue
                self._account_counterfactual(ex, usage)
            state["results"][cid] = {"result": result, "tier": tier.name, "step": index}
        step_state["read"] = True
        if escalated:
            await self._submit(call, ex, state, index + 1, escalated)
        else:
            state["endedAt"] = _now()

    async def _submit(
        self, call: Call, ex: Exchange, state: dict[str, Any], index: int, ids: list[str]
    ) -> None:
        """Send ``ids`` to step ``index`` as one upstream batch and record it in ``state``."""
        route = ex.route
        step = route.steps[index]
        config = call.runtime.config
        tier = config.tiers[step.tier]
        params = {r["custom_id"]: r["params"] for r in state["requests"]}
        payload = {
            "requests": [
                {
                    "custom_id": cid,
                    "params": build_step_request(
                        params[cid], route, step, tier, config.cache.prompt_caching, stream=False
                    ),
                }
                for cid in ids
            ]
        }
        reply = await self.pipeline.call_tier(call, ex, tier, BATCHES_PATH, dumps(payload))
        batch_id = created_batch_id(reply.document, tier.name)
        state["steps"].append({"step": index, "tier": tier.name, "batch": batch_id, "items": ids})
        ex.tier = tier.name

    def _tier(self, call: Call, ex: Exchange, step_state: Mapping[str, Any]) -> Tier:
        tiers = call.runtime.config.tiers
        name = step_state["tier"]
        if name not in tiers:  # the config changed under the batch: the step's current tier
            name = ex.route.steps[step_state["step"]].tier
        return tiers[name]

    def _account(self, ex: Exchange, tier: Tier, usage: Usage) -> Decimal:
        cascade = self.pipeline.services.cascade
        assert cascade is not None
        tier_before = ex.tier
        cost = cascade.account(ex, tier, usage)
        ex.tier = tier_before
        return cost

    def _account_counterfactual(self, ex: Exchange, usage: Usage) -> None:
        cascade = self.pipeline.services.cascade
        assert cascade is not None
        cascade.account_counterfactual(ex, usage)

    # -- what the client sees ---------------------------------------------------------------

    @staticmethod
    def _status(state: Mapping[str, Any]) -> str:
        if state["endedAt"] is not None:
            return "ended"
        return "canceling" if state["cancelInitiatedAt"] else "in_progress"

    def _batch_object(self, call: Call, state: Mapping[str, Any]) -> dict[str, Any]:
        counts = {t: 0 for t in FINAL_TYPES}
        for final in state["results"].values():
            kind = final["result"].get("type")
            if kind in counts:
                counts[kind] += 1
        processing = len(state["requests"]) - sum(counts.values())
        origin = f"{call.request.scheme}://{call.request.host}"
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
            "results_url": f"{origin}{BATCHES_PATH}/{state['id']}/results" if ended else None,
        }
