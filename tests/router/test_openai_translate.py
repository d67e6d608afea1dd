"""Conformance of the Messages ↔ Chat Completions translation (provider: openai tiers).

Pure and fast: the answers below are shapes recorded from vLLM, llama.cpp's llama-server,
llama-cpp-python and Ollama (ids, timestamps and texts shortened); the live model is in
test_router_e2e_local_model.py.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from tierwise.router.escalation import answer_probability, escalation_reason
from tierwise.router.openai_translate import (
    BadAnswer,
    StreamError,
    StreamTranslator,
    TokenLogprob,
    TranslationError,
    error_message,
    from_chat_response,
    response_format,
    to_chat_request,
)
from tierwise.router.sse import SSEParser, StreamTracker
from tierwise.routerconfig import AnswerProbabilitySignal, JSONFieldNotInSignal

# --- recorded answers ---------------------------------------------------------------------

VLLM_TEXT = {
    "id": "chatcmpl-9f1c2e0d8a4b4e5f",
    "object": "chat.completion",
    "created": 1764979200,
    "model": "Qwen/Qwen2.5-1.5B-Instruct",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "reasoning_content": None,
                "content": "Paris.",
                "tool_calls": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
            "stop_reason": None,
        }
    ],
    "usage": {
        "prompt_tokens": 25,
        "total_tokens": 28,
        "completion_tokens": 3,
        "prompt_tokens_details": None,
    },
    "prompt_logprobs": None,
}
VLLM_STOP_STRING = {
    **VLLM_TEXT,
    "choices": [{**VLLM_TEXT["choices"][0], "stop_reason": "###"}],
}
VLLM_TOOL = {
    "id": "chatcmpl-2b7e",
    "object": "chat.completion",
    "model": "Qwen/Qwen2.5-1.5B-Instruct",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "chatcmpl-tool-5d1a9c",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            "finish_reason": "tool_calls",
            "stop_reason": None,
        }
    ],
    "usage": {"prompt_tokens": 180, "total_tokens": 200, "completion_tokens": 20},
}
LLAMA_SERVER_LENGTH = {
    "choices": [
        {
            "finish_reason": "length",
            "index": 0,
            "message": {"role": "assistant", "content": "The capital of France is"},
        }
    ],
    "created": 1764979200,
    "model": "gpt-3.5-turbo",
    "system_fingerprint": "b4600-4d0598e1",
    "object": "chat.completion",
    "usage": {"completion_tokens": 5, "prompt_tokens": 31, "total_tokens": 36},
    "id": "chatcmpl-kQ1pZk3",
    "timings": {"prompt_n": 31, "predicted_n": 5},
}
OLLAMA_TOOL = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1764979200,
    "model": "llama3.2",
    "system_fingerprint": "fp_ollama",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_x1y2",
                        "index": 0,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 151, "completion_tokens": 17, "total_tokens": 168},
}
LLAMA_CPP_PYTHON_LOGPROBS = {
    "id": "chatcmpl-0e6c",
    "object": "chat.completion",
    "model": "smollm2",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": '{"label": "bug"}'},
            "logprobs": {
                "content": [
                    {"token": '{"', "logprob": -0.01, "bytes": None, "top_logprobs": []},
                    {"token": "label", "logprob": -0.02, "bytes": None, "top_logprobs": []},
                    {"token": '":', "logprob": -0.01, "bytes": None, "top_logprobs": []},
                    {"token": ' "', "logprob": -0.05, "bytes": None, "top_logprobs": []},
                    {"token": "b", "logprob": -0.4, "bytes": None, "top_logprobs": []},
                    {"token": "ug", "logprob": -0.1, "bytes": None, "top_logprobs": []},
                    {"token": '"}', "logprob": -0.01, "bytes": None, "top_logprobs": []},
                ],
                "refusal": None,
            },
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 40, "completion_tokens": 7, "total_tokens": 47},
}


# --- requests -----------------------------------------------------------------------------


def test_request_carries_system_turns_limits_and_sampling():
    chat = to_chat_request(
        {
            "model": "smollm2",
            "system": [
                {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Answer in JSON."},
            ],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "bye", "cache_control": {"type": "ephemeral"}}
                    ],
                },
            ],
            "max_tokens": 64,
            "stop_sequences": ["###"],
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 5,
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "metadata": {"user_id": "u1"},
        }
    )
    assert chat == {
        "model": "smollm2",
        "messages": [
            {"role": "system", "content": "Be brief.\n\nAnswer in JSON."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"},
        ],
        "max_tokens": 64,
        "stop": ["###"],
        "temperature": 0.2,
        "top_p": 0.9,
    }


def test_request_tools_tool_choice_and_the_tool_round_trip():
    chat = to_chat_request(
        {
            "model": "m",
            "max_tokens": 10,
            "tools": [
                {
                    "name": "get_weather",
                    "description": "Weather of a city",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                }
            ],
            "tool_choice": {
                "type": "tool",
                "name": "get_weather",
                "disable_parallel_tool_use": True,
            },
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "...", "signature": "s"},
                        {"type": "text", "text": "Let me check."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "18C"}],
                        },
                        {"type": "text", "text": "Thanks"},
                    ],
                },
            ],
        },
        stream=True,
        logprobs=True,
    )
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "description": "Weather of a city",
            },
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["parallel_tool_calls"] is False
    assert chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "user", "content": "Thanks"},
    ]
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert chat["logprobs"] is True and chat["top_logprobs"] == 20


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
    ],
)
def test_tool_choice_kinds(choice, expected):
    body = {
        "model": "m",
        "messages": [],
        "tools": [{"name": "f", "input_schema": {}}],
        "tool_choice": choice,
    }
    assert to_chat_request(body)["tool_choice"] == expected


def test_an_error_tool_result_says_so_in_its_text():
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": "city unknown",
                        "is_error": True,
                    }
                ],
            }
        ],
    }
    assert to_chat_request(body)["messages"] == [
        {"role": "tool", "tool_call_id": "t", "content": "Error: city unknown"}
    ]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": "AA==",
                                },
                            }
                        ],
                    }
                ]
            },
            "messages[0].content[0]: image blocks",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "document blocks",
        ),
        (
            {"messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            "tools[0]: the server tool 'web_search_20250305'",
        ),
        ({"messages": [], "mcp_servers": []}, "mcp_servers cannot be sent"),
    ],
)
def test_what_cannot_be_translated_is_refused_naming_it(body, named):
    with pytest.raises(TranslationError, match=named.replace("[", r"\[").replace("]", r"\]")):
        to_chat_request({"model": "m", **body})


# --- answers ------------------------------------------------------------------------------


def test_vllm_text_answer():
    message = from_chat_response(VLLM_TEXT, model="qwen").message
    assert message == {
        "id": "msg_chatcmpl-9f1c2e0d8a4b4e5f",
        "type": "message",
        "role": "assistant",
        "model": "qwen",
        "content": [{"type": "text", "text": "Paris."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 25,
            "output_tokens": 3,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def test_vllm_names_the_stop_string_it_matched():
    message = from_chat_response(VLLM_STOP_STRING, model="q", stop_sequences=["###"]).message
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "###")


@pytest.mark.parametrize("recorded", [VLLM_TOOL, OLLAMA_TOOL], ids=["vllm", "ollama"])
def test_tool_calls_become_tool_use_blocks(recorded):
    message = from_chat_response(recorded, model="m").message
    assert message["stop_reason"] == "tool_use"
    (block,) = message["content"]  # Ollama's empty content makes no text block
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_")
    assert (block["name"], block["input"]) == ("get_weather", {"city": "Paris"})


def test_llama_server_length_is_max_tokens_and_usage_is_the_servers():
    message = from_chat_response(LLAMA_SERVER_LENGTH, model="m").message
    assert message["stop_reason"] == "max_tokens"
    assert (message["usage"]["input_tokens"], message["usage"]["output_tokens"]) == (31, 5)


def test_content_filter_is_a_refusal():
    recorded = {
        **VLLM_TEXT,
        "choices": [{**VLLM_TEXT["choices"][0], "finish_reason": "content_filter"}],
    }
    assert from_chat_response(recorded, model="m").message["stop_reason"] == "refusal"


@pytest.mark.parametrize(
    "broken",
    [
        [],
        {"choices": []},
        {"choices": [{"index": 0}]},
        {
            "choices": [
                {"message": {"tool_calls": [{"function": {"name": "f", "arguments": "{nope"}}]}}
            ]
        },
        {
            "choices": [
                {"message": {"tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}}
            ]
        },
    ],
)
def test_a_broken_completion_is_a_bad_answer(broken):
    with pytest.raises(BadAnswer):
        from_chat_response(broken, model="m")


def test_error_bodies_of_each_server_shape():
    assert (
        error_message(b'{"error": {"message": "context too long", "type": "BadRequestError"}}')
        == "context too long"
    )
    assert error_message(b'{"error": "model not found"}') == "model not found"  # Ollama
    assert error_message(b'{"detail": "Not Found"}') == "Not Found"  # FastAPI
    assert error_message(b"<html>502</html>") is None


# --- log-probabilities --------------------------------------------------------------------


def test_the_label_probability_is_the_product_over_its_value_tokens():
    answer = from_chat_response(LLAMA_CPP_PYTHON_LOGPROBS, model="m")
    probability = answer_probability(answer.logprobs, ("label",))
    assert probability == pytest.approx(math.exp(-0.4 - 0.1))


def test_the_free_text_probability_is_the_geometric_mean():
    tokens = [TokenLogprob("a", -0.2), TokenLogprob("b", -0.4)]
    assert answer_probability(tokens) == pytest.approx(math.exp(-0.3))


def test_answer_probability_signal_fires_below_and_without_logprobs():
    answer = from_chat_response(LLAMA_CPP_PYTHON_LOGPROBS, model="m")
    from decimal import Decimal

    low = AnswerProbabilitySignal(Decimal("0.5"), ("label",))
    high = AnswerProbabilitySignal(Decimal("0.7"), ("label",))
    assert escalation_reason([low], answer.message, answer.logprobs) is None  # 0.607 >= 0.5
    assert escalation_reason([high], answer.message, answer.logprobs) == "answer_probability_below"
    assert escalation_reason([low], answer.message, None) == "answer_probability_below"
    missing = AnswerProbabilitySignal(Decimal("0.1"), ("confidence",))
    assert escalation_reason([missing], answer.message, answer.logprobs) is not None


LABELS = ("billing", "bug", "account", "feature-request", "other")


def constrained_answer() -> list[TokenLogprob]:
    """A llama-cpp-python answer under a label enum: the log-probabilities are the model's
    own, before the constraint, with each token's listed alternatives."""
    return [
        TokenLogprob("{", -5.6),
        TokenLogprob(' "', -4.4),
        TokenLogprob("label", -0.3),
        TokenLogprob('":', -0.1),
        TokenLogprob(' "', -0.3),
        # 'B' and 'Why' begin no label (the constraint masks them); 'b' may still spell
        # billing; 'bug' is a rival; three labels are not listed: each counts at e^-3.
        TokenLogprob(
            "bill", -1.0, (("B", -0.5), ("bill", -1.0), ("bug", -2.0), ("b", -2.5), ("Why", -3.0))
        ),
        # After 'bill' no other label is possible: '"' or ' increase' are masked.
        TokenLogprob("ing", -2.0, ((" increase", -1.0), ("ing", -2.0), ('"', -3.0))),
        TokenLogprob('"', -1.0),
        TokenLogprob("}", -7.4),
    ]


