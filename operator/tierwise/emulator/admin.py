"""The admin API under ``/_emulator/``: the ``Emulator`` controls over HTTP.

No API key is needed; the emulator is a test fixture and listens on 127.0.0.1 by default.
Errors use the Messages API's error body so one client helper can read both.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tierwise.emulator.answers import Dataset
from tierwise.emulator.errors import ApiError, invalid
from tierwise.emulator.wire import json_bytes

if TYPE_CHECKING:
    from tierwise.emulator.server import Emulator

PREFIX = "/_emulator"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_admin_routes(app: web.Application, emulator: Emulator) -> None:
    admin = _Admin(emulator)
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/health", admin.health),
        ("POST", "/script", admin.script),
        ("GET", "/script", admin.pending),
        ("POST", "/faults", admin.faults),
        ("GET", "/faults", admin.list_faults),
        ("POST", "/batch-faults", admin.batch_faults),
        ("POST", "/reset", admin.reset),
        ("GET", "/requests", admin.requests),
        ("GET", "/stats", admin.stats),
        ("POST", "/clock", admin.clock),
        ("POST", "/dataset", admin.dataset),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, PREFIX + path, _json_errors(handler))


def _json_errors(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return _reply(exc.body(), status=exc.status)
        except (ValueError, TypeError, KeyError) as exc:
            return _reply(invalid(str(exc)).body(), status=400)

    return wrapped


def _reply(doc: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json_bytes(doc), content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise invalid(f"invalid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise invalid("expected a JSON object")
    return body


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid('"model" is required (a model id, or "*" for every model)')
    return model


class _Admin:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    async def health(self, _request: web.Request) -> web.Response:
        return _reply({"status": "ok", "models": self.emulator.engine.profiles.names()})

    async def script(self, request: web.Request) -> web.Response:
        body = await _body(request)
        model = _model(body)
        responses = body.get("responses")
        if not isinstance(responses, list):
            raise invalid('"responses" must be a list')
        queued = self.emulator.script(model, responses)
        return _reply({"model": self.emulator.engine.model_key(model), "queued": queued})

    async def pending(self, _request: web.Request) -> web.Response:
        return _reply({"pending": self.emulator.engine.faults.pending()})

    async def faults(self, request: web.Request) -> web.Response:
        body = await _body(request)
        model = _model(body)
        seed = body.get("seed")
        self.emulator.set_faults(
            model,
            rate_429=float(body.get("rate_429", 0.0)),
            rate_529=float(body.get("rate_529", 0.0)),
            rate_500=float(body.get("rate_500", 0.0)),
            seed=int(seed) if seed is not None else None,
            retry_after=float(body.get("retry_after", 1.0)),
        )
        return _reply({"faults": self.emulator.engine.faults.rates()})

    async def batch_faults(self, request: web.Request) -> web.Response:
        body = await _body(request)
        statuses = body.get("statuses", [])
        if not isinstance(statuses, list):
            raise invalid('"statuses" must be a list of HTTP error statuses')
        delay = body.get("create_delay")
        queued = self.emulator.fail_batches(
            str(body.get("operation", "create")),
            [int(s) for s in statuses],
            float(delay) if delay is not None else None,
        )
        return _reply({"queued": queued})

    async def list_faults(self, _request: web.Request) -> web.Response:
        return _reply({"faults": self.emulator.engine.faults.rates()})

    async def reset(self, request: web.Request) -> web.Response:
        body = await _body(request)
        self.emulator.reset(cache=bool(body.get("cache", True)))
        return _reply({"status": "ok"})

    async def requests(self, request: web.Request) -> web.Response:
        entries = self.emulator.recorded_requests(
            model=request.query.get("model"), path=request.query.get("path")
        )
        return _reply({"requests": [e.to_dict() for e in entries]})

    async def stats(self, _request: web.Request) -> web.Response:
        return _reply(self.emulator.stats_dict())

    async def clock(self, request: web.Request) -> web.Response:
        body = await _body(request)
        offset = self.emulator.advance_clock(float(body.get("advance", 0.0)))
        return _reply({"offset": offset})

    async def dataset(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if body.get("clear"):
            self.emulator.load_dataset(None)
            return _reply({"items": 0, "labels": []})
        # Items come in the body, never as a server-side path: the admin API reads no files.
        if not isinstance(body.get("items"), list):
            raise invalid(
                'give "items" (dataset records: {"input" or "messages", "label", ...}, '
                'optionally {"grader": {...}} lines) or "clear": true'
            )
        try:
            dataset = Dataset.from_records(body["items"], body.get("labels"))
        except ValueError as exc:  # a bad record names itself; the loaded dataset stays
            raise invalid(f"items: {exc}") from exc
        self.emulator.load_dataset(dataset)
        return _reply({"items": len(dataset), "labels": list(dataset.labels)})
