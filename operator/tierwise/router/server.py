"""The router's HTTP edges: the Messages API app, the metrics/health app, config reload.

Handlers stay thin: parse, pick the route, consult the response cache, hand the steps to
``Cascade``, and write the answer as JSON, a synthesized stream or a live stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tierwise.pricing import Usage, format_usd
from tierwise.pricing.model import MTOK
from tierwise.router.batches import BatchProxy
from tierwise.router.budget import BudgetExceeded, estimated_count, trim
from tierwise.router.cascade import Answer, Cascade, Exchange
from tierwise.router.errors import (
    RouterError,
    invalid_request,
    not_found,
    too_large,
    upstream_error_body,
)
from tierwise.router.jsonutil import dumps, loads, sha256_hex
from tierwise.router.metrics import RouterMetrics
from tierwise.router.request import build_count_tokens_request, estimate_prompt_tokens
from tierwise.router.response_cache import (
    BYPASS,
    CACHE_HEADER,
    HIT,
    MISS,
    cache_decision,
    cache_key,
    decode_entry,
    encode_entry,
)
from tierwise.router.routing import RouteNotFound, select_route
from tierwise.router.runtime import Runtime, build_runtime, retire_runtime
from tierwise.router.sse import (
    SSEParser,
    StreamTracker,
    error_event,
    sse_comment,
    synthesize_stream,
)
from tierwise.router.upstream import Stream, Upstream, UpstreamFailure, forwarded_headers
from tierwise.routerconfig import (
    ROUTE_HEADER,
    ConfigError,
    InputBudget,
    RouterConfig,
    Tier,
    load,
    parse_bytes,
)

log = logging.getLogger("tierwise.router")

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_RELOAD_INTERVAL = 1.0
JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream"
COST_COMMENT = "x-tierwise-cost-usd"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
# The fields of a Messages request that count_tokens accepts (and that make the prompt).
COUNTABLE_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking"})

ConfigSource = RouterConfig | str | os.PathLike[str] | Mapping[str, Any]


class Router:
    """One router: API app, metrics app, upstream session, config and its reloads.

    ``config`` is a validated ``RouterConfig``, a document, or a file path; with a path the
    file is watched and hot-reloaded every ``reload_interval`` seconds. ``env`` is where
    tier API keys are read (``os.environ`` by default).
    """

    def __init__(
        self,
        config: ConfigSource,
        *,
        env: Mapping[str, str] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        reload_interval: float = DEFAULT_RELOAD_INTERVAL,
        metrics: RouterMetrics | None = None,
    ) -> None:
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.max_body_bytes = max_body_bytes
        self.reload_interval = reload_interval
        self.metrics = metrics or RouterMetrics()
        self.config_path: Path | None = None
        self._config_digest: str | None = None
        if isinstance(config, (str, os.PathLike)):
            self.config_path = Path(config)
            data = self.config_path.read_bytes() if self.config_path.exists() else b""
            self._config_digest = sha256_hex(data)
            config = load(self.config_path)
        elif not isinstance(config, RouterConfig):
            config = load(config)
        self._runtime = build_runtime(config, self.env)
        self._note_config(config)
        self.metrics.reload_result(True, time.time())
        self._session: aiohttp.ClientSession | None = None
        self._upstream: Upstream | None = None
        self._cascade: Cascade | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.app = self._build_app()
        self.metrics_app = self._build_metrics_app()
        self._runners: list[web.AppRunner] = []
        self.base_url: str | None = None
        self.metrics_url: str | None = None

    # ---------------------------------------------------------------- config

    @property
    def config(self) -> RouterConfig:
        return self._runtime.config

    @property
    def ready(self) -> bool:
        return self._runtime is not None

    def apply_config(self, config: RouterConfig) -> None:
        """Swap to ``config`` atomically: requests in flight finish on the old one."""
        old = self._runtime
        self._runtime = build_runtime(config, self.env, old)
        self._note_config(config)
        if old.response_cache is not self._runtime.response_cache:
            self._spawn(retire_runtime(old, self._runtime))

    def _note_config(self, config: RouterConfig) -> None:
        if not config.hash_matches:
            log.warning(
                "config hash %s does not match its content (%s); serving it anyway",
                config.hash,
                config.computed_hash,
            )
        self.metrics.config_loaded(config.policy.label, config.hash, config.schema_version)

    def check_config_file(self) -> bool | None:
        """Reload the watched file if its content changed: True ok, False bad, None same."""
        if self.config_path is None:
            return None
        try:
            data = self.config_path.read_bytes()
        except OSError as exc:
            data = f"unreadable: {exc}".encode()
        digest = sha256_hex(data)
        if digest == self._config_digest:
            return None
        self._config_digest = digest  # a bad file is reported once, not every second
        try:
            config = parse_bytes(data, str(self.config_path))
        except ConfigError as exc:
            log.error("config reload failed, keeping config %s: %s", self.config.hash, exc)
            self.metrics.reload_result(False, time.time())
            return False
        self.apply_config(config)
        log.info("config reloaded: policy %s, hash %s", config.policy.label, config.hash)
        self.metrics.reload_result(True, time.time())
        return True

    async def _watch(self) -> None:
        # Polling, not inotify: a ConfigMap update swaps a `..data` symlink, which file
        # watches on the old path miss; reading a small file each second is cheap.
        while True:
            await asyncio.sleep(self.reload_interval)
            try:
                self.check_config_file()
            except Exception:
                log.exception("config watch failed")

    # ------------------------------------------------------------- lifecycle

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post(COUNT_TOKENS_PATH, self._count_tokens)
        BatchProxy(self).add_routes(app)
        app.router.add_route("*", "/{tail:.*}", self._unknown_path)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    def _build_metrics_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=True,
        )
        self._upstream = Upstream(
            self._session,
            self._on_upstream_failure,
            self._on_retry,
            on_queue_wait=self._on_queue_wait,
        )
        self._cascade = Cascade(self._upstream, self.metrics)
        if self.config_path is not None and self.reload_interval > 0:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _on_cleanup(self, _app: web.Application) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for task in list(self._background):
            task.cancel()
        if self._runtime.response_cache is not None:
            with contextlib.suppress(Exception):
                await self._runtime.response_cache.close()
        if self._session is not None:
            await self._session.close()

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        metrics_host: str = "0.0.0.0",
        metrics_port: int = 9090,
    ) -> None:
        """Serve the API and the metrics apps (port 0 picks a free port)."""
        api_sock = _bind(host, port)
        metrics_sock = _bind(metrics_host, metrics_port)
        for app, sock in ((self.app, api_sock), (self.metrics_app, metrics_sock)):
            # handler_cancellation: a client that disconnects cancels its handler, which
            # closes the upstream call instead of paying for an answer nobody reads.
            runner = web.AppRunner(
                app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0
            )
            await runner.setup()
            await web.SockSite(runner, sock, backlog=1024).start()
            self._runners.append(runner)
        self.base_url = _url(api_sock)
        self.metrics_url = _url(metrics_sock)

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (config applied before start): nothing to retire
            coro.close()
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _on_upstream_failure(self, tier: str, kind: str) -> None:
        self.metrics.upstream_errors.labels(self._runtime.policy, tier, kind).inc()
        log.debug("upstream failure on tier %s: %s", tier, kind)

    def _on_retry(self, tier: str) -> None:
        self.metrics.retries.labels(self._runtime.policy, tier).inc()

    def _on_queue_wait(self, tier: str, seconds: float) -> None:
        self.metrics.child(self.metrics.queue_wait, self._runtime.policy, tier).observe(seconds)

    # ------------------------------------------------------- metrics app

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.exposition(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        if not self.ready:
            return web.json_response({"status": "no valid config"}, status=503)
        return web.json_response({"status": "ready", "hash": self.config.hash})

    # ------------------------------------------------------- Messages API

    async def _unknown_path(self, request: web.Request) -> web.Response:
        return _error_response(not_found(f"Not found: {request.method} {request.path}"))

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        runtime = self._runtime
        ex: Exchange | None = None
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            body = await self._read_json(request)
            ex = self._exchange(runtime, request, body, started)
            return await self._serve(request, ex)
        except RouterError as exc:
            if ex is not None:
                ex.outcome = exc.outcome
            return _error_response(exc, ex)
        except UpstreamFailure as failure:
            assert ex is not None
            ex.outcome = (
                "client_error"
                if failure.status < 500 and failure.status != 429
                else "upstream_error"
            )
            return _failure_response(failure, ex)
        except asyncio.CancelledError:
            if ex is not None:
                ex.outcome = "cancelled"
            raise
        except Exception:
            log.exception("unexpected error serving a request")
            if ex is not None:
                ex.outcome = "internal_error"
            return _error_response(RouterError(500, "internal router error"), ex)
        finally:
            self.metrics.in_flight.dec()
            self._record(runtime, ex, started)

    def _record(self, runtime: Runtime, ex: Exchange | None, started: float) -> None:
        seconds = time.perf_counter() - started
        if ex is None:
            self.metrics.record_request(runtime.policy, "", "", "messages", "rejected", seconds)
        else:
            self.metrics.record_request(
                ex.runtime.policy, ex.route.name, ex.tier, ex.endpoint, ex.outcome, seconds
            )

    async def _read_json(self, request: web.Request) -> dict[str, Any]:
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            raise too_large(self.max_body_bytes)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise too_large(self.max_body_bytes) from exc
        try:
            body = loads(raw)
        except ValueError as exc:
            raise invalid_request(
                f"There was an error parsing the body of your request: {exc}"
            ) from exc
        if not isinstance(body, dict):
            raise invalid_request("The request body must be a JSON object")
        return body

    def _exchange(
        self, runtime: Runtime, request: web.Request, body: dict[str, Any], started: float
    ) -> Exchange:
        headers = request.headers
        try:
            route = select_route(runtime.config, body.get("model"), headers.get(ROUTE_HEADER))
        except RouteNotFound as exc:
            raise not_found(exc.message) from exc
        return Exchange(
            runtime=runtime,
            route=route,
            body=body,
            forwarded=forwarded_headers(headers),
            started=started,
            stream=body.get("stream") is True,
        )

    async def _serve(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        assert self._cascade is not None, "the router app is not started"
        if ex.route.input_budget is not None:
            ex.body = await self._within_budget(ex, ex.route.input_budget)
        cache = ex.runtime.response_cache
        if cache is not None and cache_decision(
            ex.runtime.config.cache.response_cache,
            ex.body,
            request.headers.get(CACHE_HEADER),
            ex.route.response_cache,
        ):
            ex.cache_key = cache_key(ex.route.name, ex.runtime.config.hash, ex.body)
            hit = await self._cache_get(ex)
            if hit is not None:
                return self._cache_hit(ex, *hit)
            ex.cache_status = MISS
        elif cache is not None:
            self._count_cache(ex, BYPASS)
        if ex.stream:
            return await self._serve_stream(request, ex)
        answer = await self._cascade.first_accepted(ex, ex.route.steps, last_is_final=True)
        assert answer is not None
        await self._finish(ex, answer)
        return web.Response(
            body=answer.body,
            headers=_headers(ex, answer.request_id, cost=True),
            content_type=JSON_TYPE,
        )

    async def _finish(self, ex: Exchange, answer: Answer) -> None:
        """Counterfactual cost and response-cache store of a final buffered answer."""
        assert self._cascade is not None
        self._cascade.account_counterfactual(ex, answer.usage, answer.tier.name, answer.cost)
        if ex.cache_key is not None:
            await self._cache_set(ex, encode_entry(answer.tier.name, answer.body))

    # Streaming.

    async def _serve_stream(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        assert self._cascade is not None
        steps = ex.route.steps
        if ex.route.stream_policy == "cascade" and len(steps) > 1:
            # Earlier steps run buffered: their answers must be checked before any byte goes
            # out. An accepted one is sent as a synthesized stream.
            answer = await self._cascade.first_accepted(ex, steps[:-1], last_is_final=False)
            if answer is not None:
                await self._finish(ex, answer)
                return self._sse_response(ex, answer.message, answer.request_id)
        stream, tier = await self._cascade.open_live(ex, steps[-1])
        ex.tier = tier.name
        return await self._relay(request, ex, stream)

    def _sse_response(
        self, ex: Exchange, message: Mapping[str, Any], request_id: str | None
    ) -> web.Response:
        data = synthesize_stream(message) + sse_comment(f"{COST_COMMENT}: {format_usd(ex.cost)}")
        self.metrics.child(self.metrics.ttft, ex.runtime.policy, ex.route.name, ex.tier).observe(
            time.perf_counter() - ex.started
        )
        headers = _headers(ex, request_id, cost=True)
        headers["Cache-Control"] = "no-cache"
        return web.Response(body=data, headers=headers, content_type=SSE_TYPE)

    async def _relay(
        self, request: web.Request, ex: Exchange, stream: Stream
    ) -> web.StreamResponse:
        """Pass a live upstream stream through, watching its events for usage and errors."""
        assert self._cascade is not None
        tier = ex.runtime.config.tiers[ex.tier]
        headers = _headers(ex, stream.request_id, cost=False)
        headers["Cache-Control"] = "no-cache"
        response = web.StreamResponse(headers=headers)
        response.content_type = SSE_TYPE
        tracker = StreamTracker(keep_message=ex.cache_key is not None)
        accounted = False
        try:
            await response.prepare(request)
            await self._pump(ex, tier, stream, response, tracker)
            if tracker.error is None and not tracker.stopped:
                tracker.error = {"type": "api_error"}
                await response.write(
                    error_event(
                        "api_error", f"the upstream stream of tier {tier.name!r} ended early"
                    )
                )
            self._account_usage(ex, tier, tracker)
            accounted = True
            # Cost is known only now: a comment line, which SSE clients ignore, carries it.
            await response.write(sse_comment(f"{COST_COMMENT}: {format_usd(ex.cost)}"))
            await response.write_eof()
        except ConnectionResetError:
            ex.outcome = "cancelled"  # the client went away; nobody to answer
            return response
        except asyncio.CancelledError:
            ex.outcome = "cancelled"
            raise
        finally:
            # An unfinished stream's connection is dropped, so the upstream stops generating.
            stream.close(abort=not tracker.stopped)
            if not accounted:
                self._account_usage(ex, tier, tracker)
        if tracker.error is not None:
            self._on_upstream_failure(tier.name, "stream")
            ex.outcome = "upstream_error"
            return response
        self._cascade.account_counterfactual(ex, Usage.from_anthropic(tracker.usage))
        final = tracker.final_message()
        if final is not None and ex.cache_key is not None:
            await self._cache_set(ex, encode_entry(tier.name, dumps(final)))
        return response

    async def _pump(
        self,
        ex: Exchange,
        tier: Tier,
        stream: Stream,
        response: web.StreamResponse,
        tracker: StreamTracker,
    ) -> None:
        """Copy upstream chunks to the client as they come; a broken upstream ends in an
        ``error`` event. Write errors (the client left) propagate."""
        parser = SSEParser()
        content = stream.response.content
        ttft_seen = False
        while True:
            try:
                chunk = await content.readany()
            except (aiohttp.ClientError, TimeoutError) as exc:
                tracker.error = {"type": "api_error"}
                await response.write(
                    error_event(
                        "api_error",
                        f"the upstream stream of tier {tier.name!r} broke: {type(exc).__name__}",
                    )
                )
                return
            if not chunk:
                return
            events = parser.feed(chunk)
            if events:
                tracker.feed(events)
            await response.write(chunk)
            if not ttft_seen and tracker.content_seen:
                ttft_seen = True
                self.metrics.child(
                    self.metrics.ttft, ex.runtime.policy, ex.route.name, tier.name
                ).observe(time.perf_counter() - ex.started)

    def _account_usage(self, ex: Exchange, tier: Tier, tracker: StreamTracker) -> None:
        """Cost of a live stream, from the usage its events reported (if it started)."""
        if tracker.started:
            assert self._cascade is not None
            self._cascade.account(ex, tier, Usage.from_anthropic(tracker.usage))

    # Response cache.

    async def _cache_get(self, ex: Exchange) -> tuple[str, bytes] | None:
        cache = ex.runtime.response_cache
        assert cache is not None and ex.cache_key is not None
        try:
            value = await cache.get(ex.cache_key)
        except Exception:
            log.debug("response cache lookup failed", exc_info=True)
            self._count_cache(ex, "error")
            return None
        if value is None:
            self._count_cache(ex, MISS)
            return None
        self._count_cache(ex, HIT)
        return decode_entry(value)

    async def _cache_set(self, ex: Exchange, value: bytes) -> None:
        cache = ex.runtime.response_cache
        assert cache is not None and ex.cache_key is not None
        try:
            await cache.set(ex.cache_key, value)
        except Exception:
            log.debug("response cache store failed", exc_info=True)
            self._count_cache(ex, "error")

    def _count_cache(self, ex: Exchange, result: str) -> None:
        self.metrics.child(
            self.metrics.response_cache, ex.runtime.policy, ex.route.name, result
        ).inc()

    def _cache_hit(self, ex: Exchange, tier: str, raw: bytes) -> web.Response:
        assert self._cascade is not None
        ex.cache_status = HIT
        ex.outcome = "cache_hit"
        ex.tier = tier
        message = loads(raw)
        # A hit spends nothing, but what it would have cost is still measured.
        self.metrics.cost.labels(ex.runtime.policy, ex.route.name, tier).inc(0)
        self._cascade.account_counterfactual(ex, Usage.from_anthropic(message.get("usage") or {}))
        if ex.stream:
            return self._sse_response(ex, message, None)
        return web.Response(body=raw, headers=_headers(ex, None, cost=True), content_type=JSON_TYPE)

    # input budgets.

    async def _within_budget(self, ex: Exchange, budget: InputBudget) -> dict[str, Any]:
        """The body to send: as is, trimmed under the route's budget, or a 400 (raised)."""
        tier = ex.runtime.config.tiers[ex.route.steps[0].tier]
        count, counted = await self._count_prompt(ex, ex.body, tier)
        original, body = count, ex.body
        limit = budget.max_input_tokens
        labels = (ex.runtime.policy, ex.route.name)
        if count <= limit:
            self.metrics.child(self.metrics.input_budget, *labels, "within", counted).inc()
            return body
        try:
            if budget.on_exceed == "reject":
                raise BudgetExceeded(count, limit)
            for _ in range(3):  # the estimate can be off: recount, trim again if needed
                estimate = estimate_prompt_tokens(body)
                scale = count / estimate if estimate else 1.0
                body = trim(body, budget.on_exceed, count - limit, scale).body
                count, counted = await self._count_prompt(ex, body, tier)
                if count <= limit:
                    break
            else:
                raise BudgetExceeded(count, limit)
        except BudgetExceeded:
            self.metrics.child(self.metrics.input_budget, *labels, "rejected", counted).inc()
            raise invalid_request(
                f"prompt is too long: {original} tokens > {limit} maximum "
                f"(the input budget of route {ex.route.name!r})"
            ) from None
        ex.trimmed_tokens = original - count
        saved = ex.trimmed_tokens * tier.prices.rates.input / MTOK
        self.metrics.child(self.metrics.input_budget, *labels, "trimmed", counted).inc()
        self.metrics.child(self.metrics.input_trimmed_tokens, *labels).inc(ex.trimmed_tokens)
        self.metrics.child(self.metrics.input_trim_saved, *labels).inc(float(saved))
        return body

    async def _count_prompt(
        self, ex: Exchange, body: Mapping[str, Any], tier: Tier
    ) -> tuple[int, str]:
        """The prompt's tokens by the tier model's count_tokens, else the local estimate."""
        assert self._upstream is not None
        payload = {
            k: v
            for k, v in build_count_tokens_request(body, ex.route, tier).items()
            if k in COUNTABLE_FIELDS
        }
        try:
            reply = await self._upstream.call(
                ex.runtime.clients[tier.name],
                COUNT_TOKENS_PATH,
                dumps(payload),
                ex.forwarded,
                ex.runtime.config.retry,
                attempts=1,
            )
            tokens = loads(reply.body).get("input_tokens")
            if isinstance(tokens, int) and not isinstance(tokens, bool):
                return tokens, "count_tokens"
        except (UpstreamFailure, ValueError, AttributeError):
            log.debug("count_tokens on tier %s failed; using the local estimate", tier.name)
        return estimated_count(payload), "estimate"

    # count_tokens.

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        runtime = self._runtime
        ex: Exchange | None = None
        started = time.perf_counter()
        try:
            body = await self._read_json(request)
            ex = self._exchange(runtime, request, body, started)
            ex.endpoint = "count_tokens"
            assert self._upstream is not None
            tier = runtime.config.tiers[ex.route.steps[0].tier]
            ex.tier = tier.name
            payload = build_count_tokens_request(body, ex.route, tier)
            reply = await self._upstream.call(
                runtime.clients[tier.name],
                COUNT_TOKENS_PATH,
                dumps(payload),
                ex.forwarded,
                runtime.config.retry,
            )
            headers = {"x-tierwise-route": ex.route.name, "x-tierwise-tier": tier.name}
            if reply.request_id:
                headers["request-id"] = reply.request_id
            return web.Response(body=reply.body, headers=headers, content_type=JSON_TYPE)
        except RouterError as exc:
            return _error_response(exc, ex)
        except UpstreamFailure as failure:
            assert ex is not None
            ex.outcome = "client_error" if failure.status < 500 else "upstream_error"
            return _failure_response(failure, ex)
        finally:
            if ex is not None:
                self.metrics.record_request(
                    runtime.policy,
                    ex.route.name,
                    ex.tier,
                    "count_tokens",
                    ex.outcome,
                    time.perf_counter() - started,
                )
            else:
                self.metrics.record_request(
                    runtime.policy,
                    "",
                    "",
                    "count_tokens",
                    "rejected",
                    time.perf_counter() - started,
                )