def test_a_label_is_weighed_against_the_other_allowed_labels_not_the_vocabulary():
    tokens = constrained_answer()
    assert answer_probability(tokens, ("label",)) == pytest.approx(math.exp(-3.0))  # raw
    chosen = math.exp(-1.0)
    rivals = math.exp(-2.0) + 3 * math.exp(-3.0)
    expected = chosen / (chosen + rivals)
    assert answer_probability(tokens, ("label",), LABELS) == pytest.approx(expected)
    assert 0.5 < expected < 0.6


def test_the_answer_probability_signal_reads_the_steps_allowed_labels():
    from decimal import Decimal

    tokens = constrained_answer()
    message = {"content": [{"type": "text", "text": "".join(t.token for t in tokens)}]}
    gate = AnswerProbabilitySignal(Decimal("0.5"), ("label",))
    labels = JSONFieldNotInSignal(("label",), LABELS)
    assert escalation_reason([gate], message, tokens) == "answer_probability_below"  # raw 0.05
    assert escalation_reason([labels, gate], message, tokens) is None  # 0.55 among labels
    stricter = AnswerProbabilitySignal(Decimal("0.6"), ("label",))
    assert escalation_reason([labels, stricter], message, tokens) == "answer_probability_below"


def test_without_listed_alternatives_the_label_probability_stays_raw():
    tokens = [TokenLogprob(t.token, t.logprob) for t in constrained_answer()]
    assert answer_probability(tokens, ("label",), LABELS) == pytest.approx(math.exp(-3.0))


