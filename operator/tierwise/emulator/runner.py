"""Running an emulator on a free local port: in the test's event loop, or in a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

from tierwise.emulator.answers import Dataset
from tierwise.emulator.config import EmulatorConfig
from tierwise.emulator.faults import ScriptStep
from tierwise.emulator.recording import RecordedRequest
from tierwise.emulator.server import Emulator

T = TypeVar("T")
START_TIMEOUT_SECONDS = 10.0


@asynccontextmanager
async def running_emulator(
    config: EmulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    emulator: Emulator | None = None,
) -> AsyncIterator[Emulator]:
    """Serve an emulator in the current event loop for the ``async with`` block.

    Yields the ``Emulator``; ``emu.base_url`` is where to point the SDK.
    """
    emu = emulator or Emulator(config)
    await emu.start(host, port)
    try:
        yield emu
    finally:
        await emu.stop()


class EmulatorThread:
    """An emulator serving from a background thread, for synchronous tests and clients.

    The control methods run on the server's own loop, so they are safe to call from the
    test's thread while requests are in flight.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        emulator: Emulator | None = None,
    ) -> None:
        self.emulator = emulator or Emulator(config)
        self._host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        if self.emulator.base_url is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self.emulator.base_url

    def start(self) -> EmulatorThread:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._serve, name="tierwise-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_SECONDS):
            raise RuntimeError("the emulator did not start in time")
        if self._error is not None:
            raise RuntimeError(f"the emulator failed to start: {self._error}") from self._error
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self.emulator.start(self._host, self._port))
        except BaseException as exc:  # reported to start()'s caller
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.emulator.stop())
            loop.close()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(START_TIMEOUT_SECONDS)
        self._thread = None
        self._loop = None

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Controls, run on the server's loop.

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``function(*args, **kwargs)`` on the emulator's loop and return its result."""
        loop = self._loop
        if loop is None:
            return function(*args, **kwargs)

        async def run() -> T:
            return function(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(START_TIMEOUT_SECONDS)

    def script(self, model: str, responses: Iterable[Mapping[str, Any] | ScriptStep]) -> int:
        return self.call(self.emulator.script, model, list(responses))

    def set_faults(self, model: str, **rates: Any) -> None:
        self.call(self.emulator.set_faults, model, **rates)

    def fail_batches(
        self, operation: str, statuses: Iterable[int] = (), create_delay: float | None = None
    ) -> int:
        return self.call(self.emulator.fail_batches, operation, list(statuses), create_delay)

    def reset(self, *, cache: bool = True) -> None:
        self.call(self.emulator.reset, cache=cache)

    def recorded_requests(
        self, *, model: str | None = None, path: str | None = None
    ) -> list[RecordedRequest]:
        return self.call(self.emulator.recorded_requests, model=model, path=path)

    def advance_clock(self, seconds: float) -> float:
        return self.call(self.emulator.advance_clock, seconds)

    def load_dataset(self, dataset: Dataset | None) -> None:
        self.call(self.emulator.load_dataset, dataset)

    def stats(self) -> dict[str, Any]:
        return self.call(self.emulator.stats_dict)

    @property
    def cancelled_streams(self) -> int:
        return self.emulator.cancelled_streams
