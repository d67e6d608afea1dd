"""Routing, cascades, caps and cost headers: the real SDK through the router to the emulator."""

from __future__ import annotations

from decimal import Decimal
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
    triage_route,
)
from router_helpers import CLIENT_KEY, recorded_cost, sdk, user

pytestmark = pytest.mark.timeout(60)

GOOD = '{"label": "bug", "confidence": 0.93}'


def routing_doc(endpoint: str, default: str | None = "triage") -> dict[str, Any]:
    return config(
        endpoint,
        routes=[
            triage_route(),
            route("summarize", [step("opus", 300)], models=[SONNET_MODEL]),
        ],
        default_route=default,
    )


def test_model_alias_selects_the_route(emu: Any, make_router: Any) -> None:
    router = make_router(routing_doc(emu.base_url))
    emu.script(HAIKU_MODEL, [{"text": GOOD}])
    raw = sdk(router).messages.with_raw_response.create(
        model="tierwise/triage", max_tokens=1000, messages=user("my invoice is wrong")
    )
    message = raw.parse()
    assert raw.headers["x-tierwise-route"] == "triage"
    assert raw.headers["x-tierwise-tier"] == "haiku"
    assert raw.headers["x-tierwise-escalations"] == "0"
    assert message.content[0].text == GOOD
    assert message.model == HAIKU_MODEL
    assert [r.model for r in emu.recorded_requests()] == [HAIKU_MODEL]


def test_mapped_real_model_selects_its_route(emu: Any, make_router: Any) -> None:
    router = make_router(routing_doc(emu.base_url))
    raw = sdk(router).messages.with_raw_response.create(
        model=SONNET_MODEL, max_tokens=1000, messages=user("summarize this")
    )
    assert raw.headers["x-tierwise-route"] == "summarize"
    assert raw.headers["x-tierwise-tier"] == "opus"
    assert [r.model for r in emu.recorded_requests()] == [OPUS_MODEL]


def test_route_header_wins_over_the_model(emu: Any, make_router: Any) -> None:
    router = make_router(routing_doc(emu.base_url))
    raw = sdk(router).messages.with_raw_response.create(
        model=SONNET_MODEL,
        max_tokens=10,
        messages=user("x"),
        extra_headers={"x-tierwise-route": "triage"},
    )
    assert raw.headers["x-tierwise-route"] == "triage"
    assert emu.recorded_requests()[0].model == HAIKU_MODEL


def test_default_route_catches_other_models(emu: Any, make_router: Any) -> None:
    router = make_router(routing_doc(emu.base_url))
    emu.script(HAIKU_MODEL, [{"text": GOOD}])
    raw = sdk(router).messages.with_raw_response.create(
        model="claude-3-haiku", max_tokens=10, messages=user("x")
    )
    assert raw.headers["x-tierwise-route"] == "triage"


def test_no_route_is_a_not_found_error_naming_the_model(emu: Any, make_router: Any) -> None:
    router = make_router(routing_doc(emu.base_url, default=None))
    with pytest.raises(anthropic.NotFoundError) as info:
        sdk(router).messages.create(model="gpt-9", max_tokens=10, messages=user("x"))
    assert info.value.status_code == 404
    assert info.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert "gpt-9" in info.value.body["error"]["message"]  # type: ignore[index]
    assert emu.recorded_requests() == []


def test_unknown_route_header_is_not_found(emu: Any, make_router: Any) -> None:
    router = make_router(routing_doc(emu.base_url))
    with pytest.raises(anthropic.NotFoundError, match="nope"):
        sdk(router).messages.create(
            model="tierwise/triage",
            max_tokens=10,
            messages=user("x"),
            extra_headers={"x-tierwise-route": "nope"},
        )


