"""A self-hosted tier for real: the official SDK → router → llama_cpp.server → SmolLM2-135M.

Every answer here is written by a real model (no emulator on the first step); the numbers the
router reports are checked against what the server itself reports for the same request.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest
from local_model import MODEL_ALIAS, chat, llama_server
from router_builder import SONNET_MODEL, config, route, step, tier
from router_helpers import CLIENT_KEY, free_port, sdk, user

from tierwise.router.request import estimate_prompt_tokens

pytestmark = pytest.mark.timeout(300)

# A notional price, so that cost is visible (a server you run yourself may well be 0).
PRICES = {
    "input": "0.10",
    "output": "0.20",
    "cacheWrite5m": "0.10",
    "cacheWrite1h": "0.10",
    "cacheRead": "0.10",
}
QUESTION = "What is the capital of France? Answer in one word."


@pytest.fixture(scope="module")
def local_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = Path(tmp_path_factory.mktemp("llama")) / "server.log"
    with llama_server(log=log) as url:
        yield url


def local_tier(endpoint: str, **options: Any) -> dict[str, Any]:
    options.setdefault("timeout", 120)  # a CPU model on shared cores: seconds per answer
    doc = tier(SONNET_MODEL, endpoint, name="local", pricing=PRICES, **options)
    return {**doc, "provider": "openai", "model": MODEL_ALIAS, "apiKeyEnv": None}


def local_config(
    endpoint: str,
    emulator: str = "http://127.0.0.1:9",
    *,
    signals: list[dict[str, Any]] | None = None,
    structured_output: str | None = None,
    **tier_options: Any,
) -> dict[str, Any]:
    steps = [step("local", 64, *(signals or []))]
    local = local_tier(endpoint, **tier_options)
    if structured_output is not None:
        local["structuredOutput"] = structured_output
    if signals:
        steps.append(step("sonnet", 64))
    return config(
        emulator,
        routes=[route("local", steps, counterfactual="sonnet")],
        default_route="local",
        tiers={
            "local": local,
            "sonnet": tier(SONNET_MODEL, emulator, name="sonnet"),
        },
        retry={"maxAttempts": 2, "initialBackoffSeconds": "0.01", "maxBackoffSeconds": "0.02"},
    )


def expected_cost(prompt_tokens: int, completion_tokens: int) -> Decimal:
    return (
        Decimal(prompt_tokens) * Decimal(PRICES["input"])
        + Decimal(completion_tokens) * Decimal(PRICES["output"])
    ) / Decimal(1_000_000)


def direct(url: str, **extra: Any) -> dict[str, Any]:
    """The same request straight to the server, as the router translates it."""
    body = {
        "model": MODEL_ALIAS,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 16,
        "temperature": 0,
        **extra,
    }
    return chat(url, body)


def test_sync_sdk_answer_usage_and_cost_match_the_servers_own_tokens(local_url, make_router):
    router = make_router(local_config(local_url))
    reference = direct(local_url)
    with sdk(router, timeout=120) as client:
        raw = client.messages.with_raw_response.create(
            model="tierwise/local",
            max_tokens=16,
            extra_body={"temperature": 0},
            messages=user(QUESTION),
        )
    message = raw.parse()
    assert message.content[0].type == "text"
    assert message.content[0].text == reference["choices"][0]["message"]["content"]
    assert message.model == MODEL_ALIAS
    usage = reference["usage"]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert raw.headers["x-tierwise-tier"] == "local"
    assert Decimal(raw.headers["x-tierwise-cost-usd"]) == expected_cost(
        usage["prompt_tokens"], usage["completion_tokens"]
    )


def test_async_sdk_answer(local_url, make_router):
    router = make_router(local_config(local_url))
    reference = direct(local_url)

    async def ask() -> anthropic.types.Message:
        async with anthropic.AsyncAnthropic(
            base_url=router.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=120
        ) as client:
            return await client.messages.create(
                model="tierwise/local",
                max_tokens=16,
                extra_body={"temperature": 0},
                messages=user(QUESTION),
            )

    message = asyncio.run(ask())
    assert message.content[0].text == reference["choices"][0]["message"]["content"]
    assert message.stop_reason in ("end_turn", "max_tokens")


def test_streaming_sdk_helpers_rebuild_the_servers_answer(local_url, make_router):
    router = make_router(local_config(local_url))
    reference = direct(local_url)
    deltas: list[str] = []
    with (
        sdk(router, timeout=120) as client,
        client.messages.stream(
            model="tierwise/local",
            max_tokens=16,
            extra_body={"temperature": 0},
            messages=user(QUESTION),
        ) as stream,
    ):
        for text in stream.text_stream:
            deltas.append(text)
        final = stream.get_final_message()
    expected = reference["choices"][0]["message"]["content"]
    assert len(deltas) > 1  # streamed token by token, not one synthesized block
    assert "".join(deltas) == final.content[0].text == expected
    # llama-cpp-python streams no usage (it ignores stream_options): output tokens are the
    # streamed tokens, exact; input tokens are the router's documented estimate, not the
    # server's count, and the cost follows them.
    assert final.usage.output_tokens == reference["usage"]["completion_tokens"]
    estimate = estimate_prompt_tokens({"messages": user(QUESTION)})
    assert final.usage.input_tokens == estimate != reference["usage"]["prompt_tokens"]


def test_a_forced_tool_choice_comes_back_as_a_tool_use_block(local_url, make_router):
    router = make_router(local_config(local_url))
    weather = {
        "name": "get_weather",
        "description": "The weather of a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
    with sdk(router, timeout=120) as client:
        message = client.messages.create(
            model="tierwise/local",
            max_tokens=48,
            extra_body={"temperature": 0},
            tools=[weather],
            tool_choice={"type": "tool", "name": "get_weather"},
            messages=user("What is the weather in Paris?"),
        )
        (block,) = [b for b in message.content if b.type == "tool_use"]
        assert block.name == "get_weather"
        assert isinstance(block.input, dict) and isinstance(block.input.get("city"), str)
        assert message.stop_reason == "tool_use"
        # The tool result goes back as a tool message; the model answers in text.
        answer = client.messages.create(
            model="tierwise/local",
            max_tokens=32,
            extra_body={"temperature": 0},
            tools=[weather],
            messages=[
                *user("What is the weather in Paris?"),
                {"role": "assistant", "content": message.content},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": block.id, "content": "Sunny, 21C"}
                    ],
                },
            ],
        )
    assert answer.content and answer.content[0].type == "text"


def mean_token_probability(url: str) -> float:
    reference = direct(url, logprobs=True, top_logprobs=1)
    tokens = reference["choices"][0]["logprobs"]["content"]
    return math.exp(sum(t["logprob"] for t in tokens) / len(tokens))


@pytest.mark.parametrize(("offset", "escalates"), [(-0.02, False), (0.02, True)])
def test_escalation_follows_the_models_own_token_probability(
    local_url, emu, make_router, offset, escalates
):
    probability = mean_token_probability(local_url)
    assert 0.05 < probability < 0.98, probability  # room on both sides of the threshold
    threshold = f"{probability + offset:.4f}"
    signal = {"signal": "answerProbabilityBelow", "threshold": threshold}
    router = make_router(local_config(local_url, emu.base_url, signals=[signal]))
    with sdk(router, timeout=120) as client:
        raw = client.messages.with_raw_response.create(
            model="tierwise/local",
            max_tokens=16,
            extra_body={"temperature": 0},
            messages=user(QUESTION),
        )
    assert raw.headers["x-tierwise-escalations"] == ("1" if escalates else "0")
    assert raw.headers["x-tierwise-tier"] == ("sonnet" if escalates else "local")


LABELS = ["billing", "bug", "account", "feature-request", "other"]
TRIAGE = (
    "Classify the email as billing, bug, account, feature-request or other. "
    'Answer with JSON only: {"label": "<one of the five>"}'
)
TRIAGE_SIGNALS = [
    {"signal": "invalidJSON"},
    {"signal": "jsonFieldNotIn", "field": "label", "values": LABELS},
    # Fires only without a probability: no JSON, no label or no log-probabilities.
    {"signal": "answerProbabilityBelow", "field": "label", "threshold": "0"},
]


@pytest.mark.parametrize(
    ("structured_output", "answered_by"), [("jsonObject", "local"), (None, "sonnet")]
)
def test_a_constrained_model_always_writes_an_allowed_label(
    local_url, emu, make_router, structured_output, answered_by
):
    config = local_config(
        local_url, emu.base_url, signals=TRIAGE_SIGNALS, structured_output=structured_output
    )
    router = make_router(config)
    with sdk(router, timeout=120) as client:
        raw = client.messages.with_raw_response.create(
            model="tierwise/local",
            max_tokens=32,
            system=TRIAGE,
            extra_body={"temperature": 0},
            messages=user("Why did my bill go up to $220?"),
        )
    # Unconstrained, the model writes prose (not JSON) and the step escalates; constrained,
    # its own answer parses, carries one of the labels and a probability for it.
    assert raw.headers["x-tierwise-tier"] == answered_by
    if answered_by == "local":
        answer = json.loads(raw.parse().content[0].text)
        assert set(answer) == {"label"} and answer["label"] in LABELS


def tokenize(url: str, text: str) -> list[int]:
    request = urllib.request.Request(
        url + "/extras/tokenize",
        data=json.dumps({"input": text}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["tokens"]


def test_count_tokens_asks_the_servers_tokenizer(local_url, make_router):
    router = make_router(local_config(local_url))
    with sdk(router, timeout=60) as client:
        short = client.messages.count_tokens(model="tierwise/local", messages=user("Hi"))
        longer = client.messages.count_tokens(
            model="tierwise/local", messages=user("Hi " + "tokens " * 50)
        )
    assert 0 < short.input_tokens < longer.input_tokens
    # The server's own tokenizer counted them (the router's estimate would differ).
    assert short.input_tokens == len(tokenize(local_url, "Hi"))
    assert longer.input_tokens == len(tokenize(local_url, "Hi " + "tokens " * 50))


def test_a_prompt_over_the_context_window_is_the_clients_error(local_url, make_router):
    router = make_router(local_config(local_url))
    with sdk(router, timeout=120) as client, pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="tierwise/local", max_tokens=16, messages=user("word " * 4000))
    error = caught.value.body["error"]
    assert error["type"] == "invalid_request_error"
    assert "tier 'local' answered HTTP 400" in error["message"]


def test_an_image_is_refused_naming_the_block(local_url, make_router):
    router = make_router(local_config(local_url))
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    with sdk(router) as client, pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="tierwise/local",
            max_tokens=16,
            messages=[{"role": "user", "content": [image]}],
        )
    assert "messages[0].content[0]: image blocks" in caught.value.body["error"]["message"]


def test_an_unreachable_server_is_a_502_after_the_routers_retries(make_router):
    router = make_router(local_config(f"http://127.0.0.1:{free_port()}"))
    with sdk(router) as client, pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model="tierwise/local", max_tokens=16, messages=user("x"))
    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert "tier 'local' unreachable" in caught.value.body["error"]["message"]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_a_server_that_does_not_answer_in_time_is_a_timeout_error(silent_server, make_router):
    router = make_router(local_config(silent_server, timeout=1))
    with sdk(router) as client, pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="tierwise/local", max_tokens=16, messages=user("x"))
    assert caught.value.status_code == 504
    assert caught.value.body["error"]["type"] == "timeout_error"
    assert caught.value.response.headers["x-should-retry"] == "false"  # retried once already
