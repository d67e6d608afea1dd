"""Fixtures: an emulator in a background thread (sync SDK) or in the test's loop (async)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anthropic
import pytest
from emulator_helpers import API_KEY

from tierwise.emulator import Emulator, EmulatorConfig, EmulatorThread, running_emulator


@pytest.fixture(scope="module")
def emulator_thread() -> Iterator[EmulatorThread]:
    with EmulatorThread(EmulatorConfig(zero_latency=True)) as thread:
        yield thread


@pytest.fixture
def emu(emulator_thread: EmulatorThread) -> Iterator[EmulatorThread]:
    """The module's emulator, reset before each test."""
    emulator_thread.reset()
    yield emulator_thread


@pytest.fixture
def client(emu: EmulatorThread) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=emu.base_url, api_key=API_KEY, max_retries=0, timeout=10.0
    ) as sdk:
        yield sdk


@pytest.fixture
async def async_emu() -> AsyncIterator[Emulator]:
    async with running_emulator(EmulatorConfig(zero_latency=True)) as emulator:
        yield emulator


@pytest.fixture
async def async_client(async_emu: Emulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    assert async_emu.base_url is not None
    async with anthropic.AsyncAnthropic(
        base_url=async_emu.base_url, api_key=API_KEY, max_retries=0, timeout=10.0
    ) as sdk:
        yield sdk
