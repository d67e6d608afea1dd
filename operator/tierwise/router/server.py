"""The router's HTTP edges: the Messages API app and the metrics/health app.

Thin on purpose: the config and its reloads live in ``reload``, the shared request pipeline
(body, route, failure classification, metrics) in ``pipeline``, the cascade in ``cascade``,
live streams in ``relay``, the response cache glue in ``response_cache_check`` and the batch proxy in
``batches``. Each endpoint here only says what is specific to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from tierwise.router.batch_cascade import DEFAULT_MAX_STORE_BYTES, BatchStore
from tierwise.router.batches import BatchProxy
from tierwise.router.capture import Capture, CaptureSettings
from tierwise.router.cascade import Cascade, Exchange
from tierwise.router.errors import invalid_request, not_found
from tierwise.router.jsonutil import dumps
from tierwise.router.metrics import RouterMetrics
from tierwise.router.pipeline import (
    Call,
    Pipeline,
    Services,
    error_response,
    json_response,
)
from tierwise.router.relay import Relay
from tierwise.router.reload import ConfigHolder, ConfigSource
from tierwise.router.request import build_count_tokens_request
from tierwise.router.request_path import RequestPath
from tierwise.router.response_cache_check import ResponseCacheCheck
from tierwise.router.shadow import ShadowRunner
from tierwise.router.spend_budget import SpendBudgets
from tierwise.router.upstream import COUNT_TOKENS_PATH, Upstream
from tierwise.routerconfig import RouterConfig
from tierwise.routerconfig.sidecar import HEADER_TIMEOUT_SECONDS, MAX_BODY_BYTES

log = logging.getLogger("tierwise.router")

DEFAULT_MAX_BODY_BYTES = MAX_BODY_BYTES
DEFAULT_RELOAD_INTERVAL = 1.0

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_RELOAD_INTERVAL", "ConfigSource", "Router"]


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
        header_timeout: float = HEADER_TIMEOUT_SECONDS,
        metrics: RouterMetrics | None = None,
        batch_state_dir: str | os.PathLike[str] | None = None,
        batch_state_max_bytes: int = DEFAULT_MAX_STORE_BYTES,
        spend_clock: Callable[[], float] | None = None,
        capture: CaptureSettings | None = None,
    ) -> None:
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.max_body_bytes = max_body_bytes
        self.reload_interval = reload_interval
        self.header_timeout = header_timeout
        self.metrics = metrics or RouterMetrics()
        self._background: set[asyncio.Task[Any]] = set()
        self.holder = ConfigHolder(config, self.env, self.metrics, self._spawn)
        self.services = Services(current=self.holder.current, metrics=self.metrics)
        self.pipeline = Pipeline(self.services, max_body_bytes)
        self.cache = ResponseCacheCheck(self.metrics)
        # ``spend_clock``: wall time for budget windows (a test crosses a boundary with it).
        self.spend = SpendBudgets(self.metrics, self.env, clock=spend_clock or time.time)
        self.batch_state = BatchStore(batch_state_dir, batch_state_max_bytes)
        self._relay: Relay | None = None
        self._path: RequestPath | None = None
        # The shadow stage: a candidate config answering a sample of live requests.
        self.shadow = ShadowRunner(self.metrics, self.env, lambda: self.holder.runtime.policy)
        self._shadow_watcher: asyncio.Task[None] | None = None
        # Opt-in capture of live requests for datasets (off without settings).
        self.capture = None if capture is None else Capture(capture, self.metrics)
        self._session: aiohttp.ClientSession | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.app = self._build_app()
        self.metrics_app = self._build_metrics_app()
        self._runners: list[web.AppRunner] = []
        self.base_url: str | None = None
        self.metrics_url: str | None = None

    # ---------------------------------------------------------------- config

    @property
    def config(self) -> RouterConfig:
        return self.holder.config

    @property
    def config_path(self) -> Any:
        return self.holder.path

    @property
    def ready(self) -> bool:
        return self.holder.runtime is not None

    def apply_config(self, config: RouterConfig) -> None:
        """Swap to ``config`` atomically: requests in flight finish on the old one."""
        self.holder.apply(config)

    def check_config_file(self) -> bool | None:
        """Reload the watched file if its content changed: True ok, False kept out, None same."""
        return self.holder.check_file()

    # ------------------------------------------------------------- lifecycle

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post(COUNT_TOKENS_PATH, self._count_tokens)
        BatchProxy(self.pipeline, self.batch_state, self.spend).add_routes(app)
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
        upstream = Upstream(
            self._session,
            self._on_upstream_failure,
            self._on_retry,
            on_queue_wait=self._on_queue_wait,
        )
        cascade = Cascade(upstream, self.metrics)
        self.services.upstream = upstream
        self.services.cascade = cascade
        self._path = RequestPath(cascade, self.metrics)
        self._relay = Relay(self.metrics, cascade, self._on_upstream_failure)
        self.shadow.start(self._session)
        if self.holder.path is not None:
            self.shadow.watch_beside(self.holder.path)
        if self.holder.path is not None and self.reload_interval > 0:
            self._watcher = asyncio.get_running_loop().create_task(
                self.holder.watch(self.reload_interval)
            )
            self._shadow_watcher = asyncio.get_running_loop().create_task(
                self.shadow.watch(self.reload_interval)
            )

    async def _on_cleanup(self, _app: web.Application) -> None:
        for watcher in (self._watcher, self._shadow_watcher):
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        await self.shadow.stop()
        for task in list(self._background):
            task.cancel()
        await self.spend.close()
        cache = self.holder.runtime.response_cache
        if cache is not None:
            with contextlib.suppress(Exception):
                await cache.close()
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
            # keepalive_timeout: aiohttp arms it when a connection opens, so it is also the
            # header-read timeout (a connection that sends no complete request is closed).
            runner = web.AppRunner(
                app,
                access_log=None,
                handler_cancellation=True,
                shutdown_timeout=2.0,
                keepalive_timeout=self.header_timeout,
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
        self.metrics.upstream_errors.labels(self.holder.runtime.policy, tier, kind).inc()
        log.debug("upstream failure on tier %s: %s", tier, kind)

    def _on_retry(self, tier: str) -> None:
        self.metrics.retries.labels(self.holder.runtime.policy, tier).inc()

    def _on_queue_wait(self, tier: str, seconds: float) -> None:
        policy = self.holder.runtime.policy
        self.metrics.child(self.metrics.queue_wait, policy, tier).observe(seconds)

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
        return web.json_response(self.holder.readiness())

    # ------------------------------------------------------- Messages API

    async def _unknown_path(self, request: web.Request) -> web.Response:
        return error_response(not_found(f"Not found: {request.method} {request.path}"))

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        return await self.pipeline.handle(request, "messages", self._serve_messages)

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        return await self.pipeline.handle(request, "count_tokens", self._serve_count_tokens)

    async def _serve_messages(self, call: Call) -> web.StreamResponse:
        cascade, path = self.services.cascade, self._path
        assert cascade and path and self._relay, "the router app is not started"
        body = await self.pipeline.read_json(call.request)
        route = self.pipeline.route(call, body.get("model"))
        ex = call.begin(route, body, stream=body.get("stream") is True)
        if route.mode == "batch":
            raise invalid_request(
                f"route {route.name!r} is a batch route: submit its requests as a Message Batch "
                "(POST /v1/messages/batches, client.messages.batches.create), one request per "
                "item with this model; synchronous calls are not served on it"
            )
        await path.admit(ex)  # the one request path (router.request_path), also the eval's
        admission = await self.spend.admit(ex, call.request.headers)
        try:
            return await self._answer_messages(call, ex, cascade, path, body)
        finally:  # what was billed is counted, also for a client that went away mid-stream
            await self.spend.release(admission, ex)

    async def _answer_messages(
        self,
        call: Call,
        ex: Exchange,
        cascade: Cascade,
        path: RequestPath,
        body: dict[str, Any],
    ) -> web.StreamResponse:
        assert self._relay is not None
        hit = await self.cache.lookup(ex, call.request)
        if hit is not None:
            tier, raw = hit
            message = self.cache.serve_hit(ex, cascade, tier, raw)
            self._answered(ex, body, call.request.headers, message)
            if ex.stream:
                return self._relay.synthesized(ex, message, None)
            return json_response(raw, ex, None)
        if ex.stream:
            return await self._serve_stream(call.request, ex, cascade, body)
        answer = await path.answer(ex)
        await self.cache.store(ex, answer.tier.name, answer.body)
        # The answer is complete: a sample, if any, runs in the background from here.
        self._answered(ex, body, call.request.headers, answer.message)
        return json_response(answer.body, ex, answer.request_id)

    async def _serve_stream(
        self, request: web.Request, ex: Exchange, cascade: Cascade, body: dict[str, Any]
    ) -> web.StreamResponse:
        assert self._relay is not None

        async def finished(ex: Exchange, tier: str, final: bytes) -> None:
            # The stream's final message, after the client's last byte: cache it, shadow it.
            await self.cache.store(ex, tier, final)
            self._answered(ex, body, request.headers, final)

        steps = ex.route.steps
        if ex.route.stream_policy == "cascade" and len(steps) > 1:
            # Earlier steps run buffered: their answers must be checked before any byte goes
            # out. An accepted one is sent as a synthesized stream.
            answer = await cascade.first_accepted(ex, steps[:-1], last_is_final=False)
            if answer is not None:
                cascade.account_counterfactual(ex, answer.usage, answer.tier.name, answer.cost)
                await self.cache.store(ex, answer.tier.name, answer.body)
                self._answered(ex, body, request.headers, answer.message)
                return self._relay.synthesized(ex, answer.message, answer.request_id)
        stream, tier = await cascade.open_live(ex, steps[-1])
        ex.tier = tier.name
        keep = self.shadow.shadows(ex.route.name) or self.capture is not None
        return await self._relay.live(request, ex, stream, tier, finished, keep)

    def _answered(
        self,
        ex: Exchange,
        body: dict[str, Any],
        headers: Mapping[str, str],
        answer: Mapping[str, Any] | bytes,
    ) -> None:
        """The client's answer is complete: offer it to the shadow stage and the capture,
        which work in the background and never touch the response."""
        self.shadow.offer(ex, body, headers, answer)
        if self.capture is not None:
            self.capture.offer(ex, body, headers, answer)

    async def _serve_count_tokens(self, call: Call) -> web.StreamResponse:
        body = await self.pipeline.read_json(call.request)
        route = self.pipeline.route(call, body.get("model"))
        ex = call.begin(route, body)
        tier = call.runtime.config.tiers[route.steps[0].tier]
        ex.tier = tier.name
        payload = build_count_tokens_request(body, route, tier)
        reply = await self.pipeline.call_tier(call, ex, tier, COUNT_TOKENS_PATH, dumps(payload))
        return json_response(reply.body, ex, reply.request_id)


# --------------------------------------------------------------------------- helpers


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
