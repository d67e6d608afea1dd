"""Fixtures: the emulator, routers in front of it, SDK clients, a real redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from router_builder import TIER_KEYS, tier_env
from router_helpers import free_port

from tierwise.emulator import EmulatorConfig, EmulatorThread
from tierwise.router import RouterThread


@pytest.fixture(scope="module")
def emulator_thread() -> Iterator[EmulatorThread]:
    # Only the tiers' keys are accepted: a forwarded client key would get a 401.
    config = EmulatorConfig(zero_latency=True, api_keys=frozenset(TIER_KEYS.values()))
    with EmulatorThread(config) as thread:
        yield thread


@pytest.fixture
def emu(emulator_thread: EmulatorThread) -> Iterator[EmulatorThread]:
    """The module's emulator, reset before each test (scripts, records, prompt cache)."""
    emulator_thread.reset()
    yield emulator_thread


RouterFactory = Callable[..., RouterThread]


@pytest.fixture
def make_router() -> Iterator[RouterFactory]:
    """Start routers (in threads) for a config document or path; stopped after the test."""
    started: list[RouterThread] = []

    def make(config: Any, **options: Any) -> RouterThread:
        options.setdefault("env", tier_env())
        thread = RouterThread(config, **options).start()
        started.append(thread)
        return thread

    yield make
    for thread in started:
        thread.stop()


# --- redis ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on a free port; fails (never skips) when it is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed: run `make redis` (hack/install-redis.sh); "
            "`make test` does this for you",
            pytrace=False,
        )
    port = free_port()
    workdir: Path = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start on port {port}", pytrace=False)
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