def test_a_label_outside_the_allowed_values_keeps_its_raw_probability():
    tokens = constrained_answer()
    assert answer_probability(tokens, ("label",), ("bug", "other")) == pytest.approx(math.exp(-3.0))


def test_each_tokens_listed_alternatives_are_read_and_malformed_ones_left_out():
    completion = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "finish_reason": "stop",
                "logprobs": {
                    "content": [
                        {
                            "token": "ok",
                            "logprob": -0.1,
                            "top_logprobs": [
                                {"token": "ok", "logprob": -0.1},
                                {"token": "no", "logprob": "high"},
                                "junk",
                                {"token": "yes", "logprob": -2.5},
                            ],
                        }
                    ]
                },
            }
        ]
    }
    [token] = from_chat_response(completion, model="m").logprobs
    assert token.top == (("ok", -0.1), ("yes", -2.5))


SCHEMA = {"type": "object", "properties": {"label": {"type": "string", "enum": ["a"]}}}


def test_response_format_in_each_servers_form():
    assert response_format("jsonObject", SCHEMA) == {"type": "json_object", "schema": SCHEMA}
    assert response_format("jsonSchema", SCHEMA) == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
    }
    assert response_format("none", SCHEMA) is None
    assert response_format("jsonSchema", None) is None
    with pytest.raises(ValueError, match="jsonschema"):
        response_format("jsonschema", SCHEMA)


