"""The router in front of recorded OpenAI-compatible answers: retries, error shapes, streams.

A real HTTP server replays what vLLM and llama.cpp answer (including their failures), the
official SDK calls the router; the live model is in test_router_e2e_local_model.py.
"""

from __future__ import annotations

import json
from decimal import Decimal

import anthropic
import pytest
from recording_upstream import Answer, recording_upstream
from router_builder import SONNET_MODEL, config, route, step, tier
from router_helpers import sdk, user

pytestmark = pytest.mark.timeout(60)

PRICES = {"input": "1", "output": "2", "cacheWrite5m": "1", "cacheWrite1h": "1", "cacheRead": "1"}
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "qwen",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Paris."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
}
OVERLOADED = Answer(
    503,
    json.dumps({"error": {"message": "queue full", "type": "ServiceUnavailableError"}}).encode(),
)


def openai_config(endpoint: str, *signals: dict, structured_output: str | None = None) -> dict:
    local = {
        **tier(SONNET_MODEL, endpoint, name="local", pricing=PRICES),
        "provider": "openai",
        "model": "qwen",
        "apiKeyEnv": None,
    }
    if structured_output is not None:
        local["structuredOutput"] = structured_output
    return config(
        endpoint,
        routes=[route("local", [step("local", 64, *signals)], counterfactual="local")],
        default_route="local",
        tiers={"local": local},
        retry={"maxAttempts": 3, "initialBackoffSeconds": "0.01", "maxBackoffSeconds": "0.02"},
    )


def test_a_server_error_is_retried_and_the_answer_priced_on_the_servers_usage(make_router):
    with recording_upstream(
        OVERLOADED, OVERLOADED, Answer(body=json.dumps(COMPLETION).encode())
    ) as up:
        router = make_router(openai_config(up.base_url))
        with sdk(router) as client:
            raw = client.messages.with_raw_response.create(
                model="tierwise/local", max_tokens=16, messages=user("Capital of France?")
            )
        assert up.seen == [("POST", "/v1/chat/completions")] * 3
    message = raw.parse()
    assert message.content[0].text == "Paris."
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 3)
    assert Decimal(raw.headers["x-tierwise-cost-usd"]) == Decimal("0.000017")  # 11*1 + 3*2


def test_a_client_error_is_final_and_keeps_the_servers_message(make_router):
    error = {
        "error": {
            "message": "This model's maximum context length is 2048 tokens",
            "type": "BadRequestError",
            "code": 400,
        }
    }
    with recording_upstream(Answer(400, json.dumps(error).encode())) as up:
        router = make_router(openai_config(up.base_url))
        with sdk(router) as client, pytest.raises(anthropic.BadRequestError) as caught:
            client.messages.create(model="tierwise/local", max_tokens=16, messages=user("x"))
        assert len(up.seen) == 1  # not retried
    body = caught.value.body["error"]
    assert body["type"] == "invalid_request_error"
    assert "maximum context length is 2048 tokens" in body["message"]


def test_exhausted_retries_are_the_servers_status_in_the_apis_shape(make_router):
    with recording_upstream(OVERLOADED) as up:
        router = make_router(openai_config(up.base_url))
        with sdk(router) as client, pytest.raises(anthropic.APIStatusError) as caught:
            client.messages.create(model="tierwise/local", max_tokens=16, messages=user("x"))
    assert caught.value.status_code == 503
    assert caught.value.body["type"] == "error"
    assert "queue full" in caught.value.body["error"]["message"]
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_a_2xx_that_is_not_a_completion_is_a_502(make_router):
    with recording_upstream(Answer(body=b'{"object": "list", "data": []}')) as up:
        router = make_router(openai_config(up.base_url))
        with sdk(router) as client, pytest.raises(anthropic.InternalServerError) as caught:
            client.messages.create(model="tierwise/local", max_tokens=16, messages=user("x"))
    assert caught.value.status_code == 502
    assert "broken Chat Completion" in caught.value.body["error"]["message"]


