"""Message Batches pass-through to the route's batch tier, priced at batch rates."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anthropic
import pytest
from router_builder import HAIKU_MODEL, TIER_KEYS, config, route, step
from router_helpers import MODEL_PRICES, metric, metrics, sdk

from tierwise.pricing import Usage, cost_usd

pytestmark = pytest.mark.timeout(60)


def batch_doc(endpoint: str) -> dict[str, Any]:
    return config(
        endpoint,
        routes=[
            route("triage", [step("sonnet", 100)]),
            route(
                "nightly",
                [step("haiku", 64), step("sonnet", 128)],
                mode="batch",
                format_instruction="Answer in one word.",
            ),
        ],
    )


def requests(model: str, n: int = 2) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"item-{i}",
            "params": {
                "model": model,
                "max_tokens": 500,
                "messages": [{"role": "user", "content": f"question {i}"}],
            },
        }
        for i in range(n)
    ]


def test_batch_create_retrieve_and_results(emu: Any, make_router: Any) -> None:
    router = make_router(batch_doc(emu.base_url))
    client = sdk(router)
    batch = client.messages.batches.create(requests=requests("tierwise/nightly"))  # type: ignore[arg-type]
    created = emu.recorded_requests()[0]
    assert created.path == "/v1/messages/batches"
    assert created.headers["x-api-key"] == TIER_KEYS["haiku"]
    params = created.body["requests"][0]["params"]
    assert params["model"] == HAIKU_MODEL and params["max_tokens"] == 64
    assert params["system"] == "Answer in one word."
    assert batch.results_url is None or batch.results_url.startswith(router.base_url)

    fetched = client.messages.batches.retrieve(batch.id)
    assert fetched.id == batch.id and fetched.processing_status == "ended"
    assert fetched.results_url is not None and fetched.results_url.startswith(router.base_url)
    results = list(client.messages.batches.results(batch.id))
    assert sorted(r.custom_id for r in results) == ["item-0", "item-1"]
    assert all(r.result.type == "succeeded" for r in results)
    # Results are read through the router (with the tier's key), and priced at batch rates.
    assert emu.recorded_requests()[-1].path.endswith("/results")
    expected = sum(
        cost_usd(
            Usage.from_anthropic(r.result.message.usage),
            MODEL_PRICES[HAIKU_MODEL],  # type: ignore[union-attr]
            batch=True,
        )
        for r in results
    )
    list(client.messages.batches.results(batch.id))  # read twice, counted once
    samples = metrics(router.metrics_url)
    assert metric(
        samples, "tierwise_router_cost_usd_total", route="nightly", tier="haiku"
    ) == pytest.approx(float(expected))
    assert expected < sum(
        cost_usd(Usage.from_anthropic(r.result.message.usage), MODEL_PRICES[HAIKU_MODEL])  # type: ignore[union-attr]
        for r in results
    ) * Decimal("0.51")
    assert (
        metric(samples, "tierwise_router_requests_total", endpoint="batches", outcome="success")
        >= 4
    )


def test_batch_list_and_cancel(emu: Any, make_router: Any) -> None:
    router = make_router(batch_doc(emu.base_url))
    client = sdk(router)
    batch = client.messages.batches.create(requests=requests("tierwise/nightly", 1))  # type: ignore[arg-type]
    page = client.messages.batches.list(extra_headers={"x-tierwise-route": "nightly"})
    assert batch.id in [b.id for b in page.data]
    cancelled = client.messages.batches.cancel(batch.id)
    assert cancelled.id == batch.id


def test_batch_with_requests_for_two_routes_is_rejected(emu: Any, make_router: Any) -> None:
    router = make_router(batch_doc(emu.base_url))
    mixed = requests("tierwise/nightly", 1) + requests("tierwise/triage", 2)[1:]
    with pytest.raises(anthropic.BadRequestError, match="one route"):
        sdk(router).messages.batches.create(requests=mixed)  # type: ignore[arg-type]
    assert emu.recorded_requests() == []


def test_synchronous_call_to_a_batch_route_is_a_400_that_says_how_to_submit(
    emu: Any, make_router: Any
) -> None:
    routes = [route("nightly", [step("haiku")], mode="batch")]
    router = make_router(config(emu.base_url, routes=routes, default_route=None))
    with pytest.raises(anthropic.BadRequestError) as info:
        sdk(router).messages.create(
            model="tierwise/nightly", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    message = info.value.body["error"]["message"]  # type: ignore[index]
    assert "batch route" in message and "client.messages.batches.create" in message
    assert emu.recorded_requests() == []
