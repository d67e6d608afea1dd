"""Invalid requests get the API's status codes, error bodies and the SDK's typed errors."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
from emulator_helpers import HAIKU, raw_request, user

from tierwise.emulator import EmulatorConfig, EmulatorThread

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]


def error_of(raw: bytes) -> dict[str, Any]:
    body = json.loads(raw)
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    return body["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": HAIKU, "messages": user("hi")}, "max_tokens: Field required"),
        (
            {"model": HAIKU, "max_tokens": -1, "messages": user("hi")},
            "max_tokens: Input should be greater",
        ),
        (
            {"model": HAIKU, "max_tokens": "9", "messages": user("hi")},
            "max_tokens: Input should be a valid integer",
        ),
        ({"max_tokens": 10, "messages": user("hi")}, "model: Field required"),
        ({"model": HAIKU, "max_tokens": 10}, "messages: Field required"),
        ({"model": HAIKU, "max_tokens": 10, "messages": []}, "at least one message"),
        (
            {"model": HAIKU, "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]},
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        (
            {"model": HAIKU, "max_tokens": 10, "messages": [{"role": "assistant", "content": "x"}]},
            'first message must use the "user" role',
        ),
        (
            {"model": HAIKU, "max_tokens": 10, "messages": user("")},
            "text content blocks must be non-empty",
        ),
        (
            {
                "model": HAIKU,
                "max_tokens": 10,
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a "},
                ],
            },
            "final assistant content cannot end with trailing whitespace",
        ),
        (
            {"model": HAIKU, "max_tokens": 10, "temperature": 1.5, "messages": user("q")},
            "temperature",
        ),
        (
            {"model": HAIKU, "max_tokens": 10, "stop_sequences": "x", "messages": user("q")},
            "stop_sequences",
        ),
        (
            {"model": HAIKU, "max_tokens": 100_000, "messages": user("q")},
            "maximum allowed number of output tokens",
        ),
        (
            {
                "model": HAIKU,
                "max_tokens": 10,
                "system": [{"type": "text", "text": "s", "cache_control": {"type": "persistent"}}],
                "messages": user("q"),
            },
            "system.0.cache_control.type",
        ),
        (
            {
                "model": HAIKU,
                "max_tokens": 10,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "text",
                                "text": "q",
                                "cache_control": {"type": "ephemeral", "ttl": "2h"},
                            }
                        ],
                    }
                ],
            },
            "messages.0.content.0.cache_control.ttl",
        ),
        ([1, 2], "JSON object"),
    ],
)
def test_invalid_requests_are_400(emu: EmulatorThread, body: Any, message: str) -> None:
    status, headers, raw = raw_request(emu.base_url, "/v1/messages", body)
    assert status == 400
    assert headers["request-id"].startswith("req_")
    error = error_of(raw)
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]


def test_bad_json_is_400(emu: EmulatorThread) -> None:
    status, _headers, raw = raw_request(emu.base_url, "/v1/messages", data=b"{not json")
    assert status == 400
    assert "error parsing the body" in error_of(raw)["message"]
    (entry,) = emu.recorded_requests()
    assert entry.body == "{not json" and entry.status == 400


def test_prompt_too_long_for_the_context_window(emu: EmulatorThread) -> None:
    body = {"model": HAIKU, "max_tokens": 10, "messages": user("x" * 800_001)}
    status, _headers, raw = raw_request(emu.base_url, "/v1/messages", body)
    assert status == 400 and "prompt is too long" in error_of(raw)["message"]


def test_unknown_model_is_404(emu: EmulatorThread, client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="claude-nonexistent-9", max_tokens=10, messages=user("q"))
    assert caught.value.type == "not_found_error"
    assert caught.value.api_message == "model: claude-nonexistent-9"
    assert caught.value.request_id is not None and caught.value.request_id.startswith("req_")
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="claude-nonexistent-9", messages=user("q"))


def test_sdk_surfaces_400_as_bad_request(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=HAIKU, max_tokens=10, messages=[])
    assert caught.value.status_code == 400
    assert caught.value.type == "invalid_request_error"


def test_missing_key_is_401(emu: EmulatorThread) -> None:
    status, _headers, raw = raw_request(
        emu.base_url,
        "/v1/messages",
        {"model": HAIKU, "max_tokens": 10, "messages": user("q")},
        headers={"x-api-key": ""},
    )
    assert status == 401
    error = error_of(raw)
    assert error["type"] == "authentication_error"
    assert error["message"] == "x-api-key header is required"


def test_missing_version_header_is_400(emu: EmulatorThread) -> None:
    status, _headers, raw = raw_request(
        emu.base_url,
        "/v1/messages",
        {"model": HAIKU, "max_tokens": 10, "messages": user("q")},
        headers={"anthropic-version": ""},
    )
    assert status == 400 and "anthropic-version" in error_of(raw)["message"]


def test_unknown_paths_are_404_in_the_api_shape(emu: EmulatorThread) -> None:
    status, _headers, raw = raw_request(emu.base_url, "/v1/complete", {"prompt": "x"})
    assert status == 404 and error_of(raw)["type"] == "not_found_error"


def test_configured_keys_are_enforced() -> None:
    with EmulatorThread(EmulatorConfig(zero_latency=True, api_keys=frozenset({"good"}))) as thread:
        good = anthropic.Anthropic(base_url=thread.base_url, api_key="good", max_retries=0)
        assert good.messages.create(model=HAIKU, max_tokens=10, messages=user("q")).content
        bad = anthropic.Anthropic(base_url=thread.base_url, api_key="bad", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as caught:
            bad.messages.create(model=HAIKU, max_tokens=10, messages=user("q"))
        assert caught.value.type == "authentication_error"
        status, _h, _raw = raw_request(
            thread.base_url,
            "/v1/messages",
            {"model": HAIKU, "max_tokens": 10, "messages": user("q")},
            headers={"x-api-key": "good"},
        )
        assert status == 200


def test_count_tokens_validates_without_max_tokens(emu: EmulatorThread) -> None:
    status, _h, raw = raw_request(
        emu.base_url, "/v1/messages/count_tokens", {"model": HAIKU, "messages": user("q")}
    )
    assert status == 200 and json.loads(raw) == {"input_tokens": 1 + 3}
    status, _h, raw = raw_request(
        emu.base_url, "/v1/messages/count_tokens", {"model": HAIKU, "messages": []}
    )
    assert status == 400
