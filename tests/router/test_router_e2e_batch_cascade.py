"""Batch cascades with the official SDK's batch helpers: three steps, one batch to the client,
and restarts of the router (between steps) and of the upstream (mid-batch)."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest
from router_builder import (
    HAIKU_MODEL,
    OPUS_MODEL,
    SONNET_MODEL,
    TIER_KEYS,
    config,
    route,
    step,
    tier_env,
)
from router_helpers import free_port, metric, metrics, raw_request, sdk

from tierwise.emulator import EmulatorConfig, EmulatorThread
from tierwise.router import RouterThread

pytestmark = pytest.mark.timeout(90)

SURE = '{"label": "bug", "confidence": 0.95}'
UNSURE = '{"label": "bug", "confidence": 0.3}'
SIGNAL = {"signal": "jsonFieldBelow", "field": "confidence", "threshold": 0.8}
ITEMS = 6


def three_steps(endpoint: str) -> dict[str, Any]:
    steps = [step("haiku", 200, SIGNAL), step("sonnet", 200, SIGNAL), step("opus", 200)]
    return config(
        endpoint, [route("nightly", steps, mode="batch", counterfactual="opus")], default_route=None
    )


def requests() -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"email-{i:02d}",
            "params": {
                "model": "tierwise/nightly",
                "max_tokens": 400,
                "messages": [{"role": "user", "content": f"Classify email {i}"}],
            },
        }
        for i in range(ITEMS)
    ]


def script(emu: EmulatorThread) -> None:
    # Whatever order the items run in: 2 of 6 are sure on haiku, 2 of the 4 left on sonnet.
    emu.script(HAIKU_MODEL, [{"text": SURE}] * 2 + [{"text": UNSURE}] * 4)
    emu.script(SONNET_MODEL, [{"text": SURE}] * 2 + [{"text": UNSURE}] * 2)
    emu.script(OPUS_MODEL, [{"text": SURE}] * 2)


def poll_until_ended(client: anthropic.Anthropic, batch_id: str, seen: list[str]) -> Any:
    for _ in range(200):
        batch = client.messages.batches.retrieve(batch_id)
        counts = batch.request_counts
        total = (
            counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
        )
        assert batch.id == batch_id and total == ITEMS  # a valid batch throughout
        seen.append(batch.processing_status)
        if batch.processing_status == "ended":
            return batch
        time.sleep(0.05)
    raise AssertionError("the batch cascade did not end")


def check_results(client: anthropic.Anthropic, batch_id: str, emu: EmulatorThread) -> Decimal:
    results = list(client.messages.batches.results(batch_id))
    # One result per request, in the order they were submitted.
    assert [r.custom_id for r in results] == [r["custom_id"] for r in requests()]
    assert all(r.result.type == "succeeded" for r in results)
    assert all(r.result.message.content[0].text == SURE for r in results)  # type: ignore[union-attr]
    by_tier = [r.model_extra["tierwise"]["tier"] for r in results]  # type: ignore[index]
    assert sorted(by_tier) == ["haiku"] * 2 + ["opus"] * 2 + ["sonnet"] * 2
    escalations = {
        t: {
            r.model_extra["tierwise"]["escalations"]
            for r in results
            if r.model_extra["tierwise"]["tier"] == t
        }
        for t in by_tier
    }  # type: ignore[index]
    assert escalations == {"haiku": {0}, "sonnet": {1}, "opus": {2}}
    # Upstream: one batch per step, with only the items that escalated.
    created = [r for r in emu.recorded_requests() if r.path == "/v1/messages/batches"]
    sizes = [(r.body["requests"][0]["params"]["model"], len(r.body["requests"])) for r in created]
    assert sizes[-3:] == [(HAIKU_MODEL, 6), (SONNET_MODEL, 4), (OPUS_MODEL, 2)]
    # Every item's cost is its steps' usage at batch prices.
    total = Decimal(0)
    for r in results:
        total += Decimal(r.model_extra["tierwise"]["cost_usd"])  # type: ignore[index]
    return total


def test_three_step_batch_cascade_is_one_batch_to_the_sdk(emu: Any, make_router: Any) -> None:
    router = make_router(three_steps(emu.base_url))
    client = sdk(router)
    script(emu)
    batch = client.messages.batches.create(requests=requests())  # type: ignore[arg-type]
    assert batch.id.startswith("msgbatch_tw") and batch.processing_status == "in_progress"
    assert batch.request_counts.processing == ITEMS
    seen: list[str] = []
    ended = poll_until_ended(client, batch.id, seen)
    assert ended.request_counts.succeeded == ITEMS and ended.results_url
    total = check_results(client, batch.id, emu)
    assert total > 0
    samples = metrics(router.metrics_url)
    assert metric(samples, "tierwise_router_cost_usd_total", route="nightly") == pytest.approx(
        float(total)
    )
    assert metric(samples, "tierwise_router_escalations_total", route="nightly") == 6  # 4 + 2
    # The listing shows the client's batch, not the three upstream ones.
    listed = [
        b.id
        for b in client.messages.batches.list(extra_headers={"x-tierwise-route": "nightly"}).data
    ]
    assert batch.id in listed


def test_results_before_the_end_are_an_error_and_a_batch_route_refuses_sync_calls(
    emu: Any, make_router: Any
) -> None:
    router = make_router(three_steps(emu.base_url))
    client = sdk(router)
    script(emu)
    batch = client.messages.batches.create(requests=requests())  # type: ignore[arg-type]
    # The SDK asks for results only once results_url is set ...
    with pytest.raises(anthropic.AnthropicError, match="finished processing"):
        list(client.messages.batches.results(batch.id))
    # ... and a client that asks anyway gets the API's error shape.
    status, _, body = raw_request(
        router.base_url, f"/v1/messages/batches/{batch.id}/results", method="GET"
    )
    assert status == 400 and b"has not ended yet" in body
    with pytest.raises(anthropic.BadRequestError, match="batch route"):
        client.messages.create(
            model="tierwise/nightly", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )


def test_router_restart_between_steps_loses_nothing(emu: Any, tmp_path: Path) -> None:
    state = tmp_path / "batches"
    first = RouterThread(three_steps(emu.base_url), env=tier_env(), batch_state_dir=state).start()
    script(emu)
    try:
        client = sdk(first)
        batch = client.messages.batches.create(requests=requests())  # type: ignore[arg-type]
        client.messages.batches.retrieve(batch.id)  # haiku's batch ended: sonnet's submitted
    finally:
        first.stop()
    assert list(state.glob(f"o-*/*-{batch.id}/state.json"))  # on disk, under its owner
    second = RouterThread(three_steps(emu.base_url), env=tier_env(), batch_state_dir=state).start()
    try:
        client = sdk(second)
        poll_until_ended(client, batch.id, [])
        check_results(client, batch.id, emu)
    finally:
        second.stop()


def test_upstream_restart_mid_batch_loses_nothing(make_router: Any) -> None:
    port = free_port()
    settings = EmulatorConfig(
        zero_latency=True, api_keys=frozenset(TIER_KEYS.values()), batch_processing_seconds=30.0
    )
    upstream = EmulatorThread(settings, port=port).start()
    router = make_router(three_steps(upstream.base_url))
    client = sdk(router)
    batch = client.messages.batches.create(requests=requests())  # type: ignore[arg-type]
    assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"
    upstream.stop()  # the upstream goes away with the step's batch half done
    down = client.messages.batches.retrieve(batch.id)  # still a valid batch, in progress
    assert down.processing_status == "in_progress" and down.request_counts.processing == ITEMS
    restarted = EmulatorThread(
        EmulatorConfig(zero_latency=True, api_keys=frozenset(TIER_KEYS.values())), port=port
    ).start()
    try:
        script(restarted)
        poll_until_ended(client, batch.id, [])
        check_results(client, batch.id, restarted)
    finally:
        restarted.stop()
