"""Running a router in-process: in the caller's event loop, or in a background thread.

For the demo, evals, benchmarks and tests::

    async with running_router(config, env={"TIERWISE_TIER_HAIKU_API_KEY": key}) as r:
        client = anthropic.AsyncAnthropic(base_url=r.base_url, api_key="unused")
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

from tierwise.router.server import ConfigSource, Router

T = TypeVar("T")
START_TIMEOUT_SECONDS = 10.0


@asynccontextmanager
async def running_router(
    config: ConfigSource,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    metrics_host: str = "127.0.0.1",
    metrics_port: int = 0,
    **options: Any,
) -> AsyncIterator[Router]:
    """Serve a router for the ``async with`` block; yields it (``.base_url``,
    ``.metrics_url``). ``options`` go to ``Router`` (``env``, ``max_body_bytes``,
    ``reload_interval``)."""
    router = Router(config, **options)
    await router.start(host, port, metrics_host, metrics_port)
    try:
        yield router
    finally:
        await router.stop()


class RouterThread:
    """A router serving from a background thread with its own event loop, for sync code."""

    def __init__(
        self,
        config: ConfigSource,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        metrics_host: str = "127.0.0.1",
        metrics_port: int = 0,
        **options: Any,
    ) -> None:
        self._config = config
        self._options = options
        self._address = (host, port, metrics_host, metrics_port)
        self.router: Router | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        assert self.router is not None and self.router.base_url, "not started"
        return self.router.base_url

    @property
    def metrics_url(self) -> str:
        assert self.router is not None and self.router.metrics_url, "not started"
        return self.router.metrics_url

    def start(self) -> RouterThread:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._serve, name="tierwise-router", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_SECONDS):
            raise RuntimeError("the router did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self.router = Router(self._config, **self._options)
            loop.run_until_complete(self.router.start(*self._address))
        except BaseException as exc:  # handed to start()'s caller
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.router.stop())
            loop.close()

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` on the router's loop (e.g. ``router.apply_config``)."""
        assert self._loop is not None, "not started"

        async def run() -> T:
            return function(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(START_TIMEOUT_SECONDS)

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(START_TIMEOUT_SECONDS)
        self._thread = None
        self._loop = None

    def __enter__(self) -> RouterThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
