"""Anthropic Messages ↔ OpenAI Chat Completions, for tiers with ``provider: openai``.

Pure functions and one incremental stream translator, no I/O: the router's upstream adapter
(``tierwise.router.openai_upstream``) calls them around the HTTP exchange. The rules for what
has no counterpart are in docs/router.md ("Self-hosted tiers"): prompt-cache marks, thinking
settings and ``top_k`` are dropped (they change cost or sampling, never the meaning of the
conversation); images, documents, thinking blocks in the history, server tools and
``mcp_servers`` are refused with a 400 naming the block, because dropping them would change
what the model is asked.

The shapes accepted on the way back are those of vLLM, llama.cpp (``llama-server`` and
``llama-cpp-python``), Ollama and OpenAI itself: ``finish_reason`` stop/length/tool_calls/
function_call/content_filter, tool calls with string arguments, usage at the end of a stream
(``stream_options.include_usage``) or not at all.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tierwise.router.jsonutil import dumps, loads


class TranslationError(ValueError):
    """A request the tier's API cannot express; the client gets a 400 with this message."""


# --- request ----------------------------------------------------------------------------

# Request fields with no Chat Completions counterpart that change cost or sampling only.
DROPPED_FIELDS = frozenset({"thinking", "top_k", "metadata", "service_tier", "cache_control"})
# Request fields that would change what the model is asked: refused rather than dropped.
REFUSED_FIELDS = frozenset({"mcp_servers", "container", "context_management"})
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
# Alternatives asked for with each token's log-probability: OpenAI's and vLLM's (default)
# most. ``answerProbabilityBelow`` weighs a label against the other allowed labels with them.
TOP_LOGPROBS = 20