# --------------------------------------------------------------------------- helpers


def _headers(ex: Exchange, request_id: str | None, *, cost: bool) -> dict[str, str]:
    headers = {
        "x-tierwise-route": ex.route.name,
        "x-tierwise-tier": ex.tier,
        "x-tierwise-escalations": str(ex.escalations),
        "x-tierwise-cache": ex.cache_status,
    }
    if cost:
        headers["x-tierwise-cost-usd"] = format_usd(ex.cost)
    if ex.trimmed_tokens:
        headers["x-tierwise-input-trimmed-tokens"] = str(ex.trimmed_tokens)
    if request_id:
        headers["request-id"] = request_id
    return headers


def _error_response(error: RouterError, ex: Exchange | None = None) -> web.Response:
    headers = _headers(ex, None, cost=True) if ex is not None else {}
    return web.Response(
        status=error.status, body=error.body(), headers=headers, content_type=JSON_TYPE
    )


def _failure_response(failure: UpstreamFailure, ex: Exchange) -> web.Response:
    """The upstream's error as the client gets it, with what the router knows."""
    headers = _headers(ex, failure.request_id, cost=True)
    if failure.retry_after is not None:
        headers["retry-after"] = f"{failure.retry_after:g}"
    return web.Response(
        status=failure.status,
        body=upstream_error_body(failure.status, failure.body),
        headers=headers,
        content_type=JSON_TYPE,
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
