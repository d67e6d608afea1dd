"""The in-process Python API: running_router in the test's loop, apply_config, registries."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from router_builder import HAIKU_MODEL, OPUS_MODEL, TIER_KEYS, config, route, step, tier_env
from router_helpers import CLIENT_KEY, user

from tierwise.emulator import EmulatorConfig, running_emulator
from tierwise.router import ConfigError, Router, load_config, running_router

pytestmark = pytest.mark.timeout(60)


def single(endpoint: str, tier: str) -> dict[str, Any]:
    return config(endpoint, routes=[route("triage", [step(tier, 100)])])


async def test_running_router_in_the_callers_loop() -> None:
    emulator_config = EmulatorConfig(zero_latency=True, api_keys=frozenset(TIER_KEYS.values()))
    async with (
        running_emulator(emulator_config) as emu,
        running_router(load_config(single(emu.base_url, "haiku")), env=tier_env()) as router,
        running_router(single(emu.base_url, "opus"), env=tier_env()) as other,
        anthropic.AsyncAnthropic(
            base_url=router.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=15
        ) as client,
    ):
        message = await client.messages.create(
            model="tierwise/triage", max_tokens=10, messages=user("x")
        )
        assert message.model == HAIKU_MODEL
        # Two routers in one process keep separate registries.
        assert router.metrics.registry is not other.metrics.registry
        assert (
            router.metrics.registry.get_sample_value(
                "tierwise_router_requests_total",
                {
                    "policy": "support/email-triage",
                    "route": "triage",
                    "tier": "haiku",
                    "endpoint": "messages",
                    "outcome": "success",
                },
            )
            == 1
        )
        assert (
            other.metrics.registry.get_sample_value(
                "tierwise_router_requests_total",
                {
                    "policy": "support/email-triage",
                    "route": "triage",
                    "tier": "haiku",
                    "endpoint": "messages",
                    "outcome": "success",
                },
            )
            is None
        )
        # apply_config swaps the config of a running router.
        router.apply_config(load_config(single(emu.base_url, "opus")))
        message = await client.messages.create(
            model="tierwise/triage", max_tokens=10, messages=user("x")
        )
        assert message.model == OPUS_MODEL


def test_router_refuses_an_invalid_config() -> None:
    with pytest.raises(ConfigError):
        Router({"schemaVersion": "tierwise.dev/router-config/v1"})