# --- escalation signals -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("haiku_answer", "reason"),
    [
        ({"text": "It is probably a bug."}, "invalid_json"),
        ({"text": '{"label": "bug", "confidence": 0.42}'}, "json_field_below"),
        ({"text": '{"label": "refund", "confidence": 0.99}'}, "json_field_not_in"),
        ({"text": GOOD, "stop_reason": "refusal"}, "refusal"),
        (
            {"text": '{"label": "bug", "confidence": 0.9', "stop_reason": "max_tokens"},
            "stop_reason",
        ),
    ],
)
def test_each_signal_escalates(
    emu: Any, make_router: Any, haiku_answer: dict[str, Any], reason: str
) -> None:
    router = make_router(config(emu.base_url))
    emu.script(HAIKU_MODEL, [haiku_answer])
    emu.script(SONNET_MODEL, [{"text": '{"label": "billing", "confidence": 0.97}'}])
    raw = sdk(router).messages.with_raw_response.create(
        model="tierwise/triage", max_tokens=1000, messages=user("where is my refund")
    )
    assert raw.headers["x-tierwise-tier"] == "sonnet"
    assert raw.headers["x-tierwise-escalations"] == "1"
    assert raw.parse().content[0].text == '{"label": "billing", "confidence": 0.97}'
    assert [r.model for r in emu.recorded_requests()] == [HAIKU_MODEL, SONNET_MODEL]


def test_regex_signal_escalates(emu: Any, make_router: Any) -> None:
    doc = config(
        emu.base_url,
        routes=[
            route(
                "triage",
                [
                    step("haiku", 100, {"signal": "regex", "pattern": r"(?i)\bI can(no|')t\b"}),
                    step("sonnet", 100),
                ],
            )
        ],
    )
    router = make_router(doc)
    emu.script(HAIKU_MODEL, [{"text": "Sorry, I can't help with that."}, {"text": "Sure."}])
    client = sdk(router)
    first = client.messages.with_raw_response.create(
        model="tierwise/triage", max_tokens=50, messages=user("a")
    )
    assert first.headers["x-tierwise-tier"] == "sonnet"
    second = client.messages.with_raw_response.create(
        model="tierwise/triage", max_tokens=50, messages=user("b")
    )
    assert second.headers["x-tierwise-tier"] == "haiku"
    assert second.parse().content[0].text == "Sure."


def test_three_step_cascade_counts_every_escalation(emu: Any, make_router: Any) -> None:
    doc = config(
        emu.base_url,
        routes=[
            route(
                "triage",
                [
                    step("haiku", 100, {"signal": "invalidJSON"}),
                    step("sonnet", 200, {"signal": "invalidJSON"}),
                    step(
                        "opus", 300, {"signal": "invalidJSON"}
                    ),  # the last step's signals are ignored
                ],
            )
        ],
    )
    router = make_router(doc)
    emu.script(HAIKU_MODEL, [{"text": "no"}])
    emu.script(SONNET_MODEL, [{"text": "still no"}])
    emu.script(OPUS_MODEL, [{"text": "not JSON either, but final"}])
    raw = sdk(router).messages.with_raw_response.create(
        model="tierwise/triage", max_tokens=1000, messages=user("x")
    )
    assert raw.headers["x-tierwise-tier"] == "opus"
    assert raw.headers["x-tierwise-escalations"] == "2"
    assert raw.parse().content[0].text == "not JSON either, but final"


def test_caps_model_and_format_instruction_seen_upstream(emu: Any, make_router: Any) -> None:
    doc = config(emu.base_url)
    doc["tiers"]["sonnet"]["limits"]["maxOutputTokens"] = 400
    from router_builder import with_hash

    router = make_router(with_hash(doc))
    emu.script(HAIKU_MODEL, [{"text": "not json"}])
    sdk(router).messages.create(
        model="tierwise/triage",
        max_tokens=1000,
        system="You triage.",
        messages=user("x"),
        extra_body={"temperature": 0.2},
    )
    haiku, sonnet = emu.recorded_requests()
    assert (haiku.body["model"], haiku.body["max_tokens"]) == (HAIKU_MODEL, 256)
    assert (sonnet.body["model"], sonnet.body["max_tokens"]) == (SONNET_MODEL, 400)
    for record in (haiku, sonnet):
        assert record.body["system"].startswith("You triage.\n\nAnswer with JSON only")
        assert record.body["temperature"] == 0.2
        assert "stream" not in record.body


