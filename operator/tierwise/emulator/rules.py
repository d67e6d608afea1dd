"""Request rules that depend on the model: thinking, effort, sampling, limits, beta headers.

``validation.py`` checks what every model requires of a request's shape; this module checks
what the *model* accepts, from its profile, with the API's 400 wording where it is known.
Everything here answers what the real API answers: a request the API rejects is rejected,
so a router that turns a valid request into an invalid one fails its tests.

Sources, read 2026-11-29: "Extended thinking" (budget >= 1,024 and below ``max_tokens``;
thinking is incompatible with temperature/top_k changes and forced tool use; top_p may
only be 0.95-1), "Adaptive thinking", "Effort", "Migrating to Claude 4.5" (temperature or
top_p, not both), the Messages API reference and the official SDK's types (the known
``anthropic-beta`` values, ``thinking.display``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tierwise.emulator.errors import invalid
from tierwise.emulator.profiles import ModelProfile

MIN_THINKING_BUDGET = 1024
THINKING_DISPLAYS = ("summarized", "omitted")
FORCED_TOOL_CHOICES = ("any", "tool")

# The ``anthropic-beta`` values the API knows (the official SDK's AnthropicBetaParam, v2.14,
# plus the effort and fine-grained tool streaming betas that have since gone GA and are
# still accepted). Any other value is a 400, as upstream.
KNOWN_BETAS = frozenset(
    [
        "computer-use-2024-10-22",
        "computer-use-2025-01-24",
        "computer-use-2025-11-24",
        "output-128k-2025-02-19",
        "output-300k-2026-03-24",
        "mcp-client-2025-04-04",
        "mcp-client-2025-11-20",
        "mcp-client-2026-09-15",
        "dev-full-thinking-2025-05-14",
        "interleaved-thinking-2025-05-14",
        "code-execution-2025-05-22",
        "context-1m-2025-08-07",
        "context-management-2025-06-27",
        "model-context-window-exceeded-2025-08-26",
        "fast-mode-2026-02-01",
        "user-profiles-2026-03-24",
        "user-profiles-2026-08-18",
        "user-profiles-2026-09-04",
        "advisor-tool-2026-03-01",
        "managed-agents-2026-04-01",
        "dreaming-2026-04-21",
        "thinking-token-count-2026-05-13",
        "server-side-fallback-2026-06-01",
        "server-side-fallback-2026-07-01",
        "fallback-credit-2026-06-01",
        "fallback-credit-2026-07-01",
        "agent-memory-2026-07-22",
        "mid-conversation-tool-changes-2026-07-01",
        "compact-2026-01-12",
        "compact-2026-09-04",
        "mcp-tunnels-2026-06-22",
        "structured-outputs-2025-11-13",
        "task-budgets-2026-03-13",
        "thinking-display-updates-2026-08-18",
        "mid-conversation-output-config-2026-07-01",
        "thinking-binding-controls-2026-08-01",
        "mid-conversation-system-clear-at-2026-08-21",
        "inline-tools-2026-09-15",
        "ce-plugins-2026-09-01",
        "spend-limit-reads-2026-09-26",
        "telemetry-destinations-2026-08-11",
        "webhooks-2026-10-07",
        "message-threads-2026-08-12",
        "experimental-claude-tag-2026-10-21",
        "message-batches-2024-09-24",
        "prompt-caching-2024-07-31",
        "pdfs-2024-09-25",
        "token-counting-2024-11-01",
        "token-efficient-tools-2025-02-19",
        "files-api-2025-04-14",
        "extended-cache-ttl-2025-04-11",
        "skills-2025-10-02",
        "cache-diagnosis-2026-04-07",
        "effort-2025-11-24",
        "fine-grained-tool-streaming-2025-05-14",
    ]
)


@dataclass(frozen=True, slots=True)
class Thinking:
    """A request's thinking settings, once validated."""

    type: str  # "enabled" | "adaptive"
    budget_tokens: int | None
    display: str