def test_a_recorded_vllm_stream_works_with_the_sdks_stream_helpers(make_router):
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "usage": None},
        {"choices": [{"index": 0, "delta": {"content": "Par"}}], "usage": None},
        {"choices": [{"index": 0, "delta": {"content": "is."}}], "usage": None},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}},
    ]
    body = b"".join(b"data: " + json.dumps({"id": "c1", **c}).encode() + b"\n\n" for c in chunks)
    stream = Answer(body=body + b"data: [DONE]\n\n", content_type="text/event-stream")
    with recording_upstream(stream) as up:
        router = make_router(openai_config(up.base_url))
        with (
            sdk(router) as client,
            client.messages.stream(
                model="tierwise/local", max_tokens=16, messages=user("x")
            ) as events,
        ):
            text = "".join(events.text_stream)
            final = events.get_final_message()
    assert text == final.content[0].text == "Paris."
    assert (final.usage.input_tokens, final.usage.output_tokens) == (9, 2)
    assert final.stop_reason == "end_turn"


def test_batches_are_refused_for_a_self_hosted_tier(make_router):
    with recording_upstream(Answer(body=b"{}")) as up:
        router = make_router(openai_config(up.base_url))
        with sdk(router) as client, pytest.raises(anthropic.BadRequestError) as caught:
            client.messages.batches.create(
                requests=[
                    {
                        "custom_id": "a",
                        "params": {
                            "model": "tierwise/local",
                            "max_tokens": 8,
                            "messages": user("x"),
                        },
                    }
                ]
            )
        assert up.seen == []
    assert "has no /v1/messages/batches" in caught.value.body["error"]["message"]


LABELS = ["billing", "bug", "other"]
TRIAGE_SIGNALS = (
    {"signal": "invalidJSON"},
    {"signal": "jsonFieldNotIn", "field": "label", "values": LABELS},
    {"signal": "jsonFieldBelow", "field": "confidence", "threshold": "0"},
)
TRIAGE_ANSWER = {
    **COMPLETION,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": '{"label": "bug", "confidence": 0.9}'},
            "finish_reason": "stop",
        }
    ],
}


def triage_call(make_router, structured_output: str | None, **extra) -> dict:
    """One triage call through the router; the Chat Completions request the server got."""
    with recording_upstream(Answer(body=json.dumps(TRIAGE_ANSWER).encode())) as up:
        config = openai_config(up.base_url, *TRIAGE_SIGNALS, structured_output=structured_output)
        router = make_router(config)
        with sdk(router) as client:
            message = client.messages.create(
                model="tierwise/local", max_tokens=16, messages=user("Bill went up"), **extra
            )
        assert message.content[0].text == TRIAGE_ANSWER["choices"][0]["message"]["content"]
        return json.loads(up.bodies[-1])


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("jsonObject", lambda schema: {"type": "json_object", "schema": schema}),
        (
            "jsonSchema",
            lambda schema: {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            },
        ),
    ],
)
def test_a_structured_output_tier_is_sent_the_steps_answer_schema(make_router, style, expected):
    sent = triage_call(make_router, style)
    schema = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": LABELS},
            "confidence": {"type": "number"},
        },
        "required": ["label", "confidence"],
        "additionalProperties": False,
    }
    assert sent["response_format"] == expected(schema)


def test_a_tier_without_structured_output_is_sent_no_response_format(make_router):
    assert "response_format" not in triage_call(make_router, None)
    assert "response_format" not in triage_call(make_router, "none")


def test_a_request_with_tools_is_sent_no_response_format(make_router):
    tool = {"name": "lookup", "description": "Look up", "input_schema": {"type": "object"}}
    sent = triage_call(make_router, "jsonSchema", tools=[tool])
    assert "response_format" not in sent and sent["tools"][0]["function"]["name"] == "lookup"