def test_client_cap_below_step_cap_is_kept(emu: Any, make_router: Any) -> None:
    router = make_router(config(emu.base_url))
    emu.script(HAIKU_MODEL, [{"text": GOOD}])
    sdk(router).messages.create(model="tierwise/triage", max_tokens=64, messages=user("x"))
    assert emu.recorded_requests()[0].body["max_tokens"] == 64


def test_client_key_is_never_forwarded(emu: Any, make_router: Any) -> None:
    router = make_router(config(emu.base_url))
    emu.script(HAIKU_MODEL, [{"text": "x"}])
    sdk(router).messages.create(
        model="tierwise/triage",
        max_tokens=10,
        messages=user("x"),
        extra_headers={
            "authorization": "Bearer client-bearer",
            "anthropic-beta": "context-1m-2025-08-07",
        },
    )
    haiku, sonnet = emu.recorded_requests()
    assert haiku.headers["x-api-key"] == TIER_KEYS["haiku"]
    assert sonnet.headers["x-api-key"] == TIER_KEYS["sonnet"]
    for record in (haiku, sonnet):
        assert "authorization" not in record.headers
        assert CLIENT_KEY not in str(record.headers)
        assert record.headers["anthropic-beta"] == "context-1m-2025-08-07"
        assert record.headers["anthropic-version"]  # the client's version, forwarded


def test_anthropic_version_is_forwarded_or_defaulted(emu: Any, make_router: Any) -> None:
    from router_helpers import raw_request

    router = make_router(config(emu.base_url, routes=[route("triage", [step("haiku")])]))
    body = {"model": "tierwise/triage", "max_tokens": 5, "messages": user("x")}
    status, _, _ = raw_request(
        router.base_url, "/v1/messages", body, headers={"anthropic-version": "2099-01-01"}
    )
    assert status == 200
    status, _, _ = raw_request(
        router.base_url, "/v1/messages", body, headers={"anthropic-version": ""}
    )
    assert status == 200
    first, second = emu.recorded_requests()
    assert first.headers["anthropic-version"] == "2099-01-01"
    assert second.headers["anthropic-version"] == "2023-06-01"


def test_cost_header_is_the_priced_usage_of_every_step(emu: Any, make_router: Any) -> None:
    router = make_router(config(emu.base_url))
    emu.script(HAIKU_MODEL, [{"text": "I think it is a bug", "output_tokens": 321}])
    emu.script(SONNET_MODEL, [{"text": GOOD, "output_tokens": 17}])
    raw = sdk(router).messages.with_raw_response.create(
        model="tierwise/triage", max_tokens=1000, messages=user("long question " * 50)
    )
    records = emu.recorded_requests()
    assert len(records) == 2
    expected = recorded_cost(records)
    assert Decimal(raw.headers["x-tierwise-cost-usd"]) == expected
    # Not just the last step: haiku's 321 output tokens alone are 321 * 5 / 1e6.
    assert expected > recorded_cost(records[1:]) + Decimal("0.0016")


async def test_async_client_gets_the_same_answers(emu: Any, make_router: Any) -> None:
    router = make_router(config(emu.base_url))
    emu.script(HAIKU_MODEL, [{"text": GOOD}])
    async with anthropic.AsyncAnthropic(
        base_url=router.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=15
    ) as client:
        raw = await client.messages.with_raw_response.create(
            model="tierwise/triage", max_tokens=1000, messages=user("x")
        )
        message = await raw.parse()
    assert message.content[0].text == GOOD
    assert raw.headers["x-tierwise-tier"] == "haiku"


def test_count_tokens_goes_to_the_first_step_tier(emu: Any, make_router: Any) -> None:
    router = make_router(config(emu.base_url))
    result = sdk(router).messages.count_tokens(
        model="tierwise/triage", system="You triage.", messages=user("how many tokens?")
    )
    record = emu.recorded_requests()[0]
    assert record.path == "/v1/messages/count_tokens"
    assert record.body["model"] == HAIKU_MODEL
    assert record.headers["x-api-key"] == TIER_KEYS["haiku"]
    assert "Answer with JSON only" in record.body["system"]
    from tierwise.emulator import count_prompt_tokens

    assert result.input_tokens == count_prompt_tokens(record.body)
