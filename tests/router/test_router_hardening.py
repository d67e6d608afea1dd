"""Hostile and careless input, each test written from a reproduced hole.

Every bad request gets the API's error shape with a 4xx and is counted as ``rejected`` on
whichever endpoint it reaches; upstream URLs are built from fixed prefixes; the config the
router serves is always one it can serve.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import anthropic
import pytest
from recording_upstream import Answer, recording_upstream
from router_builder import HAIKU_MODEL, SONNET_MODEL, config, route, step, tier, tier_env, with_hash
from router_helpers import CLIENT_KEY, metric, metrics, raw_request, sdk, user

pytestmark = pytest.mark.timeout(60)

ENDPOINTS = ["/v1/messages", "/v1/messages/count_tokens", "/v1/messages/batches"]
ENDPOINT_LABEL = {
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "count_tokens",
    "/v1/messages/batches": "batches",
}


def assert_api_error(status: int, raw: bytes, expected_status: int, error_type: str) -> dict:
    assert status == expected_status, raw[:300]
    body = json.loads(raw)
    assert body["type"] == "error" and body["error"]["type"] == error_type, body
    return body


# --- batch ids ----------------------------------------------------------------------------

TRAVERSALS = [
    "..%2F..%2Fadmin",
    "..%2f..%2fv1%2fmodels",
    "%2E%2E%2F%2E%2E%2Fadmin",
    "x%2F..%2F..%2F..%2Fadmin",
    "msgbatch_1%3Fpage=admin",
    "msgbatch_1%23frag",
    "..",
    "msgbatch_" + "a" * 200,
]


@pytest.mark.parametrize("batch_id", TRAVERSALS)
@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("DELETE", ""), ("POST", "/cancel"), ("GET", "/results")],
)
def test_batch_ids_cannot_climb_out_of_the_batches_path(
    make_router: Any, batch_id: str, method: str, suffix: str
) -> None:
    """Repro: `..%2F` in a batch id was decoded and resolved, reaching any upstream path."""
    with recording_upstream(Answer(body=b'{"id": "msgbatch_1", "type": "message_batch"}')) as up:
        router = make_router(config(up.base_url))
        path = f"/v1/messages/batches/{batch_id}{suffix}"
        status, _, raw = raw_request(router.base_url, path, method=method)
        assert status == 404, raw[:200]
        assert json.loads(raw)["error"]["type"] == "not_found_error"
        assert up.seen == []  # nothing reached the upstream, admin page or otherwise


def test_a_valid_batch_id_reaches_only_its_fixed_path(make_router: Any) -> None:
    with recording_upstream(Answer(body=b'{"id": "msgbatch_01", "type": "message_batch"}')) as up:
        router = make_router(config(up.base_url, [route("triage", [step("haiku", 64)])]))
        batch = {
            "requests": [
                {
                    "custom_id": "a",
                    "params": {"model": "tierwise/triage", "max_tokens": 5, "messages": user("x")},
                }
            ]
        }
        status, _, raw = raw_request(router.base_url, "/v1/messages/batches", batch)
        assert status == 200, raw
        status, _, _ = raw_request(
            router.base_url, "/v1/messages/batches/msgbatch_01/cancel", method="POST"
        )
        assert status == 200
        assert up.seen[-1] == ("POST", "/v1/messages/batches/msgbatch_01/cancel")
        seen = len(up.seen)
        status, _, _ = raw_request(
            router.base_url, "/v1/messages/batches?limit=2&after_id=x%2F..", method="GET"
        )
        assert status == 200
        assert len(up.seen) == seen  # listing pages the router's own records: no upstream path


# --- bad bodies ---------------------------------------------------------------------------

DEEP = (
    b'{"model": "tierwise/triage", "max_tokens": 5, "messages": '
    + b"[" * 50_000
    + b"]" * 50_000
    + b"}"
)
SURROGATE = (
    b'{"model": "tierwise/triage", "max_tokens": 5, '
    b'"messages": [{"role": "user", "content": "\\ud800"}]}'
)
NAN = (
    b'{"model": "tierwise/triage", "max_tokens": 5, "temperature": NaN, '
    b'"messages": [{"role": "user", "content": "hi"}]}'
)
HUGE = (
    b'{"model": "tierwise/triage", "max_tokens": 5, "temperature": 1e999, '
    b'"messages": [{"role": "user", "content": "hi"}]}'
)
BAD_UTF8 = b'{"model": "tierwise/triage", "max_tokens": 5, "messages": "\xff\xfe"}'


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "payload", [DEEP, SURROGATE, NAN, HUGE, BAD_UTF8, b"[]", b"not json", b""], ids=str
)
def test_bad_bodies_are_400_in_the_api_shape_and_counted_as_rejected(
    emu: Any, make_router: Any, endpoint: str, payload: bytes
) -> None:
    """Repro: deep nesting and a lone surrogate gave 500 with a traceback on /v1/messages
    and a text/plain 500 counted as success on count_tokens and batches."""
    router = make_router(config(emu.base_url))
    status, headers, raw = raw_request(router.base_url, endpoint, data=payload)
    assert headers["content-type"].startswith("application/json")
    assert_api_error(status, raw, 400, "invalid_request_error")
    samples = metrics(router.metrics_url)
    label = ENDPOINT_LABEL[endpoint]
    name = "tierwise_router_requests_total"
    assert metric(samples, name, endpoint=label, outcome="rejected") == 1
    assert metric(samples, name, endpoint=label, outcome="success") == 0
    assert metric(samples, name, outcome="internal_error") == 0
    assert emu.recorded_requests() == []


def test_a_lone_surrogate_in_a_batch_request_is_rejected(emu: Any, make_router: Any) -> None:
    router = make_router(config(emu.base_url))
    item = SURROGATE.decode()
    body = ('{"requests": [{"custom_id": "a", "params": ' + item + "}]}").encode()
    status, _, raw = raw_request(router.base_url, "/v1/messages/batches", data=body)
    assert_api_error(status, raw, 400, "invalid_request_error")


def test_too_much_json_structure_is_413_before_decoding(make_router: Any, emu: Any) -> None:
    router = make_router(config(emu.base_url))
    from tierwise.routerconfig.sidecar import MAX_JSON_STRUCTURE

    items = b"{}," * (MAX_JSON_STRUCTURE // 2 + 1)
    body = b'{"model": "tierwise/triage", "max_tokens": 5, "metadata": [' + items + b"{}]}"
    status, _, raw = raw_request(router.base_url, "/v1/messages", data=body)
    assert_api_error(status, raw, 413, "request_too_large")


def test_a_large_body_is_decoded_and_served(emu: Any, make_router: Any) -> None:
    """Bodies over the off-loop threshold take the worker-thread path; same answer."""
    router = make_router(config(emu.base_url))
    text = "lorem ipsum " * 60_000  # ~720 KB of text
    reply = sdk(router).messages.with_raw_response.create(
        model="tierwise/triage", max_tokens=5, messages=user(text)
    )
    assert reply.http_response.status_code == 200
    assert emu.recorded_requests()[-1].body["messages"][0]["content"] == text


# --- API contract -------------------------------------------------------------------------


def test_max_tokens_is_required_even_when_the_route_caps_it(emu: Any, make_router: Any) -> None:
    """Repro: a request without max_tokens was served when the route had a cap."""
    router = make_router(config(emu.base_url))
    body = {"model": "tierwise/triage", "messages": user("hi")}
    status, _, raw = raw_request(router.base_url, "/v1/messages", body)
    assert assert_api_error(status, raw, 400, "invalid_request_error")["error"]["message"] == (
        "max_tokens: Field required"
    )
    status, _, raw = raw_request(
        router.base_url,
        "/v1/messages/batches",
        {"requests": [{"custom_id": "a", "params": body}]},
    )
    assert_api_error(status, raw, 400, "invalid_request_error")
    assert emu.recorded_requests() == []


def test_caps_are_ceilings_only(emu: Any, make_router: Any) -> None:
    router = make_router(config(emu.base_url, routes=[route("triage", [step("haiku", 64)])]))
    client = sdk(router)
    client.messages.create(model="tierwise/triage", max_tokens=5000, messages=user("a"))
    client.messages.create(model="tierwise/triage", max_tokens=10, messages=user("b"))
    sent = [r.body["max_tokens"] for r in emu.recorded_requests()]
    assert sent == [64, 10]


def test_an_unknown_tierwise_alias_is_404_not_the_default_route(emu: Any, make_router: Any) -> None:
    """Repro: `tierwise/<typo>` was served by the default route (a pricier tier)."""
    router = make_router(config(emu.base_url))  # defaultRoute: triage
    with pytest.raises(anthropic.NotFoundError) as info:
        sdk(router).messages.create(model="tierwise/traige", max_tokens=5, messages=user("x"))
    assert "tierwise/traige" in str(info.value) and "triage" in str(info.value)
    status, _, raw = raw_request(
        router.base_url,
        "/v1/messages/count_tokens",
        {"model": "tierwise/nope", "messages": user("x")},
    )
    assert_api_error(status, raw, 404, "not_found_error")
    assert emu.recorded_requests() == []
    # A real model name that maps nowhere still falls to the default route.
    sdk(router).messages.create(model=SONNET_MODEL, max_tokens=5, messages=user("x"))


# --- hot reload of a config the pod cannot serve -------------------------------------------


def test_a_reload_naming_a_key_the_pod_lacks_keeps_the_last_good_config(
    emu: Any, make_router: Any, tmp_path: Path
) -> None:
    """Repro: a policy gained a tier whose key variable the running pod lacks; the reload
    was reported as successful and every call to that tier failed with 401."""
    path = tmp_path / "router-config.json"
    first = config(emu.base_url)
    path.write_text(json.dumps(first))
    env = tier_env()
    router = make_router(path, reload_interval=0, env=env)
    second = json.loads(json.dumps(first))
    second["tiers"]["mini"] = tier(HAIKU_MODEL, emu.base_url, name="mini")  # no env var
    second["routes"][0]["steps"][0]["tier"] = "mini"
    second = with_hash(second)
    path.write_text(json.dumps(second))
    assert router.call(router.router.check_config_file) is False
    assert router.router.config.hash == first["hash"]
    status, _, raw = raw_request(router.metrics_url, "/readyz", method="GET")
    ready = json.loads(raw)
    assert status == 200 and ready["hash"] == first["hash"]
    rejected = ready["rejectedConfig"]
    assert rejected["reason"] == "missing_key_env" and rejected["hash"] == second["hash"]
    assert "TIERWISE_TIER_MINI_API_KEY" in rejected["message"]
    samples = metrics(router.metrics_url)
    assert metric(samples, "tierwise_router_config_rejections_total", reason="missing_key_env") == 1
    assert metric(samples, "tierwise_router_config_last_reload_successful") == 0
    # Still serving the last good config.
    reply = sdk(router).messages.with_raw_response.create(
        model="tierwise/triage", max_tokens=5, messages=user("x")
    )
    assert reply.headers["x-tierwise-tier"] in ("haiku", "sonnet")
    # Once the pod has the key (recreated), the same file loads.
    env["TIERWISE_TIER_MINI_API_KEY"] = "k"
    path.write_text(json.dumps(second) + "\n")
    assert router.call(router.router.check_config_file) is True
    status, _, raw = raw_request(router.metrics_url, "/readyz", method="GET")
    assert "rejectedConfig" not in json.loads(raw)


# --- retries ------------------------------------------------------------------------------


def test_the_sdk_is_told_not_to_retry_what_the_router_already_retried(
    emu: Any, make_router: Any
) -> None:
    """Repro: router retries x SDK retries gave up to 12 upstream calls for one user call."""
    router = make_router(config(emu.base_url, routes=[route("triage", [step("haiku", 64)])]))
    emu.set_faults(HAIKU_MODEL, rate_529=1.0, retry_after=0)
    client = anthropic.Anthropic(
        base_url=router.base_url, api_key=CLIENT_KEY, max_retries=2, timeout=15
    )
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model="tierwise/triage", max_tokens=5, messages=user("x"))
    assert info.value.status_code == 529
    assert info.value.response.headers["x-should-retry"] == "false"
    assert len(emu.recorded_requests()) == 3  # the router's maxAttempts, the SDK adds none


def test_without_router_retries_the_sdk_may_retry(emu: Any, make_router: Any) -> None:
    doc = config(
        emu.base_url, routes=[route("triage", [step("haiku", 64)])], retry={"maxAttempts": 1}
    )
    router = make_router(doc)
    emu.set_faults(HAIKU_MODEL, rate_529=1.0, retry_after=0)
    status, headers, _ = raw_request(
        router.base_url,
        "/v1/messages",
        {"model": "tierwise/triage", "max_tokens": 5, "messages": user("x")},
    )
    assert status == 529 and "x-should-retry" not in headers


HTML = Answer(body=b"<html>bad gateway</html>", content_type="text/html")


def test_a_200_that_is_not_json_is_retried_then_falls_back(emu: Any, make_router: Any) -> None:
    """Repro: a 200 with a non-JSON body was neither retried nor eligible for fallback."""
    with recording_upstream(HTML) as gateway:
        doc = config(
            emu.base_url,
            routes=[route("triage", [step("haiku", 64)])],
            fallback={"tier": "sonnet", "on": ["serverError"]},
        )
        doc["tiers"]["haiku"]["endpoint"] = gateway.base_url
        router = make_router(with_hash(doc))
        reply = sdk(router).messages.with_raw_response.create(
            model="tierwise/triage", max_tokens=5, messages=user("x")
        )
        assert reply.headers["x-tierwise-tier"] == "sonnet"
        assert len(gateway.seen) == 3  # retried like a 5xx
        assert reply.parse().content[0].type == "text"


def test_a_200_that_is_not_json_without_fallback_is_a_502(emu: Any, make_router: Any) -> None:
    with recording_upstream(HTML) as gateway:
        doc = config(emu.base_url, routes=[route("triage", [step("haiku", 64)])])
        doc["tiers"]["haiku"]["endpoint"] = gateway.base_url
        router = make_router(with_hash(doc))
        for path, body in [
            ("/v1/messages", {"model": "tierwise/triage", "max_tokens": 5, "messages": user("x")}),
            ("/v1/messages/count_tokens", {"model": "tierwise/triage", "messages": user("x")}),
        ]:
            status, headers, raw = raw_request(router.base_url, path, body)
            assert_api_error(status, raw, 502, "api_error")
            assert headers["x-should-retry"] == "false"
        samples = metrics(router.metrics_url)
        for endpoint in ("messages", "count_tokens"):
            assert (
                metric(
                    samples,
                    "tierwise_router_requests_total",
                    endpoint=endpoint,
                    outcome="upstream_error",
                )
                == 1
            )


# --- connections --------------------------------------------------------------------------


def test_connections_that_send_no_complete_header_are_closed(emu: Any, make_router: Any) -> None:
    """Repro: 300 half-open connections were held for 90 s (no header-read timeout)."""
    router = make_router(config(emu.base_url), header_timeout=0.5)
    host, port = router.base_url.removeprefix("http://").split(":")
    socks = []
    for i in range(20):
        sock = socket.create_connection((host, int(port)), timeout=10)
        if i % 2:
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n")  # never finished
        socks.append(sock)
    for sock in socks:
        # Closed by the router: recv returns b"" (without the timeout it would block until
        # the socket's own 10 s timeout and raise).
        assert sock.recv(1024) == b""
        sock.close()
    # The router still serves.
    sdk(router).messages.create(model="tierwise/triage", max_tokens=5, messages=user("x"))


def test_help_documents_the_header_timeout() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "tierwise.cli", "router", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    assert "--header-timeout" in out


# --- response cache scope -----------------------------------------------------------------


def _cache_doc(endpoint: str, **settings: Any) -> dict[str, Any]:
    return config(
        endpoint,
        routes=[route("triage", [step("haiku", 64)])],
        response_cache={"enabled": True, "ttlSeconds": 300, "maxEntries": 100, **settings},
    )


def _ask(router: Any, key: str, **headers: str) -> Any:
    client = anthropic.Anthropic(
        base_url=router.base_url, api_key=key, max_retries=0, default_headers=headers
    )
    return client.messages.with_raw_response.create(
        model="tierwise/triage",
        max_tokens=5,
        messages=user("same question"),
        extra_body={"temperature": 0},
    )


def test_one_caller_is_never_served_another_callers_cached_answer(
    emu: Any, make_router: Any
) -> None:
    """Repro: the response cache ignored the caller, anthropic-version and anthropic-beta."""
    router = make_router(_cache_doc(emu.base_url))
    assert _ask(router, "tenant-a").headers["x-tierwise-cache"] == "miss"
    assert _ask(router, "tenant-a").headers["x-tierwise-cache"] == "hit"
    assert _ask(router, "tenant-b").headers["x-tierwise-cache"] == "miss"
    beta = _ask(router, "tenant-a", **{"anthropic-beta": "context-1m-2025-08-07"})
    assert beta.headers["x-tierwise-cache"] == "miss"
    version = _ask(router, "tenant-a", **{"anthropic-version": "2023-06-01"})
    assert version.headers["x-tierwise-cache"] == "miss"


def test_a_shared_route_serves_every_caller_from_one_entry(emu: Any, make_router: Any) -> None:
    router = make_router(_cache_doc(emu.base_url, sharedRoutes=["triage"]))
    assert _ask(router, "tenant-a").headers["x-tierwise-cache"] == "miss"
    assert _ask(router, "tenant-b").headers["x-tierwise-cache"] == "hit"


def test_the_cache_key_uses_the_computed_hash_not_the_declared_one(
    emu: Any, make_router: Any
) -> None:
    """Two configs that declare the same hash but differ in content never share entries."""
    first = _cache_doc(emu.base_url)
    second = json.loads(json.dumps(first))
    second["routes"][0]["formatInstruction"] = "Answer in French."
    second["hash"] = first["hash"]  # a stale or forged declaration
    router = make_router(first)
    assert _ask(router, "k").headers["x-tierwise-cache"] == "miss"
    from tierwise.routerconfig import parse

    router.call(router.router.apply_config, parse(second))
    assert _ask(router, "k").headers["x-tierwise-cache"] == "miss"