def test_the_response_format_goes_with_the_request_but_never_beside_tools():
    body = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
    wanted = response_format("jsonObject", SCHEMA)
    assert to_chat_request(body, response_format=wanted)["response_format"] == wanted
    tools = [{"name": "t", "input_schema": {"type": "object"}}]
    assert "response_format" not in to_chat_request(
        {**body, "tools": tools}, response_format=wanted
    )


# --- streams ------------------------------------------------------------------------------


def sse(*chunks: Any, done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")


def chunk(
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    usage: Any = None,
    choices: bool = True,
) -> dict[str, Any]:
    out: dict[str, Any] = {"id": "chatcmpl-s1", "object": "chat.completion.chunk", "model": "m"}
    out["choices"] = (
        [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []
    )
    if usage is not None:
        out["usage"] = usage
    return out


VLLM_STREAM_WITH_USAGE = sse(
    chunk({"role": "assistant", "content": ""}, usage=None),
    chunk({"content": "Hel"}),
    chunk({"content": "lo"}),
    chunk({}, "stop"),
    chunk(choices=False, usage={"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}),
)
OLLAMA_STREAM_WITHOUT_USAGE = sse(
    chunk({"role": "assistant", "content": "Hel"}),
    chunk({"content": "lo"}),
    chunk({"content": ""}, "stop"),
)
LLAMA_SERVER_TOOL_STREAM = sse(
    chunk(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_7",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ],
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    chunk(
        {}, "tool_calls", usage={"prompt_tokens": 90, "completion_tokens": 9, "total_tokens": 99}
    ),
)


def translate(stream: bytes, *, seed: int = 0, estimated_input: int = 0) -> dict[str, Any]:
    """The final message the router's own stream tracker rebuilds from the translated events,
    the input cut at random boundaries."""
    translator = StreamTranslator(model="m", estimated_input=estimated_input)
    rand = random.Random(seed)
    out = b""
    position = 0
    while position < len(stream):
        size = rand.randint(1, 40)
        out += translator.feed(stream[position : position + size])
        position += size
    out += translator.finish()
    tracker = StreamTracker(keep_message=True)
    tracker.feed(SSEParser().feed(out))
    message = tracker.final_message()
    assert message is not None, out
    return message


@pytest.mark.parametrize("seed", range(5))
def test_vllm_stream_with_usage(seed):
    message = translate(VLLM_STREAM_WITH_USAGE, seed=seed)
    assert message["content"] == [{"type": "text", "text": "Hello"}]
    assert message["stop_reason"] == "end_turn"
    assert (message["usage"]["input_tokens"], message["usage"]["output_tokens"]) == (12, 2)


def test_a_stream_without_usage_counts_deltas_and_estimates_input():
    message = translate(OLLAMA_STREAM_WITHOUT_USAGE, estimated_input=7)
    assert message["content"] == [{"type": "text", "text": "Hello"}]
    assert (message["usage"]["input_tokens"], message["usage"]["output_tokens"]) == (7, 2)


@pytest.mark.parametrize("seed", range(3))
def test_a_streamed_tool_call_becomes_a_tool_use_block(seed):
    message = translate(LLAMA_SERVER_TOOL_STREAM, seed=seed)
    (block,) = message["content"]
    assert block["type"] == "tool_use" and block["name"] == "get_weather"
    assert block["input"] == {"city": "Paris"}
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["output_tokens"] == 9


def test_a_stream_that_ends_without_done_still_closes_the_message():
    message = translate(sse(chunk({"content": "Hi"}), chunk({}, "length"), done=False))
    assert message["stop_reason"] == "max_tokens"


def test_an_error_inside_a_stream_raises():
    translator = StreamTranslator(model="m")
    with pytest.raises(StreamError, match="out of memory"):
        translator.feed(
            b'data: {"error": {"message": "out of memory", "type": "InternalServerError"}}\n\n'
        )
