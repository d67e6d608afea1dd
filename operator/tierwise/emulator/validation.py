"""Request validation with the Messages API's rules and error wording (400s).

Only what a router or client can plausibly get wrong is checked; unknown fields are
accepted, as the API accepts new parameters over time. Messages name the offending field
by its path (``messages.1.content.0.text``), as the API does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tierwise.emulator.errors import invalid

MAX_CACHE_BREAKPOINTS = 4
ROLES = ("user", "assistant")
TTLS = ("5m", "1h")


def validate_create(body: Any) -> None:
    """Validate a ``POST /v1/messages`` body (raises ``ApiError``)."""
    _require_object(body)
    _validate_model(body)
    _validate_max_tokens(body.get("max_tokens"))
    _validate_prompt(body)
    _validate_sampling(body)


def validate_count(body: Any) -> None:
    """Validate a ``POST /v1/messages/count_tokens`` body (no ``max_tokens`` there)."""
    _require_object(body)
    _validate_model(body)
    _validate_prompt(body)


def _require_object(body: Any) -> None:
    if not isinstance(body, dict):
        raise invalid("Request body must be a JSON object")


def _validate_model(body: Mapping[str, Any]) -> None:
    model = body.get("model")
    if model is None:
        raise invalid("model: Field required")
    if not isinstance(model, str) or not model:
        raise invalid("model: Input should be a valid string")


def _validate_max_tokens(value: Any) -> None:
    if value is None:
        raise invalid("max_tokens: Field required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid("max_tokens: Input should be a valid integer")
    if value < 0:
        # 0 is valid: it pre-warms the prompt cache without generating anything.
        raise invalid("max_tokens: Input should be greater than or equal to 0")


def _validate_prompt(body: Mapping[str, Any]) -> None:
    breakpoints: list[tuple[str, str]] = []
    _validate_tools(body.get("tools"), breakpoints)
    _validate_system(body.get("system"), breakpoints)
    _validate_messages(body.get("messages"), breakpoints)
    automatic = body.get("cache_control")
    if automatic is not None:
        breakpoints.append(("cache_control", _cache_ttl(automatic, "cache_control")))
    _validate_breakpoints(breakpoints)


def _validate_tools(tools: Any, breakpoints: list[tuple[str, str]]) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise invalid("tools: Input should be a valid list")
    for i, tool in enumerate(tools):
        path = f"tools.{i}"
        if not isinstance(tool, dict):
            raise invalid(f"{path}: Input should be a valid dictionary")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise invalid(f"{path}.name: Field required")
        if "type" not in tool and not isinstance(tool.get("input_schema"), dict):
            raise invalid(f"{path}.input_schema: Field required")
        _collect_cache_control(tool, path, breakpoints)


def _validate_system(system: Any, breakpoints: list[tuple[str, str]]) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise invalid("system: Input should be a valid string or a list of text blocks")
    for i, block in enumerate(system):
        path = f"system.{i}"
        if not isinstance(block, dict) or block.get("type") != "text":
            raise invalid(f"{path}: system blocks must be text blocks")
        _validate_text_block(block, path)
        _collect_cache_control(block, path, breakpoints)


def _validate_messages(messages: Any, breakpoints: list[tuple[str, str]]) -> None:
    if messages is None:
        raise invalid("messages: Field required")
    if not isinstance(messages, list):
        raise invalid("messages: Input should be a valid list")
    if not messages:
        raise invalid("messages: at least one message is required")
    for i, message in enumerate(messages):
        _validate_message(message, f"messages.{i}", breakpoints)
    if messages[0]["role"] != "user":
        raise invalid('messages: first message must use the "user" role')
    last = messages[-1]
    if last["role"] == "assistant" and _final_text(last["content"]).endswith((" ", "\n", "\t")):
        raise invalid("messages: final assistant content cannot end with trailing whitespace")


def _validate_message(message: Any, path: str, breakpoints: list[tuple[str, str]]) -> None:
    if not isinstance(message, dict):
        raise invalid(f"{path}: Input should be a valid dictionary")
    role = message.get("role")
    if role is None:
        raise invalid(f"{path}.role: Field required")
    if role not in ROLES:
        raise invalid(f"{path}.role: Input should be 'user' or 'assistant'")
    content = message.get("content")
    if content is None:
        raise invalid(f"{path}.content: Field required")
    if isinstance(content, str):
        if not content:
            raise invalid("messages: text content blocks must be non-empty")
        return
    if not isinstance(content, list):
        raise invalid(f"{path}.content: Input should be a valid string or list")
    if not content and role == "user":
        raise invalid(f"{path}: user messages must have non-empty content")
    for j, block in enumerate(content):
        block_path = f"{path}.content.{j}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise invalid(f"{block_path}: content blocks must be objects with a 'type'")
        if block["type"] == "text":
            _validate_text_block(block, block_path)
        _collect_cache_control(block, block_path, breakpoints)


def _validate_text_block(block: Mapping[str, Any], path: str) -> None:
    text = block.get("text")
    if not isinstance(text, str):
        raise invalid(f"{path}.text: Field required")
    if not text:
        raise invalid("messages: text content blocks must be non-empty")


def _final_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if content and isinstance(content[-1], dict) and content[-1].get("type") == "text":
        return str(content[-1].get("text", ""))
    return ""


def _collect_cache_control(
    block: Mapping[str, Any], path: str, breakpoints: list[tuple[str, str]]
) -> None:
    marker = block.get("cache_control")
    if marker is not None:
        breakpoints.append((f"{path}.cache_control", _cache_ttl(marker, f"{path}.cache_control")))


def _cache_ttl(marker: Any, path: str) -> str:
    if not isinstance(marker, dict) or marker.get("type") != "ephemeral":
        raise invalid(f"{path}.type: Input should be 'ephemeral'")
    ttl = marker.get("ttl", "5m")
    if ttl not in TTLS:
        raise invalid(f"{path}.ttl: Input should be '5m' or '1h'")
    return str(ttl)


def _validate_breakpoints(breakpoints: list[tuple[str, str]]) -> None:
    if len(breakpoints) > MAX_CACHE_BREAKPOINTS:
        raise invalid(
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(breakpoints)}."
        )
    seen_5m = False
    for path, ttl in breakpoints:
        if ttl == "5m":
            seen_5m = True
        elif seen_5m:
            raise invalid(
                f"{path}.ttl: a ttl='1h' cache_control block must not come after a ttl='5m' "
                "cache_control block. Note that blocks are processed in the following order: "
                "`tools`, `system`, `messages`."
            )


def _validate_sampling(body: Mapping[str, Any]) -> None:
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid(f"{name}: Input should be a valid number")
        if value < 0.0:
            raise invalid(f"{name}: Input should be greater than or equal to 0")
        if value > 1.0:
            raise invalid(f"{name}: Input should be less than or equal to 1")
    stops = body.get("stop_sequences")
    if stops is not None and (
        not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops)
    ):
        raise invalid("stop_sequences: Input should be a list of non-empty strings")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid("stream: Input should be a valid boolean")