def parse_betas(header: str | None) -> tuple[str, ...]:
    """The values of an ``anthropic-beta`` header (comma separated, several headers joined)."""
    if not header:
        return ()
    return tuple(v.strip() for v in header.split(",") if v.strip())


def check_betas(betas: Iterable[str]) -> None:
    unknown = [b for b in betas if b not in KNOWN_BETAS]
    if unknown:
        listed = ", ".join(f"`{b}`" for b in unknown)
        raise invalid(
            f"Unexpected value(s) {listed} for the `anthropic-beta` header. Please consult our "
            "documentation at docs.claude.com or try again without the header."
        )


def validate_for_model(body: Mapping[str, Any], profile: ModelProfile) -> Thinking | None:
    """Raise a 400 for what ``profile``'s model rejects; returns the thinking settings."""
    thinking = _thinking(body, profile)
    _adaptive_only(body, profile)
    _effort(body, profile)
    _inference_geo(body, profile)
    _sampling(body, profile, thinking)
    if thinking is not None:
        choice = body.get("tool_choice")
        if isinstance(choice, Mapping) and choice.get("type") in FORCED_TOOL_CHOICES:
            raise invalid(
                "Thinking may not be enabled when tool_choice forces tool use "
                f"(tool_choice.type: {choice.get('type')!r})."
            )
    return thinking


ADAPTIVE_ONLY_MESSAGE = (
    '"thinking.type.{kind}" is not supported for this model. Use "thinking.type.adaptive" '
    'and "output_config.effort" to control thinking behavior.'
)


def _adaptive_only(body: Mapping[str, Any], profile: ModelProfile) -> None:
    """The 5.5 line's rules: thinking stays on, no forced tool use, no foreign thinking."""
    raw = body.get("thinking")
    if profile.thinking_always_on and isinstance(raw, Mapping):
        kind = raw.get("type")
        if kind in ("disabled", "enabled"):
            raise invalid(ADAPTIVE_ONLY_MESSAGE.format(kind=kind))
    choice = body.get("tool_choice")
    if (
        not profile.forced_tool_choice
        and isinstance(choice, Mapping)
        and choice.get("type") in FORCED_TOOL_CHOICES
    ):
        raise invalid(
            f"tool_choice.type: {choice.get('type')!r} is not supported for this model "
            f"({profile.name}); use 'auto' or 'none'."
        )
    if profile.bound_thinking:
        _thinking_blocks_of_this_model(body.get("messages"), profile.name)


def _thinking_blocks_of_this_model(messages: Any, model: str) -> None:
    """Refuse a thinking block another model wrote (the emulator's signatures name it)."""
    if not isinstance(messages, list):
        return
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            if not isinstance(block, Mapping) or block.get("type") != "thinking":
                continue
            author = signature_model(block.get("signature"))
            if author is not None and author != model:
                raise invalid(
                    f"messages.{i}.content.{j}: The block is bound to a different model "
                    f"({author}) and cannot be read by {model}. Remove thinking blocks "
                    "that another model produced."
                )


SIGNATURE_PREFIX = "EmuSig."


def thinking_signature(model: str, summary: str) -> str:
    """The emulator's signature of a thinking block: it names the model that wrote it."""
    digest = hashlib.blake2b(f"{model}\n{summary}".encode(), digest_size=24).hexdigest()
    return f"{SIGNATURE_PREFIX}{model}.{digest}"


def signature_model(signature: Any) -> str | None:
    """The model named by an emulator signature; ``None`` for any other signature."""
    if not isinstance(signature, str) or not signature.startswith(SIGNATURE_PREFIX):
        return None
    model, _, digest = signature[len(SIGNATURE_PREFIX) :].rpartition(".")
    return model or None if digest else None


