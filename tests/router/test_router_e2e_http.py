"""Bad inputs get Anthropic-shaped errors; health and readiness; unknown paths."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from router_builder import config
from router_helpers import metric, metrics, raw_request, user

pytestmark = pytest.mark.timeout(60)


def error_of(raw: bytes) -> dict[str, Any]:
    body = json.loads(raw)
    assert body["type"] == "error" and set(body["error"]) >= {"type", "message"}
    return body["error"]


def test_malformed_json_is_an_invalid_request_error(emu: Any, make_router: Any) -> None:
    router = make_router(config(emu.base_url))
    status, headers, raw = raw_request(router.base_url, "/v1/messages", data=b'{"model": ')
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert error_of(raw)["type"] == "invalid_request_error"
    status, _, raw = raw_request(router.base_url, "/v1/messages", data=b"[1, 2]")
    assert status == 400 and "JSON object" in error_of(raw)["message"]
    assert emu.recorded_requests() == []
    samples = metrics(router.metrics_url)
    assert metric(samples, "tierwise_router_requests_total", outcome="rejected") == 2


def test_oversized_body_is_request_too_large(emu: Any, make_router: Any) -> None:
    router = make_router(config(emu.base_url), max_body_bytes=10_000)
    body = {"model": "tierwise/triage", "max_tokens": 5, "messages": user("x" * 20_000)}
    status, _, raw = raw_request(router.base_url, "/v1/messages", body)
    assert status == 413
    assert error_of(raw)["type"] == "request_too_large"
    small = {"model": "tierwise/triage", "max_tokens": 5, "messages": user("x" * 100)}
    assert raw_request(router.base_url, "/v1/messages", small)[0] == 200
    assert len(emu.recorded_requests()) >= 1


def test_oversized_chunked_body_is_request_too_large(emu: Any, make_router: Any) -> None:
    router = make_router(config(emu.base_url), max_body_bytes=10_000)

    def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 1000

    request = urllib.request.Request(
        router.base_url + "/v1/messages",
        data=chunks(),
        method="POST",
        headers={"content-type": "application/json", "transfer-encoding": "chunked"},
    )
    try:
        urllib.request.urlopen(request, timeout=10)
        status, raw = 200, b""
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    assert status == 413 and error_of(raw)["type"] == "request_too_large"


def test_unknown_path_is_not_found(emu: Any, make_router: Any) -> None:
    router = make_router(config(emu.base_url))
    status, _, raw = raw_request(router.base_url, "/v1/complete", {"prompt": "x"})
    assert status == 404 and error_of(raw)["type"] == "not_found_error"


def test_health_and_readiness(emu: Any, make_router: Any) -> None:
    doc = config(emu.base_url)
    router = make_router(doc)
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(router.metrics_url + path, timeout=5) as response:
            assert response.status == 200
            if path == "/readyz":
                assert json.load(response)["hash"] == doc["hash"]
    # The API port serves no metrics, and the metrics port no API.
    assert raw_request(router.base_url, "/metrics", method="GET")[0] == 404
    assert raw_request(router.metrics_url, "/v1/messages", {})[0] == 404


def test_listens_on_loopback_by_default(emu: Any, make_router: Any) -> None:
    router = make_router(config(emu.base_url))
    assert router.base_url.startswith("http://127.0.0.1:")
