"""The rest of the router's contract under hostile callers and odd upstreams (points 10-14).

Each test is named after the point of the contract it proves: the latest turn is never
trimmed and trimming fits in one pass (10), ``max_tokens: 0`` and a non-string ``model``
(11), estimate-path figures (12), the input budget sharing the request's deadline (13) and
no tier key in what the client gets (14).
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
from recording_upstream import Answer, recording_upstream
from router_builder import TIER_KEYS, config, route, step, tier, triage_route
from router_helpers import metric, metrics, raw_request, sdk
from test_router_budget_unit import SYSTEM, TOOLS, assistant, tool_call, tool_result, user

from tierwise.pricing import catalog_prices
from tierwise.router.input_budget import ESTIMATE_MARGIN, estimated_count
from tierwise.router.request import estimate_prompt_tokens

pytestmark = pytest.mark.timeout(60)

SONNET = "claude-sonnet-5-5"
MESSAGE = json.dumps(
    {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": SONNET,
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    }
).encode()


def budget_config(endpoint: str, budget: int, on_exceed: str, **tier_options: Any) -> Any:
    routes = [
        {
            **route("agent", [step("sonnet")], counterfactual="sonnet"),
            "inputBudget": {"maxInputTokens": budget, "onExceed": on_exceed},
        }
    ]
    tiers = {"sonnet": tier(SONNET, endpoint, name="sonnet", **tier_options)}
    retry = {"maxAttempts": 1, "initialBackoffSeconds": "0.01", "maxBackoffSeconds": "0.05"}
    return config(endpoint, routes, tiers=tiers, default_route=None, retry=retry)


def agent_turns(latest_result_chars: int = 6_000) -> list[dict[str, Any]]:
    """An agent loop: two older tool results, and a large one as the latest turn."""
    return [
        user("first question " * 50),
        tool_call("a"),
        tool_result("a", "order a " * 700),
        assistant("answer one " * 50),
        user("second question " * 50),
        tool_call("b"),
        tool_result("b", "order b " * 700),
        assistant("answer two"),
        user("the latest question"),
        tool_call("c"),
        tool_result("c", "z" * latest_result_chars),
    ]


def counts(emu: Any) -> list[Any]:
    return [r for r in emu.recorded_requests() if r.path == "/v1/messages/count_tokens"]


# --- 10 ------------------------------------------------------------------------------------


def test_point10_truncate_tool_results_never_edits_the_latest_turn_and_fits_in_one_pass(
    emu: Any, make_router: Any
) -> None:
    messages = agent_turns()
    client_body = {"system": SYSTEM, "tools": TOOLS, "messages": messages}
    probe = make_router(budget_config(emu.base_url, 1, "reject"))
    total = sdk(probe).messages.count_tokens(model="tierwise/agent", **client_body).input_tokens
    budget = total - 2_000  # the older results hold ~2,800 tokens: trimming can fit
    router = make_router(budget_config(emu.base_url, budget, "truncateToolResults"))
    emu.reset()
    raw = sdk(router).messages.with_raw_response.create(
        model="tierwise/agent", max_tokens=50, **client_body
    )
    assert raw.parse().type == "message"
    sent = [r for r in emu.recorded_requests() if r.path == "/v1/messages"][-1].body
    assert sent["messages"][-1] == messages[-1]  # the latest tool result, all 6,000 characters
    assert "were cut to fit the input budget" in json.dumps(sent["messages"][2])
    assert raw.parse().usage.input_tokens <= budget
    # One count of the client's prompt and one of the trimmed prompt: one trimming pass.
    assert len(counts(emu)) == 2
    assert int(raw.headers["x-tierwise-input-trimmed-tokens"]) >= 2_000


def test_point10_a_latest_turn_alone_over_the_budget_is_rejected_untouched(
    emu: Any, make_router: Any
) -> None:
    messages = [user("hello"), tool_call("c"), tool_result("c", "z" * 20_000)]
    router = make_router(budget_config(emu.base_url, 1_000, "truncateToolResults"))
    with pytest.raises(anthropic.BadRequestError) as info:
        sdk(router).messages.create(model="tierwise/agent", max_tokens=50, messages=messages)
    assert "prompt is too long" in info.value.body["error"]["message"]  # type: ignore[index]
    assert not [r for r in emu.recorded_requests() if r.path == "/v1/messages"]


# --- 11 ------------------------------------------------------------------------------------


def test_point11_max_tokens_zero_is_forwarded_to_prewarm_the_cache(
    emu: Any, make_router: Any
) -> None:
    router = make_router(config(emu.base_url, [triage_route()]))
    raw = sdk(router).messages.with_raw_response.create(
        model="tierwise/triage", max_tokens=0, messages=[user("warm " * 300)]
    )
    message = raw.parse()
    assert message.content == [] and message.usage.output_tokens == 0
    sent = [r for r in emu.recorded_requests() if r.path == "/v1/messages"]
    # Only the first step is warmed: there is no answer for an escalation signal to judge.
    assert [r.body["max_tokens"] for r in sent] == [0]
    assert raw.headers["x-tierwise-escalations"] == "0"


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize("model", [5, ["tierwise/triage"], {"name": "x"}, True])
def test_point11_a_non_string_model_is_the_apis_400(
    emu: Any, make_router: Any, path: str, model: Any
) -> None:
    router = make_router(config(emu.base_url, [triage_route()]))  # has a default route
    body = {"model": model, "max_tokens": 5, "messages": [user("x")]}
    status, _headers, raw = raw_request(router.base_url, path, body)
    assert status == 400
    error = json.loads(raw)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"] == "model: Input should be a valid string"
    assert not emu.recorded_requests()


def test_point11_a_batch_item_with_a_non_string_model_is_a_400(emu: Any, make_router: Any) -> None:
    router = make_router(config(emu.base_url, [triage_route()]))
    item = {"custom_id": "a", "params": {"model": 5, "max_tokens": 5, "messages": [user("x")]}}
    status, _h, raw = raw_request(router.base_url, "/v1/messages/batches", {"requests": [item]})
    assert status == 400
    assert "model: Input should be a valid string" in json.loads(raw)["error"]["message"]


# --- 12 ------------------------------------------------------------------------------------

NO_COUNT = Answer(status=404, body=b'{"type":"error","error":{"type":"not_found_error"}}')


def long_body() -> dict[str, Any]:
    return {
        "system": SYSTEM,
        "messages": [
            user("first question " * 200),
            assistant("answer one " * 200),
            user("second question " * 200),
            assistant("answer two"),
            user("the latest question"),
        ],
    }


def test_point12_estimate_path_reports_the_estimated_count_not_the_margin(
    make_router: Any,
) -> None:
    body = long_body()
    estimate = estimate_prompt_tokens(body)
    with recording_upstream(Answer(body=MESSAGE)) as up:
        up.by_path["/v1/messages/count_tokens"] = NO_COUNT
        # reject: the message names the estimate (and says it is one, with its margin)
        router = make_router(budget_config(up.base_url, estimate // 2, "reject"))
        with pytest.raises(anthropic.BadRequestError) as info:
            sdk(router).messages.create(model="tierwise/agent", max_tokens=5, **body)
        text = info.value.body["error"]["message"]  # type: ignore[index]
        assert text.startswith(f"prompt is too long: about {estimate} tokens (a local estimate")
        assert str(estimated_count(body)) in text and f"{ESTIMATE_MARGIN:.0%}" in text

        # trim: header and saved dollars are the estimated tokens removed, no margin on them
        router = make_router(budget_config(up.base_url, estimate - 200, "dropOldestTurns"))
        raw = sdk(router).messages.with_raw_response.create(
            model="tierwise/agent", max_tokens=5, **body
        )
        sent = {"system": body["system"], "messages": body["messages"][2:]}
        removed = estimate - estimate_prompt_tokens(sent)
        assert int(raw.headers["x-tierwise-input-trimmed-tokens"]) == removed
        samples = metrics(router.metrics_url)
        assert metric(samples, "tierwise_router_input_trimmed_tokens_total") == removed
        rate = catalog_prices(SONNET).rates.input  # type: ignore[union-attr]
        assert metric(samples, "tierwise_router_input_trim_saved_usd_total") == pytest.approx(
            float(removed * rate / 1_000_000)
        )
        # the margin still guards the budget: the kept estimate with its margin fits
        assert estimated_count(sent) <= estimate - 200


# --- 13 ------------------------------------------------------------------------------------


def test_point13_counting_tokens_shares_the_requests_deadline(make_router: Any) -> None:
    # count_tokens hangs past the tier's 1 s timeout; the answer itself would take 0.6 s.
    with recording_upstream(Answer(body=MESSAGE, delay=0.6)) as up:
        up.by_path["/v1/messages/count_tokens"] = Answer(body=b"{}", delay=5)
        router = make_router(budget_config(up.base_url, 100_000, "reject", timeout=1))
        with pytest.raises(anthropic.APIStatusError) as info:
            sdk(router).messages.create(model="tierwise/agent", max_tokens=5, **long_body())
    # One timeout for the request, counting included: the answer, which would arrive 0.6 s
    # into a fresh timeout of its own (1.6 s in all), is past the request's deadline.
    assert info.value.status_code == 504
    assert info.value.body["error"]["type"] == "timeout_error"  # type: ignore[index]


# --- 14 ------------------------------------------------------------------------------------


def test_point14_the_tiers_key_never_reaches_the_client(make_router: Any) -> None:
    key = TIER_KEYS["sonnet"]
    echo = json.dumps(
        {
            "type": "error",
            "error": {"type": "authentication_error", "message": f"invalid x-api-key: {key}"},
        }
    ).encode()
    answer = Answer(status=401, body=echo, headers={"request-id": f"req_{key}"})
    with recording_upstream(answer) as up:
        router = make_router(budget_config(up.base_url, 100_000, "reject"))
        for stream in (False, True):
            status, headers, raw = raw_request(
                router.base_url,
                "/v1/messages",
                {
                    "model": "tierwise/agent",
                    "max_tokens": 5,
                    "stream": stream,
                    "messages": [user("x")],
                },
            )
            assert status == 401
            assert key not in raw.decode() and key not in json.dumps(headers)
            error = json.loads(raw)["error"]
            assert error["type"] == "authentication_error"
            assert error["message"] == "invalid x-api-key: [redacted tier key]"
        status, headers, raw = raw_request(
            router.base_url,
            "/v1/messages/count_tokens",
            {"model": "tierwise/agent", "messages": [user("x")]},
        )
        assert status == 401 and key not in raw.decode() and key not in json.dumps(headers)


def test_point14_a_live_streams_error_event_never_carries_the_tiers_key(
    make_router: Any,
) -> None:
    key = TIER_KEYS["sonnet"]
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": SONNET,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 1},
        },
    }
    error = {"type": "error", "error": {"type": "api_error", "message": f"bad key {key}"}}
    body = (
        f"event: message_start\ndata: {json.dumps(start)}\n\n"
        f"event: error\ndata: {json.dumps(error)}\n\n"
    ).encode()
    with recording_upstream(Answer(body=body, content_type="text/event-stream")) as up:
        router = make_router(budget_config(up.base_url, 100_000, "reject"))
        status, _headers, raw = raw_request(
            router.base_url,
            "/v1/messages",
            {"model": "tierwise/agent", "max_tokens": 5, "stream": True, "messages": [user("x")]},
        )
    assert status == 200 and b"event: error" in raw
    assert key.encode() not in raw and b"[redacted tier key]" in raw