def _thinking(body: Mapping[str, Any], profile: ModelProfile) -> Thinking | None:
    raw = body.get("thinking")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise invalid("thinking: Input should be a valid dictionary")
    kind = raw.get("type")
    if kind == "disabled":
        return None
    if kind not in ("enabled", "adaptive"):
        raise invalid("thinking.type: Input should be 'enabled', 'disabled' or 'adaptive'")
    if kind not in profile.thinking_types:
        raise invalid(f"thinking.type: {kind!r} is not supported for this model ({profile.name})")
    display = raw.get("display") or "summarized"
    if display not in THINKING_DISPLAYS:
        raise invalid("thinking.display: Input should be 'summarized' or 'omitted'")
    if kind == "adaptive":
        if "budget_tokens" in raw:
            raise invalid("thinking.adaptive.budget_tokens: Extra inputs are not permitted")
        return Thinking("adaptive", None, display)
    budget = raw.get("budget_tokens")
    if budget is None:
        raise invalid("thinking.enabled.budget_tokens: Field required")
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise invalid("thinking.enabled.budget_tokens: Input should be a valid integer")
    if budget < MIN_THINKING_BUDGET:
        raise invalid(
            "thinking.enabled.budget_tokens: Input should be greater than or equal to "
            f"{MIN_THINKING_BUDGET}"
        )
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and budget >= max_tokens:
        raise invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")
    return Thinking("enabled", budget, display)


def _effort(body: Mapping[str, Any], profile: ModelProfile) -> None:
    config = body.get("output_config")
    if config is None:
        return
    if not isinstance(config, Mapping):
        raise invalid("output_config: Input should be a valid dictionary")
    effort = config.get("effort")
    if effort is None:
        return
    if effort not in ("low", "medium", "high", "xhigh", "max"):
        raise invalid(
            "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"
        )
    if not profile.effort_levels:
        raise invalid(f"output_config.effort: effort is not supported for model {profile.name}")
    if effort not in profile.effort_levels:
        raise invalid(
            f"output_config.effort: {effort!r} is not supported for model {profile.name}; "
            f"supported: {', '.join(profile.effort_levels)}"
        )


INFERENCE_GEOS = ("global", "us")


def _inference_geo(body: Mapping[str, Any], profile: ModelProfile) -> None:
    geo = body.get("inference_geo")
    if geo is None:
        return
    if not profile.inference_geo:
        raise invalid(f"inference_geo: is not supported for model {profile.name}")
    if geo not in INFERENCE_GEOS:
        raise invalid("inference_geo: Input should be 'global' or 'us'")


def effort_of(body: Mapping[str, Any]) -> str:
    """The request's effort level (``high``, the API's default, when not given)."""
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, Mapping) else None
    return effort if isinstance(effort, str) else "high"


def _sampling(body: Mapping[str, Any], profile: ModelProfile, thinking: Thinking | None) -> None:
    temperature, top_p, top_k = (body.get(k) for k in ("temperature", "top_p", "top_k"))
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise invalid("top_k: Input should be a non-negative integer")
    if profile.sampling == "fixed":
        for name, value, default in (("temperature", temperature, 1), ("top_p", top_p, 1)):
            if value is not None and value != default:
                raise invalid(f"{name}: only the default value is supported for {profile.name}")
        if top_k is not None:
            raise invalid(f"top_k: is not supported for {profile.name}")
    if profile.sampling == "temperature_or_top_p" and temperature is not None and top_p is not None:
        raise invalid(
            f"`temperature` and `top_p` cannot both be specified for this model ({profile.name}). "
            "Please use only one."
        )
    if thinking is None:
        return
    if temperature is not None and temperature != 1:
        raise invalid(
            "`temperature` may only be set to 1 when thinking is enabled. Please consult our "
            "documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
        )
    if top_k is not None:
        raise invalid("`top_k` may not be set when thinking is enabled.")
    if top_p is not None and not 0.95 <= top_p <= 1:
        raise invalid("`top_p` must be between 0.95 and 1 when thinking is enabled.")
