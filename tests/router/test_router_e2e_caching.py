"""Prompt-caching breakpoints and the response cache (memory and a real Redis)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from router_builder import HAIKU_MODEL, SONNET_MODEL, config, route, step
from router_helpers import metric, metrics, raw_request, recorded_cost, sdk, user

pytestmark = pytest.mark.timeout(60)

SYSTEM = "You are a meticulous support triage assistant. " * 400  # ~4,800 tokens
GOOD = '{"label": "bug", "confidence": 0.93}'


def caching_doc(endpoint: str, ttl: str = "5m", kinds: tuple[str, ...] = ("system",)) -> Any:
    return config(
        endpoint,
        routes=[route("triage", [step("haiku", 100)])],
        prompt_caching={"enabled": True, "breakpoints": list(kinds), "ttl": ttl},
    )


@pytest.mark.parametrize("ttl", ["5m", "1h"])
def test_system_breakpoint_is_inserted_and_the_second_request_reads_the_cache(
    emu: Any, make_router: Any, ttl: str
) -> None:
    router = make_router(caching_doc(emu.base_url, ttl))
    client = sdk(router)
    first = client.messages.with_raw_response.create(
        model="tierwise/triage", max_tokens=50, system=SYSTEM, messages=user("one")
    )
    second = client.messages.with_raw_response.create(
        model="tierwise/triage", max_tokens=50, system=SYSTEM, messages=user("two")
    )
    record = emu.recorded_requests()[0]
    assert record.body["system"][-1]["cache_control"] == {"type": "ephemeral", "ttl": ttl}
    written = first.parse().usage
    read = second.parse().usage
    assert written.cache_creation_input_tokens > 4096
    split = written.cache_creation
    assert (
        split.ephemeral_1h_input_tokens if ttl == "1h" else split.ephemeral_5m_input_tokens
    ) == written.cache_creation_input_tokens
    assert read.cache_read_input_tokens == written.cache_creation_input_tokens
    assert read.cache_creation_input_tokens == 0
    # The cost header prices the cache write and read at their own rates.
    for raw, rec in zip((first, second), emu.recorded_requests(), strict=True):
        assert Decimal(raw.headers["x-tierwise-cost-usd"]) == recorded_cost([rec])
    samples = metrics(router.metrics_url)
    kind = f"cache_write_{ttl}"
    assert (
        metric(samples, "tierwise_router_tokens_total", type=kind)
        == written.cache_creation_input_tokens
    )
    assert (
        metric(samples, "tierwise_router_tokens_total", type="cache_read")
        == read.cache_read_input_tokens
    )


def test_history_breakpoint_caches_a_growing_conversation(emu: Any, make_router: Any) -> None:
    router = make_router(caching_doc(emu.base_url, kinds=("history",)))
    client = sdk(router)
    turns = [
        {"role": "user", "content": "long context " * 1500},
        {"role": "assistant", "content": "noted"},
    ]
    client.messages.create(
        model="tierwise/triage", max_tokens=20, messages=[*turns, {"role": "user", "content": "q1"}]
    )
    second = client.messages.create(
        model="tierwise/triage", max_tokens=20, messages=[*turns, {"role": "user", "content": "q2"}]
    )
    first_body = emu.recorded_requests()[0].body
    assert first_body["messages"][1]["content"][-1]["cache_control"]["type"] == "ephemeral"
    assert second.usage.cache_read_input_tokens > 4096


def test_short_prompts_get_no_breakpoint(emu: Any, make_router: Any) -> None:
    router = make_router(caching_doc(emu.base_url))
    sdk(router).messages.create(
        model="tierwise/triage", max_tokens=20, system="Short.", messages=user("x")
    )
    assert emu.recorded_requests()[0].body["system"] == "Short."


# --- response cache -------------------------------------------------------------------


def cached_doc(endpoint: str, **response_cache: Any) -> Any:
    settings = {
        "enabled": True,
        "ttlSeconds": 300,
        "maxEntries": 100,
        "backend": "memory",
        "redisURL": None,
        "allowNonDeterministic": False,
        **response_cache,
    }
    return config(endpoint, response_cache=settings)


def ask(router: Any, text: str = "my invoice is wrong", **extra: Any) -> Any:
    extra.setdefault("extra_body", {"temperature": 0})
    return sdk(router).messages.with_raw_response.create(
        model="tierwise/triage", max_tokens=100, messages=user(text), **extra
    )


def assert_hit_and_miss(emu: Any, router: Any, other_router: Any | None = None) -> None:
    emu.script(HAIKU_MODEL, [{"text": "not json"}])
    emu.script(SONNET_MODEL, [{"text": GOOD}])
    miss = ask(router)
    assert miss.headers["x-tierwise-cache"] == "miss"
    assert Decimal(miss.headers["x-tierwise-cost-usd"]) > 0
    hit = ask(other_router or router)
    assert hit.headers["x-tierwise-cache"] == "hit"
    assert hit.headers["x-tierwise-cost-usd"] == "0"
    assert hit.headers["x-tierwise-tier"] == "sonnet"
    assert hit.parse().content[0].text == GOOD
    assert hit.parse().id == miss.parse().id
    assert len(emu.recorded_requests()) == 2  # haiku + sonnet, once


def test_memory_response_cache_hit_and_miss(emu: Any, make_router: Any) -> None:
    router = make_router(cached_doc(emu.base_url))
    assert_hit_and_miss(emu, router)
    samples = metrics(router.metrics_url)
    assert metric(samples, "tierwise_router_response_cache_total", result="hit") == 1
    assert metric(samples, "tierwise_router_response_cache_total", result="miss") == 1
    assert metric(samples, "tierwise_router_requests_total", outcome="cache_hit") == 1
    # The hit spent nothing but still counts what the counterfactual tier would have cost.
    answers = emu.recorded_requests()
    spent = metric(samples, "tierwise_router_cost_usd_total")
    assert spent == pytest.approx(float(recorded_cost(answers)))
    from router_helpers import MODEL_PRICES

    from tierwise.pricing import Usage, cost_usd

    one = cost_usd(Usage.from_anthropic(answers[-1].usage), MODEL_PRICES[SONNET_MODEL])
    assert metric(samples, "tierwise_router_counterfactual_cost_usd_total") == pytest.approx(
        float(2 * one)
    )


def test_response_cache_only_for_deterministic_requests_unless_allowed(
    emu: Any, make_router: Any
) -> None:
    router = make_router(cached_doc(emu.base_url))
    emu.script(HAIKU_MODEL, [{"text": GOOD}] * 5)
    assert ask(router, extra_body={"temperature": 0.7}).headers["x-tierwise-cache"] == "bypass"
    assert ask(router, extra_body={}).headers["x-tierwise-cache"] == "bypass"
    opted_in = {"extra_body": {"temperature": 0.7}, "extra_headers": {"x-tierwise-cache": "allow"}}
    assert ask(router, **opted_in).headers["x-tierwise-cache"] == "miss"
    assert ask(router, **opted_in).headers["x-tierwise-cache"] == "hit"
    bypass = ask(router, extra_headers={"x-tierwise-cache": "bypass"})
    assert bypass.headers["x-tierwise-cache"] == "bypass"
    assert len(emu.recorded_requests()) == 4


def test_response_cache_is_exact_match_on_the_whole_conversation(
    emu: Any, make_router: Any
) -> None:
    router = make_router(cached_doc(emu.base_url))
    emu.script(HAIKU_MODEL, [{"text": GOOD}] * 3)
    client = sdk(router)
    convo_a = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "same last turn"},
    ]
    convo_b = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "y"},
        {"role": "user", "content": "same last turn"},
    ]
    for convo, expected in ((convo_a, "miss"), (convo_b, "miss"), (convo_a, "hit")):
        raw = client.messages.with_raw_response.create(
            model="tierwise/triage", max_tokens=100, messages=convo, extra_body={"temperature": 0}
        )
        assert raw.headers["x-tierwise-cache"] == expected


def test_streaming_request_is_served_from_the_cache(emu: Any, make_router: Any) -> None:
    router = make_router(cached_doc(emu.base_url))
    emu.script(HAIKU_MODEL, [{"text": "not json"}])
    emu.script(SONNET_MODEL, [{"text": GOOD}])
    body = {
        "model": "tierwise/triage",
        "max_tokens": 100,
        "temperature": 0,
        "messages": user("stream me"),
        "stream": True,
    }
    # A live stream fills the cache from its events (sent as the SDK's caller would) ...
    version = sdk(router).default_headers["anthropic-version"]
    status, headers, raw = raw_request(
        router.base_url, "/v1/messages", body, headers={"anthropic-version": str(version)}
    )
    assert status == 200 and headers["x-tierwise-cache"] == "miss"
    assert b"event: message_stop" in raw
    # ... a non-streaming request reads it, and so does a streaming one.
    plain = ask(router, "stream me")
    assert plain.headers["x-tierwise-cache"] == "hit"
    assert plain.parse().content[0].text == GOOD
    with sdk(router).messages.stream(
        model="tierwise/triage",
        max_tokens=100,
        messages=user("stream me"),
        extra_body={"temperature": 0},
    ) as stream:
        assert "".join(stream.text_stream) == GOOD
        assert stream.response.headers["x-tierwise-cache"] == "hit"
        assert stream.response.headers["x-tierwise-cost-usd"] == "0"
    assert len(emu.recorded_requests()) == 2


@pytest.mark.redis
def test_redis_response_cache_is_shared_between_routers(
    emu: Any, make_router: Any, redis_url: str
) -> None:
    doc = cached_doc(emu.base_url, backend="redis", redisURL=redis_url)
    first, second = make_router(doc), make_router(doc)
    assert_hit_and_miss(emu, first, second)
    samples = metrics(second.metrics_url)
    assert metric(samples, "tierwise_router_response_cache_total", result="hit") == 1


@pytest.mark.redis
def test_redis_response_cache_bound_and_bypass(emu: Any, make_router: Any, redis_url: str) -> None:
    import redis

    doc = cached_doc(emu.base_url, backend="redis", redisURL=redis_url, maxEntries=2)
    doc["policy"]["name"] = "bounded"  # its own key space in the shared server
    from router_builder import with_hash

    router = make_router(with_hash(doc))
    emu.script(HAIKU_MODEL, [{"text": GOOD}] * 10)
    for text in ("q1", "q2", "q3"):
        assert ask(router, text).headers["x-tierwise-cache"] == "miss"
    # q1 was evicted (least recently used), q3 is still there.
    assert ask(router, "q3").headers["x-tierwise-cache"] == "hit"
    assert ask(router, "q1").headers["x-tierwise-cache"] == "miss"
    client = redis.Redis.from_url(redis_url)
    keys = client.keys("tierwise:response-cache:support/bounded:v:*")
    assert len(keys) == 2
    assert 0 < client.ttl(keys[0]) <= 300
    client.close()


@pytest.mark.redis
def test_redis_outage_degrades_to_misses(emu: Any, make_router: Any) -> None:
    from router_helpers import free_port

    doc = cached_doc(emu.base_url, backend="redis", redisURL=f"redis://127.0.0.1:{free_port()}/0")
    router = make_router(doc)
    emu.script(HAIKU_MODEL, [{"text": GOOD}] * 2)
    for _ in range(2):
        raw = ask(router)
        assert raw.parse().content[0].text == GOOD
    samples = metrics(router.metrics_url)
    assert metric(samples, "tierwise_router_response_cache_total", result="error") >= 2


@pytest.mark.redis
def test_point3_the_redis_password_comes_from_the_sidecars_variable(
    emu: Any, make_router: Any, redis_url: str
) -> None:
    """A password-protected Redis user: the config names only the variable, the router
    authenticates with its value (a wrong one is refused by Redis: answered upstream, counted as a cache error)."""
    import redis
    from router_builder import tier_env, with_hash

    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(
        "tierwise-app", enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all"]
    )
    url = redis_url.replace("redis://", "redis://tierwise-app@")
    doc = cached_doc(
        emu.base_url, backend="redis", redisURL=url, redisPasswordEnv="TIERWISE_REDIS_PASSWORD"
    )
    doc["policy"]["name"] = "password"
    doc = with_hash(doc)
    assert "s3cret" not in str(doc)
    router = make_router(doc, env={**tier_env(), "TIERWISE_REDIS_PASSWORD": "s3cret"})
    emu.script(HAIKU_MODEL, [{"text": GOOD}] * 3)
    assert ask(router, "q").headers["x-tierwise-cache"] == "miss"
    assert ask(router, "q").headers["x-tierwise-cache"] == "hit"
    assert any(c.get("user") == "tierwise-app" for c in admin.client_list())
    assert admin.keys("tierwise:response-cache:support/password:v:*")

    wrong = make_router(doc, env={**tier_env(), "TIERWISE_REDIS_PASSWORD": "wrong"})
    # Refused by Redis: the request is answered upstream, not from the cache.
    assert ask(wrong, "q").headers["x-tierwise-cache"] == "bypass"
    samples = metrics(wrong.metrics_url)
    assert metric(samples, "tierwise_router_response_cache_total", result="error") >= 1
    admin.acl_deluser("tierwise-app")
    admin.close()
