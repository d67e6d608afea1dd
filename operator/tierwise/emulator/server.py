"""The emulator's HTTP server: the Messages API, the batches API and the admin API.

``Emulator`` is also the in-process control surface: tests call ``script``,
``set_faults``, ``reset``, ``recorded_requests`` ... directly, or through the admin
endpoints under ``/_emulator/`` when the emulator runs in another process.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from tierwise.emulator.answers import Dataset
from tierwise.emulator.batches import BatchStore
from tierwise.emulator.cache import PromptCache
from tierwise.emulator.config import EmulatorConfig
from tierwise.emulator.engine import Completion, Engine
from tierwise.emulator.errors import ApiError, invalid
from tierwise.emulator.faults import FaultRates, ScriptStep
from tierwise.emulator.profiles import ModelProfile
from tierwise.emulator.ratelimit import RateLimiter
from tierwise.emulator.recording import RecordedRequest, RequestLog, Stats
from tierwise.emulator.rules import check_betas, parse_betas
from tierwise.emulator.tokens import count_prompt_tokens, tool_prompt_tokens
from tierwise.emulator.validation import validate_count, validate_create
from tierwise.emulator.wire import StreamPiece, json_bytes, new_id, stream_pieces

MAX_BODY_BYTES = 32 * 1024 * 1024  # the API's request size limit
# A Message Batch may be larger: 256 MB ("Batch limitations", platform.claude.com/docs/en/
# build-with-claude/batch-processing, read 2026-12-06).
MAX_BATCH_BODY_BYTES = 256 * 1000 * 1000
JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"


class Emulator:
    """An Anthropic-compatible model emulator.

    ``clock`` (seconds, monotonic) drives cache TTLs and batch readiness; tests inject
    their own or call ``advance_clock``.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config or EmulatorConfig()
        self._base_clock = clock or time.monotonic
        self._clock_offset = 0.0
        self.engine = Engine(self.config, self.now)
        self.stats = Stats()
        self._log = RequestLog(self.config.max_recorded_requests)
        self._limiter = RateLimiter(self.config.rate_limits)
        self.batches = BatchStore(
            self.now, self.config.batch_processing_seconds, self.config.batch_canceling_seconds
        )
        self._latency_scale = self.config.effective_latency_scale
        self._app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None

    # ----------------------------------------------------------------- clock

    def now(self) -> float:
        return self._base_clock() + self._clock_offset

    def advance_clock(self, seconds: float) -> float:
        """Move the emulator's clock forward (cache expiry, batches); returns the offset."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._clock_offset += seconds
        return self._clock_offset

    # --------------------------------------------------------------- controls

    @property
    def cache(self) -> PromptCache:
        return self.engine.cache

    @property
    def dataset(self) -> Dataset | None:
        return self.engine.dataset

    def load_dataset(self, dataset: Dataset | None) -> None:
        self.engine.dataset = dataset

    def script(self, model: str, responses: Iterable[Mapping[str, Any] | ScriptStep]) -> int:
        """Queue responses for ``model`` (an alias, a dated id, or ``"*"`` for any model).

        Returns the number of steps now queued for it.
        """
        steps = [r if isinstance(r, ScriptStep) else ScriptStep.from_dict(r) for r in responses]
        return self.engine.faults.script(self.engine.model_key(model), steps)

    def set_faults(
        self,
        model: str,
        *,
        rate_429: float = 0.0,
        rate_529: float = 0.0,
        rate_500: float = 0.0,
        seed: int | None = None,
        retry_after: float = 1.0,
    ) -> None:
        """Random errors for ``model`` (or ``"*"``); all rates 0 removes them."""
        rates = FaultRates(rate_429, rate_529, rate_500, retry_after=retry_after, seed=seed)
        self.engine.faults.set_rates(self.engine.model_key(model), rates)

    def fail_batches(
        self, operation: str, statuses: Iterable[int], create_delay: float | None = None
    ) -> int:
        """Fail the next calls of a batch endpoint (see ``FaultPlan.fail_batches``)."""
        return self.engine.faults.fail_batches(operation, statuses, create_delay)

    def reset(self, *, cache: bool = True) -> None:
        """Forget scripts, faults, recorded requests, counters, batches, the clock offset, a
        dataset loaded at run time (back to the configured one) and, unless
        ``cache=False``, the prompt cache."""
        self.engine.faults.clear()
        self.engine.dataset = self.config.dataset
        self._log.clear()
        self.stats = Stats()
        self._limiter.clear()
        self.batches.clear()
        self._clock_offset = 0.0
        if cache:
            self.engine.cache.clear()

    def recorded_requests(
        self, *, model: str | None = None, path: str | None = None
    ) -> list[RecordedRequest]:
        """Requests received so far, oldest first (``model`` matches aliases and dated ids)."""
        entries = self._log.select(path=path)
        if model is None:
            return entries
        key = self.engine.model_key(model)
        return [e for e in entries if e.model is not None and self.engine.model_key(e.model) == key]

    @property
    def requests(self) -> list[RecordedRequest]:
        return self._log.select()

    @property
    def cancelled_streams(self) -> int:
        return self.stats.cancelled_streams

    def stats_dict(self) -> dict[str, Any]:
        return {
            **self.stats.to_dict(),
            "cache_entries": len(self.engine.cache),
            "dataset": self.engine.dataset_stats(),
        }

    # ------------------------------------------------------------- lifecycle

    @property
    def app(self) -> web.Application:
        if self._app is None:
            self._app = self._build_app()
        return self._app

    def _build_app(self) -> web.Application:
        from tierwise.emulator.admin import add_admin_routes

        app = web.Application(client_max_size=MAX_BATCH_BODY_BYTES)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_post("/v1/messages/batches", self._batch_create)
        app.router.add_get("/v1/messages/batches", self._batch_list)
        app.router.add_get("/v1/messages/batches/{batch_id}", self._batch_get)
        app.router.add_delete("/v1/messages/batches/{batch_id}", self._batch_delete)
        app.router.add_post("/v1/messages/batches/{batch_id}/cancel", self._batch_cancel)
        app.router.add_get("/v1/messages/batches/{batch_id}/results", self._batch_results)
        add_admin_routes(app, self)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 picks a free port); returns and sets ``base_url``."""
        runner = web.AppRunner(
            self.app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        self.base_url = f"http://{_url_host(bound_host)}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.base_url = None

    # ------------------------------------------------------ messages endpoint

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        request_id = new_id("req")
        record = self._record(request, request_id)
        try:
            body = await self._authenticated_body(request, record)
            check_betas(parse_betas(request.headers.get("anthropic-beta")))
            validate_create(body)
            profile = self.engine.resolve(body["model"])
            prepared = self.engine.prepare(body, profile)
            self._enforce_rate_limit(profile)
            stream = bool(body.get("stream"))
            step = self.engine.faults.next_step(profile.name)
            error = self.engine.injected_error(profile, step)
            if step is not None and step.stream_error_after_tokens is not None and not stream:
                # Without a stream to break, a mid-stream overload is a plain 529.
                error = error or ApiError(529)
            if error is not None:
                self.stats.injected_errors += 1
                await self._delay(step.first_token_delay if step else None, record)
                raise error
            completion = self.engine.complete(body, profile, prepared, step)
        except ApiError as exc:
            return self._error_response(exc, request_id, record)
        prompt = completion.prompt
        self.stats.by_model[profile.name] += 1
        # Cache reads do not count toward input-token rate limits (most current models).
        limits = self._limiter.record(
            profile.name,
            prompt.input_tokens + prompt.cache_creation_input_tokens,
            completion.answer.output_tokens,
        )
        headers = {"request-id": request_id, **limits}
        if stream:
            return await self._stream(request, completion, profile, headers, record)
        return await self._respond(request, completion, profile, headers, record)

    async def _respond(
        self,
        request: web.Request,
        completion: Completion,
        profile: ModelProfile,
        headers: dict[str, str],
        record: RecordedRequest | None,
    ) -> web.Response:
        delay = self._first_token_seconds(profile, completion) + self._output_seconds(
            profile, completion.answer.output_tokens
        )
        if delay > 0:
            await self._delay(delay, record)
            if _client_gone(request):
                self._mark_cancelled(record, stream=False)
                return web.Response(status=499)
        self._finish(record, 200, completion.message["usage"])
        return web.Response(
            body=json_bytes(completion.message), headers=headers, content_type=JSON_TYPE
        )

    async def _stream(
        self,
        request: web.Request,
        completion: Completion,
        profile: ModelProfile,
        headers: dict[str, str],
        record: RecordedRequest | None,
    ) -> web.StreamResponse:
        step = completion.step
        pieces = stream_pieces(
            completion.message,
            chunk_tokens=self.config.stream_chunk_tokens,
            error_after_tokens=step.stream_error_after_tokens if step else None,
        )
        headers["Cache-Control"] = "no-cache"
        response = web.StreamResponse(headers=headers)
        response.content_type = SSE_TYPE
        self.stats.streams += 1
        try:
            await response.prepare(request)
            await self._write_pieces(request, response, pieces, profile, completion)
            await response.write_eof()
        except ConnectionResetError:
            self._mark_cancelled(record, stream=True)
            return response
        except asyncio.CancelledError:
            self._mark_cancelled(record, stream=True)
            raise
        self._finish(record, 200, completion.message["usage"])
        if step is not None and step.stream_error_after_tokens is not None:
            self.stats.injected_errors += 1
            if record is not None:
                record.error_type = "overloaded_error"
        return response

    async def _write_pieces(
        self,
        request: web.Request,
        response: web.StreamResponse,
        pieces: list[StreamPiece],
        profile: ModelProfile,
        completion: Completion,
    ) -> None:
        first_token = self._first_token_seconds(profile, completion)
        if first_token <= 0 and self._latency_scale == 0:
            await response.write(b"".join(p.data for p in pieces))
            return
        waiting_first = True
        for piece in pieces:
            if piece.tokens:
                delay = self._output_seconds(profile, piece.tokens)
                if waiting_first:
                    delay += first_token
                    waiting_first = False
                if delay > 0:
                    await asyncio.sleep(delay)
            if _client_gone(request):
                raise ConnectionResetError("client disconnected")
            await response.write(piece.data)

    def _first_token_seconds(self, profile: ModelProfile, completion: Completion) -> float:
        return self.engine.first_token_seconds(profile, completion.prompt, completion.step)

    def _output_seconds(self, profile: ModelProfile, tokens: int) -> float:
        if self._latency_scale == 0:
            return 0.0
        return tokens / profile.output_tokens_per_second * self._latency_scale

    async def _delay(self, seconds: float | None, record: RecordedRequest | None) -> None:
        if not seconds:
            return
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self._mark_cancelled(record, stream=False)
            raise

    # --------------------------------------------------- count_tokens endpoint

    async def _count_tokens(self, request: web.Request) -> web.Response:
        request_id = new_id("req")
        record = self._record(request, request_id)
        try:
            body = await self._authenticated_body(request, record)
            check_betas(parse_betas(request.headers.get("anthropic-beta")))
            validate_count(body)
            profile = self.engine.resolve(body["model"])
        except ApiError as exc:
            return self._error_response(exc, request_id, record)
        self._finish(record, 200, None)
        tool_prompt = tool_prompt_tokens(body, profile.tool_prompt_tokens)
        result = {"input_tokens": count_prompt_tokens(body, tool_prompt)}
        return web.Response(
            body=json_bytes(result), headers={"request-id": request_id}, content_type=JSON_TYPE
        )

    # -------------------------------------------------------- batches endpoints

    async def _batch_create(self, request: web.Request) -> web.Response:
        async def create(body: Any) -> Any:
            batch = self.batches.create(body, self._batch_item)
            # Items of one batch run concurrently upstream: none reads what another wrote.
            self.engine.cache.reveal_pending()
            if self.engine.faults.batch_create_delay:
                await asyncio.sleep(self.engine.faults.batch_create_delay)
            return batch.to_dict(self.now(), _origin(request))

        return await self._api_call(request, create, read_body=True, operation="create")

    async def _batch_list(self, request: web.Request) -> web.Response:
        async def listing(_body: Any) -> Any:
            query = request.query
            try:
                limit = max(1, min(1000, int(query.get("limit", "20"))))
            except ValueError as exc:
                raise invalid("limit: Input should be a valid integer") from exc
            batches, has_more = self.batches.page(
                limit, query.get("after_id"), query.get("before_id")
            )
            data = [b.to_dict(self.now(), _origin(request)) for b in batches]
            return {
                "data": data,
                "has_more": has_more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }

        return await self._api_call(request, listing, operation="list")

    async def _batch_get(self, request: web.Request) -> web.Response:
        async def get(_body: Any) -> Any:
            batch = self.batches.get(request.match_info["batch_id"])
            return batch.to_dict(self.now(), _origin(request))

        return await self._api_call(request, get, operation="retrieve")

    async def _batch_cancel(self, request: web.Request) -> web.Response:
        async def cancel(_body: Any) -> Any:
            batch = self.batches.cancel(request.match_info["batch_id"])
            return batch.to_dict(self.now(), _origin(request))

        return await self._api_call(request, cancel, operation="cancel")

    async def _batch_delete(self, request: web.Request) -> web.Response:
        async def delete(_body: Any) -> Any:
            return self.batches.delete(request.match_info["batch_id"])

        return await self._api_call(request, delete, operation="delete")

    async def _batch_results(self, request: web.Request) -> web.Response:
        request_id = new_id("req")
        record = self._record(request, request_id)
        try:
            self._authenticate(request)
            fault = self.engine.faults.batch_failure("results")
            if fault is not None:
                raise fault
            lines = self.batches.results(request.match_info["batch_id"])
        except ApiError as exc:
            return self._error_response(exc, request_id, record)
        self._finish(record, 200, None)
        body = b"".join(json_bytes(line) + b"\n" for line in lines)
        return web.Response(
            body=body, headers={"request-id": request_id}, content_type="application/binary"
        )

    def _batch_item(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """One batch request through the engine: a succeeded or errored result."""
        try:
            validate_create(params)
            profile = self.engine.resolve(params["model"])
            prepared = self.engine.prepare(params, profile)
            step = self.engine.faults.next_step(profile.name)
            error = self.engine.injected_error(profile, step)
            if error is not None:
                self.stats.injected_errors += 1
                raise error
            completion = self.engine.complete(
                params, profile, prepared, step, service_tier="batch", visible_at=math.inf
            )
        except ApiError as exc:
            return {"type": "errored", "error": exc.body()}
        return {"type": "succeeded", "message": completion.message}

    async def _api_call(
        self,
        request: web.Request,
        action: Callable[[Any], Any],
        *,
        read_body: bool = False,
        operation: str | None = None,
    ) -> web.Response:
        """Authenticate, run ``action`` and answer JSON, or an API error (or the injected
        fault of a batch ``operation``)."""
        request_id = new_id("req")
        record = self._record(request, request_id)
        try:
            body = await self._authenticated_body(request, record) if read_body else None
            if not read_body:
                self._authenticate(request)
            fault = self.engine.faults.batch_failure(operation) if operation else None
            if fault is not None:
                raise fault
            result = await action(body)
        except ApiError as exc:
            return self._error_response(exc, request_id, record)
        self._finish(record, 200, None)
        return web.Response(
            body=json_bytes(result), headers={"request-id": request_id}, content_type=JSON_TYPE
        )

    # ------------------------------------------------------------ shared bits

    async def _not_found(self, request: web.Request) -> web.Response:
        error = ApiError(404, f"Not found: {request.method} {request.path}")
        return self._error_response(error, new_id("req"), None)

    def _authenticate(self, request: web.Request) -> None:
        headers = request.headers
        key = _api_key(headers)
        if not key:
            raise ApiError(401, "x-api-key header is required")
        accepted = self.config.api_keys
        if accepted is not None and key not in accepted:
            raise ApiError(401, "invalid x-api-key")
        if self.config.require_anthropic_version and not headers.get("anthropic-version"):
            raise invalid("anthropic-version: header is required")

    async def _authenticated_body(
        self, request: web.Request, record: RecordedRequest | None
    ) -> Any:
        limit = MAX_BATCH_BODY_BYTES if request.path == "/v1/messages/batches" else MAX_BODY_BYTES
        too_large = ApiError(413, f"Request exceeds the maximum allowed number of bytes ({limit}).")
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise too_large from exc
        if len(raw) > limit:
            raise too_large
        try:
            body = json.loads(raw) if raw else None
        except ValueError as exc:
            if record is not None:
                record.body = raw.decode("utf-8", errors="replace")
            self._authenticate(request)
            raise invalid(f"There was an error parsing the body of your request: {exc}") from exc
        if record is not None:
            record.body = body
            if isinstance(body, dict):
                model = body.get("model")
                record.model = model if isinstance(model, str) else None
                record.stream = body.get("stream") is True
        self._authenticate(request)
        if body is None:
            raise invalid("Request body must be a JSON object")
        return body

    def _enforce_rate_limit(self, profile: ModelProfile) -> None:
        if not self.config.enforce_rate_limits:
            return
        retry_after = self._limiter.retry_after(profile.name)
        if retry_after is not None:
            raise ApiError(429, retry_after=retry_after)

    def _record(self, request: web.Request, request_id: str) -> RecordedRequest | None:
        self.stats.requests += 1
        if not self.config.record_requests:
            return None
        record = RecordedRequest(
            id=request_id,
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            received_at=time.time(),
            api_key=_api_key(request.headers),
        )
        self._log.append(record)
        return record

    def _finish(self, record: RecordedRequest | None, status: int, usage: Any) -> None:
        self.stats.by_status[status] += 1
        if record is None:
            return
        record.status = status
        record.usage = usage
        record.completed = True

    def _mark_cancelled(self, record: RecordedRequest | None, *, stream: bool) -> None:
        if stream:
            self.stats.cancelled_streams += 1
        else:
            self.stats.cancelled_requests += 1
        if record is not None:
            record.cancelled = True

    def _error_response(
        self, error: ApiError, request_id: str, record: RecordedRequest | None
    ) -> web.Response:
        self.stats.by_status[error.status] += 1
        if record is not None:
            record.status = error.status
            record.error_type = error.error_type
            record.completed = True
        headers = {"request-id": request_id}
        if error.retry_after is not None:
            headers["retry-after"] = f"{error.retry_after:g}"
        return web.Response(
            status=error.status,
            body=json_bytes(error.body(request_id)),
            headers=headers,
            content_type=JSON_TYPE,
        )


def _api_key(headers: Mapping[str, str]) -> str | None:
    """The credential of a request: ``x-api-key``, else an ``Authorization: Bearer`` token."""
    key = headers.get("x-api-key")
    if key:
        return key
    authorization = headers.get("authorization", "")
    if authorization.startswith("Bearer "):
        return authorization[7:] or None
    return None


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