def to_chat_request(
    body: Mapping[str, Any],
    *,
    stream: bool = False,
    logprobs: bool = False,
    response_format: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Chat Completions request of a Messages request (raises ``TranslationError``).
    ``response_format`` (see ``response_format``) is sent unless the request has tools: a
    model constrained to one JSON shape could not call them."""
    for name in REFUSED_FIELDS & body.keys():
        raise TranslationError(f"{name} cannot be sent to an OpenAI-compatible tier")
    messages: list[dict[str, Any]] = []
    system = _system_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for index, message in enumerate(body.get("messages") or []):
        messages.extend(_chat_messages(message, f"messages[{index}]"))
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_tokens") is not None:
        chat["max_tokens"] = body["max_tokens"]
    if body.get("stop_sequences"):
        chat["stop"] = list(body["stop_sequences"])
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("tools"):
        chat["tools"] = [_chat_tool(tool, i) for i, tool in enumerate(body["tools"])]
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping):
        _tool_choice(chat, choice)
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    if logprobs:
        # top_logprobs too: llama-cpp-python returns no log-probabilities without it.
        chat["logprobs"] = True
        chat["top_logprobs"] = TOP_LOGPROBS
    if response_format is not None and not body.get("tools"):
        chat["response_format"] = dict(response_format)
    return chat


def response_format(style: str, schema: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``response_format`` asking for an answer matching ``schema``, in a tier's
    ``structuredOutput`` style: jsonSchema is OpenAI's form (also vLLM's, llama.cpp's
    ``llama-server``'s, Ollama's, SGLang's), jsonObject llama-cpp-python's (its server
    refuses type json_schema; llama-server accepts both). ``None``: nothing to ask."""
    if schema is None or style == "none":
        return None
    if style == "jsonObject":
        return {"type": "json_object", "schema": dict(schema)}
    if style == "jsonSchema":
        # strict: the schema is complete (every field required, no others), as OpenAI's
        # strict mode demands.
        return {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": dict(schema), "strict": True},
        }
    raise ValueError(f"unknown structuredOutput {style!r}")


def _system_text(system: Any) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    return "\n\n".join(_text_of(block, "system") for block in system)


def _text_of(block: Any, where: str) -> str:
    if isinstance(block, str):
        return block
    if isinstance(block, Mapping) and block.get("type") == "text":
        return str(block.get("text", ""))
    kind = block.get("type") if isinstance(block, Mapping) else type(block).__name__
    raise TranslationError(f"{where}: {kind} blocks cannot be sent to a text-only tier")


def _chat_messages(message: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    role = message.get("role")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if role == "assistant":
        return [_assistant_message(content or [], where)]
    return _user_messages(content or [], where)


def _assistant_message(blocks: Sequence[Any], where: str) -> dict[str, Any]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "tool_use":
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            # Earlier thinking is the other model's reasoning, not conversation: dropped.
            continue
        else:
            text.append(_text_of(block, f"{where}.content[{i}]"))
    # An empty string, not null, beside tool calls: llama-cpp-python refuses a null content.
    chat: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
    if calls:
        chat["tool_calls"] = calls
    return chat


def _user_messages(blocks: Sequence[Any], where: str) -> list[dict[str, Any]]:
    """Tool results become ``tool`` messages (first: they answer the previous turn's calls),
    the rest of the turn one ``user`` message."""
    tools: list[dict[str, Any]] = []
    text: list[str] = []
    for i, block in enumerate(blocks):
        at = f"{where}.content[{i}]"
        if isinstance(block, Mapping) and block.get("type") == "tool_result":
            tools.append(
                {
                    "role": "tool",
                    "tool_call_id": block.get("tool_use_id"),
                    "content": _tool_result_text(block, at),
                }
            )
        else:
            text.append(_text_of(block, at))
    chat = list(tools)
    if text:
        chat.append({"role": "user", "content": "\n\n".join(text)})
    return chat


def _tool_result_text(block: Mapping[str, Any], where: str) -> str:
    content = block.get("content")
    text = (
        content
        if isinstance(content, str)
        else "".join(
            _text_of(part, f"{where}.content[{i}]") for i, part in enumerate(content or [])
        )
    )
    # Chat Completions has no is_error: the model reads it from the text, as LiteLLM does.
    return f"Error: {text}" if block.get("is_error") else text


def _chat_tool(tool: Mapping[str, Any], index: int) -> dict[str, Any]:
    if tool.get("type") not in (None, "custom"):
        raise TranslationError(
            f"tools[{index}]: the server tool {tool.get('type')!r} cannot run on an "
            "OpenAI-compatible tier"
        )
    function: dict[str, Any] = {
        "name": tool.get("name"),
        "parameters": tool.get("input_schema") or {"type": "object"},
    }
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(chat: dict[str, Any], choice: Mapping[str, Any]) -> None:
    kind = choice.get("type")
    if kind == "tool":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif kind in TOOL_CHOICES:
        chat["tool_choice"] = TOOL_CHOICES[kind]
    if choice.get("disable_parallel_tool_use") and chat.get("tools"):
        chat["parallel_tool_calls"] = False


# --- response ---------------------------------------------------------------------------

FINISH_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


class BadAnswer(ValueError):
    """A 2xx answer that is not a Chat Completion (a server error, retried like a 5xx)."""


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    # The server's most likely tokens at this position (``top_logprobs``), the chosen one
    # usually among them: (token, log-probability) pairs.
    top: tuple[tuple[str, float], ...] = ()


@dataclass
class Translated:
    """A Messages API answer and the token log-probabilities the server sent with it."""

    message: dict[str, Any]
    logprobs: list[TokenLogprob] | None = None


def from_chat_response(
    completion: Any, *, model: str, stop_sequences: Sequence[str] = ()
) -> Translated:
    """The Messages answer of a (non-streamed) Chat Completion."""
    if not isinstance(completion, Mapping):
        raise BadAnswer("the answer is not a JSON object")
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise BadAnswer("the answer has no choices")
    choice = choices[0]
    chat = choice.get("message")
    if not isinstance(chat, Mapping):
        raise BadAnswer("the answer's choice has no message")
    content: list[dict[str, Any]] = []
    if isinstance(chat.get("content"), str) and chat["content"]:
        content.append({"type": "text", "text": chat["content"]})
    for call in chat.get("tool_calls") or []:
        content.append(_tool_use(call))
    stop_reason, stop_sequence = _stop(choice, stop_sequences)
    message = {
        "id": message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": anthropic_usage(completion.get("usage")),
    }
    return Translated(message, token_logprobs(choice.get("logprobs")))


def message_id(chat_id: Any) -> str:
    """A ``msg_`` id from the server's id (which may be missing or contain anything)."""
    tail = re.sub(r"[^A-Za-z0-9_-]", "", str(chat_id or ""))[:64]
    return "msg_" + (tail or "openai")


def _tool_use(call: Any) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping) or not function.get("name"):
        raise BadAnswer("a tool call without a function name")
    return {
        "type": "tool_use",
        "id": tool_use_id(call.get("id")),
        "name": function["name"],
        "input": tool_input(function.get("arguments")),
    }


def tool_use_id(call_id: Any) -> str:
    tail = re.sub(r"[^A-Za-z0-9_-]", "", str(call_id or ""))
    return tail if tail.startswith("toolu_") else "toolu_" + (tail or "call")


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments (a JSON string, an object from Ollama) as an object."""
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if arguments in (None, ""):
        return {}
    try:
        value = loads(arguments if isinstance(arguments, bytes) else str(arguments).encode())
    except ValueError as exc:
        raise BadAnswer("tool call arguments are not JSON") from exc
    if not isinstance(value, dict):
        raise BadAnswer("tool call arguments are not a JSON object")
    return value


def _stop(choice: Mapping[str, Any], stop_sequences: Sequence[str]) -> tuple[str, str | None]:
    finish = choice.get("finish_reason")
    # vLLM names the stop string it matched in ``stop_reason`` (an int is a stop token id).
    matched = choice.get("stop_reason")
    if finish == "stop" and isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    return FINISH_REASONS.get(finish, "end_turn"), None


def anthropic_usage(usage: Any, *, estimated_input: int = 0, counted_output: int = 0) -> dict:
    """Messages API usage from Chat Completions usage; counts stand in where it is missing."""
    usage = usage if isinstance(usage, Mapping) else {}
    return {
        "input_tokens": _count(usage.get("prompt_tokens"), estimated_input),
        "output_tokens": _count(usage.get("completion_tokens"), counted_output),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _count(value: Any, default: int) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
    )


def token_logprobs(logprobs: Any) -> list[TokenLogprob] | None:
    """``choice.logprobs.content`` (the Chat Completions shape) as (token, logprob) pairs."""
    content = logprobs.get("content") if isinstance(logprobs, Mapping) else None
    if not isinstance(content, list):
        return None
    out: list[TokenLogprob] = []
    for item in content:
        if not isinstance(item, Mapping):
            return None
        value = item.get("logprob")
        if not _is_logprob(value):
            return None
        out.append(TokenLogprob(str(item.get("token", "")), float(value), _top(item)))
    return out


def _is_logprob(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _top(item: Mapping[str, Any]) -> tuple[tuple[str, float], ...]:
    """The alternatives of one token; malformed entries are left out (they only weigh)."""
    top = item.get("top_logprobs")
    if not isinstance(top, list):
        return ()
    return tuple(
        (str(alt.get("token", "")), float(alt["logprob"]))
        for alt in top
        if isinstance(alt, Mapping) and _is_logprob(alt.get("logprob"))
    )


# --- errors -----------------------------------------------------------------------------


def error_message(body: bytes) -> str | None:
    """The message of an OpenAI-style (``{"error": {...}}``), FastAPI (``{"detail"}``) or
    Ollama (``{"error": "..."}``) error body."""
    try:
        document = loads(body)
    except ValueError:
        return None
    if not isinstance(document, Mapping):
        return None
    error = document.get("error")
    if isinstance(error, Mapping) and isinstance(error.get("message"), str):
        return error["message"]
    if isinstance(error, str):
        return error
    detail = document.get("detail")
    if isinstance(detail, str):
        return detail
    if detail is not None:
        return json.dumps(detail)[:500]
    return None


# --- streaming --------------------------------------------------------------------------


def _sse(name: str, payload: Mapping[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(payload) + b"\n\n"


@dataclass
class StreamTranslator:
    """OpenAI SSE chunks in, the Messages API's SSE events out, incrementally.

    ``feed`` takes raw bytes (any boundaries) and returns the events they complete;
    ``finish`` closes the message when the upstream ends (``data: [DONE]`` or EOF).
    Without usage in the stream (a server that ignores ``stream_options``), output tokens are
    the number of content deltas (servers send one token per chunk) and input tokens the
    router's estimate, ``estimated_input``: docs/router.md says so.
    """

    model: str
    estimated_input: int = 0
    stop_sequences: Sequence[str] = ()
    _buffer: bytes = b""
    _started: bool = False
    _done: bool = False
    _open: int | None = None  # index of the open content block
    _blocks: int = 0
    _tool_blocks: dict[int, int] = field(default_factory=dict)  # tool call index -> block
    _stop: tuple[str, str | None] | None = None
    _usage: Any = None
    _deltas: int = 0

    def feed(self, chunk: bytes) -> bytes:
        buffer = (self._buffer + chunk).replace(b"\r\n", b"\n")
        out: list[bytes] = []
        while (end := buffer.find(b"\n\n")) >= 0:
            block, buffer = buffer[:end], buffer[end + 2 :]
            data = b"".join(
                line[5:].lstrip() for line in block.split(b"\n") if line.startswith(b"data:")
            )
            if not data:
                continue
            if data.strip() == b"[DONE]":
                out.append(self.finish())
                continue
            out.append(self._chunk(data))
        self._buffer = buffer
        return b"".join(out)

    def finish(self) -> bytes:
        """The closing events (once); an upstream that stopped without a finish reason ends
        as ``end_turn``."""
        if self._done:
            return b""
        self._done = True
        out = [self._start(None)]
        out.append(self._close_block())
        stop_reason, stop_sequence = self._stop or ("end_turn", None)
        usage = anthropic_usage(
            self._usage, estimated_input=self.estimated_input, counted_output=self._deltas
        )
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        out.append(_sse("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(_sse("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def _chunk(self, data: bytes) -> bytes:
        try:
            chunk = loads(data)
        except ValueError as exc:
            raise BadAnswer("a stream chunk is not JSON") from exc
        if not isinstance(chunk, Mapping):
            raise BadAnswer("a stream chunk is not a JSON object")
        if isinstance(chunk.get("error"), (Mapping, str)):
            raise StreamError(error_message(data) or "the tier's stream failed")
        out = [self._start(chunk.get("id"))]
        if isinstance(chunk.get("usage"), Mapping):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            out.append(self._choice(choice))
        return b"".join(out)

    def _start(self, chat_id: Any) -> bytes:
        if self._started:
            return b""
        self._started = True
        message = {
            "id": message_id(chat_id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": anthropic_usage(None, estimated_input=self.estimated_input),
        }
        return _sse("message_start", {"type": "message_start", "message": message})

    def _choice(self, choice: Mapping[str, Any]) -> bytes:
        out: list[bytes] = []
        delta = choice.get("delta") if isinstance(choice.get("delta"), Mapping) else {}
        text = delta.get("content")
        if isinstance(text, str) and text:
            self._deltas += 1
            out.append(self._text(text))
        for call in delta.get("tool_calls") or []:
            if isinstance(call, Mapping):
                self._deltas += 1
                out.append(self._tool_delta(call))
        if choice.get("finish_reason"):
            self._stop = _stop(choice, self.stop_sequences)
        return b"".join(out)

    def _text(self, text: str) -> bytes:
        out = []
        if self._open is None or self._open in self._tool_blocks.values():
            out.append(self._open_block({"type": "text", "text": ""}))
        delta = {"type": "text_delta", "text": text}
        out.append(_delta(self._open, delta))
        return b"".join(out)

    def _tool_delta(self, call: Mapping[str, Any]) -> bytes:
        out = []
        position = call.get("index", 0)
        function = call.get("function") if isinstance(call.get("function"), Mapping) else {}
        if position not in self._tool_blocks:
            block = {
                "type": "tool_use",
                "id": tool_use_id(call.get("id")),
                "name": function.get("name") or "",
                "input": {},
            }
            out.append(self._open_block(block))
            self._tool_blocks[position] = self._open  # type: ignore[assignment]
        arguments = function.get("arguments")
        if isinstance(arguments, Mapping):  # Ollama sends whole objects
            arguments = json.dumps(arguments)
        if isinstance(arguments, str) and arguments:
            index = self._tool_blocks[position]
            out.append(_delta(index, {"type": "input_json_delta", "partial_json": arguments}))
        return b"".join(out)

    def _open_block(self, block: Mapping[str, Any]) -> bytes:
        out = self._close_block()
        self._open = self._blocks
        self._blocks += 1
        start = {"type": "content_block_start", "index": self._open, "content_block": block}
        return out + _sse("content_block_start", start)

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open = self._open, None
        return _sse("content_block_stop", {"type": "content_block_stop", "index": index})


def _delta(index: int | None, delta: Mapping[str, Any]) -> bytes:
    payload = {"type": "content_block_delta", "index": index, "delta": delta}
    return _sse("content_block_delta", payload)


class StreamError(Exception):
    """An ``error`` object inside an OpenAI stream (vLLM sends one mid-stream)."""


# --- count_tokens -----------------------------------------------------------------------


def prompt_text(chat: Mapping[str, Any]) -> str:
    """The text a tokenizer endpoint counts for a Chat Completions request: every message's
    content and tool call, and the tool definitions, one per line."""
    lines: list[str] = []
    for message in chat.get("messages") or []:
        if message.get("content"):
            lines.append(str(message["content"]))
        for call in message.get("tool_calls") or []:
            lines.append(call["function"]["name"] + call["function"]["arguments"])
    for tool in chat.get("tools") or []:
        lines.append(json.dumps(tool["function"], ensure_ascii=False))
    return "\n".join(lines)
