"""Model profiles: how each emulated model behaves and which requests it accepts.

Behaviour (accuracy, speed, cache minimum) and the request rules that differ per model
(output and context limits, thinking modes, effort levels, sampling rules, the tool-use
system prompt) live here, so the validator and the engine read one record per model.

The built-in profiles cover the models whose rules are documented in Anthropic's docs and
in the official SDK's types (see docs/emulator.md for the pages and dates). A YAML or JSON
file can override any field of a built-in profile or add new models::

    models:
      claude-haiku-5-5:
        accuracy: 0.85
      my-model:
        aliases: [my-model-20260101]
        accuracy: 0.7
        min_cacheable_tokens: 2048
        thinking_types: [adaptive]
        effort_levels: [low, medium, high]

A model id resolves only by its name or one of its ``aliases`` (dated snapshot ids are
aliases): an unknown dated id is a 404, as the API answers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

THINKING_TYPES = ("enabled", "adaptive")
EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")
SAMPLING_RULES = ("any", "temperature_or_top_p", "fixed")


@dataclass(frozen=True)
class ModelProfile:
    """Behaviour and request rules of one emulated model.

    Latency: time to first token is ``ttft_seconds`` plus the uncached prompt tokens over
    ``prefill_tokens_per_second`` (cache reads are free, as they are much faster upstream);
    output is then produced at ``output_tokens_per_second``.

    Rules: ``thinking_types`` are the accepted ``thinking.type`` values besides
    ``disabled``; ``effort_levels`` the accepted ``output_config.effort`` values (empty: the
    parameter is rejected); ``sampling`` is ``any``, ``temperature_or_top_p`` (not both) or
    ``fixed`` (non-default temperature, top_p or top_k rejected); ``tool_prompt_tokens`` is
    the hidden tool-use system prompt for ``tool_choice`` auto/none and any/tool;
    ``context_window_stop``: a prompt that fits but leaves less than ``max_tokens`` of room
    stops with ``model_context_window_exceeded`` instead of a 400. ``thinking_always_on``,
    ``forced_tool_choice`` and ``bound_thinking``: the adaptive-only models' rules.
    """

    name: str
    accuracy: float = 0.9
    ttft_seconds: float = 0.5
    output_tokens_per_second: float = 80.0
    prefill_tokens_per_second: float = 20_000.0
    # Prefixes shorter than this are silently not cached, as the API does.
    min_cacheable_tokens: int = 1024
    max_output_tokens: int = 64_000
    context_window: int = 200_000
    aliases: tuple[str, ...] = ()
    thinking_types: tuple[str, ...] = ("enabled",)
    effort_levels: tuple[str, ...] = ()
    sampling: str = "temperature_or_top_p"
    tool_prompt_tokens: tuple[int, int] = (346, 313)
    context_window_stop: bool = True
    inference_geo: bool = True
    # The 5.5 line and Fable 5.1 ("What's new in Claude Opus 5.5" / "... Sonnet 5.5", read
    # 2026-12-06): thinking cannot be turned off (``thinking: disabled`` is a 400, like a
    # manual budget), forced tool use is a 400, and a thinking block another model wrote
    # is refused (blocks are tied to the model that produced them).
    thinking_always_on: bool = False
    forced_tool_choice: bool = True
    bound_thinking: bool = False
    # The emulator's own quality model for the thinking/effort levers (not Anthropic's):
    # labelled answers gain ``thinking_accuracy_gain`` with thinking on, and move by
    # ``effort_accuracy_step`` per effort level away from the default (high).
    thinking_accuracy_gain: float = 0.03
    effort_accuracy_step: float = 0.02
    # How hard items are shared between models (the copula's rho, docs/emulator.md) and the
    # share of wrong answers given with a right answer's confidence.
    difficulty_correlation: float = 0.6
    confident_wrong_rate: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 <= self.accuracy <= 1.0:
            raise ValueError(f"{self.name}: accuracy must be within [0, 1], got {self.accuracy}")
        if self.output_tokens_per_second <= 0 or self.prefill_tokens_per_second <= 0:
            raise ValueError(f"{self.name}: token rates must be positive")
        for name in ("difficulty_correlation", "confident_wrong_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{self.name}: {name} must be within [0, 1]")
        if self.ttft_seconds < 0:
            raise ValueError(f"{self.name}: ttft_seconds must not be negative")
        if self.min_cacheable_tokens < 0 or self.max_output_tokens < 1:
            raise ValueError(f"{self.name}: invalid token limits")
        _check_subset(self.name, "thinking_types", self.thinking_types, THINKING_TYPES)
        _check_subset(self.name, "effort_levels", self.effort_levels, EFFORT_LEVELS)
        if self.sampling not in SAMPLING_RULES:
            raise ValueError(f"{self.name}: sampling must be one of {list(SAMPLING_RULES)}")
        if len(self.tool_prompt_tokens) != 2 or min(self.tool_prompt_tokens) < 0:
            raise ValueError(f"{self.name}: tool_prompt_tokens must be two counts [auto, any]")


def _check_subset(name: str, label: str, values: Sequence[str], allowed: Sequence[str]) -> None:
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"{name}: {label} must be among {list(allowed)}, got {unknown}")


# Sources (read 2026-11-29): minimum cacheable lengths from "Prompt caching"; output limits,
# context windows and dated ids from "Models overview"; thinking modes from "Extended
# thinking" / "Adaptive thinking"; effort levels from "Effort"; the 4.5 models' "temperature
# or top_p, not both" from "Migrating to Claude 4.5"; Opus 4.7's fixed sampling and
# adaptive-only thinking from "Migrating to Claude Opus 4.7"; the tool-use system prompt
# (346 tokens for auto/none, 313 for any/tool on Claude 4.x) from "Tool use overview";
# ``inference_geo`` (Opus 4.6, Sonnet 4.6 and later; a 400 on the 4.5 models) from "Data
# residency".
# The 5.5 models (the current line-up; overview pages read 2026-11-29): 1M context, 128K
# output, adaptive thinking, effort low to max with xhigh, sampling parameters refused; no
# published cache minimum, so the price catalog's (and the router's) 1024.
# Accuracies and speeds are the emulator's own choice, picked so a cheap-first cascade with
# a confidence threshold has something to prove.
_CURRENT_RULES: dict[str, Any] = {
    "max_output_tokens": 128_000,
    "context_window": 1_000_000,
    "thinking_types": ("adaptive",),
    "effort_levels": ("low", "medium", "high", "xhigh", "max"),
    "sampling": "fixed",
    "min_cacheable_tokens": 1024,
    "thinking_always_on": True,
    "forced_tool_choice": False,
    "bound_thinking": True,
}
DEFAULT_PROFILES: Mapping[str, ModelProfile] = {
    p.name: p
    for p in (
        ModelProfile(
            name="claude-haiku-5-5",
            accuracy=0.82,
            ttft_seconds=0.3,
            output_tokens_per_second=160.0,
            prefill_tokens_per_second=40_000.0,
            **_CURRENT_RULES,
        ),
        ModelProfile(
            name="claude-sonnet-5-5",
            accuracy=0.95,
            ttft_seconds=0.6,
            output_tokens_per_second=75.0,
            prefill_tokens_per_second=20_000.0,
            **_CURRENT_RULES,
        ),
        ModelProfile(
            name="claude-opus-5-5",
            accuracy=0.97,
            ttft_seconds=1.0,
            output_tokens_per_second=50.0,
            prefill_tokens_per_second=12_000.0,
            **_CURRENT_RULES,
        ),
        ModelProfile(
            name="claude-fable-5-1",
            accuracy=0.98,
            ttft_seconds=1.5,
            output_tokens_per_second=40.0,
            prefill_tokens_per_second=10_000.0,
            **{**_CURRENT_RULES, "min_cacheable_tokens": 512},  # the price catalog's
        ),
        ModelProfile(
            name="claude-haiku-4-5",
            inference_geo=False,
            accuracy=0.82,
            ttft_seconds=0.35,
            output_tokens_per_second=150.0,
            prefill_tokens_per_second=40_000.0,
            min_cacheable_tokens=4096,
            aliases=("claude-haiku-4-5-20251001",),
        ),
        ModelProfile(
            name="claude-sonnet-4-5",
            inference_geo=False,
            accuracy=0.93,
            ttft_seconds=0.6,
            output_tokens_per_second=75.0,
            prefill_tokens_per_second=20_000.0,
            min_cacheable_tokens=1024,
            aliases=("claude-sonnet-4-5-20250929",),
        ),
        ModelProfile(
            name="claude-opus-4-5",
            inference_geo=False,
            accuracy=0.97,
            ttft_seconds=1.0,
            output_tokens_per_second=50.0,
            prefill_tokens_per_second=12_000.0,
            min_cacheable_tokens=4096,
            aliases=("claude-opus-4-5-20251101",),
            effort_levels=("low", "medium", "high"),
        ),
        ModelProfile(
            name="claude-sonnet-4-6",
            accuracy=0.94,
            ttft_seconds=0.6,
            output_tokens_per_second=75.0,
            prefill_tokens_per_second=20_000.0,
            min_cacheable_tokens=2048,
            thinking_types=("enabled", "adaptive"),
            effort_levels=("low", "medium", "high"),
        ),
        ModelProfile(
            name="claude-opus-4-6",
            accuracy=0.97,
            ttft_seconds=1.0,
            output_tokens_per_second=50.0,
            prefill_tokens_per_second=12_000.0,
            min_cacheable_tokens=4096,
            max_output_tokens=128_000,
            thinking_types=("enabled", "adaptive"),
            effort_levels=("low", "medium", "high", "max"),
        ),
        ModelProfile(
            name="claude-opus-4-7",
            accuracy=0.975,
            ttft_seconds=1.0,
            output_tokens_per_second=50.0,
            prefill_tokens_per_second=12_000.0,
            min_cacheable_tokens=4096,
            max_output_tokens=128_000,
            context_window=1_000_000,
            thinking_types=("adaptive",),
            effort_levels=("low", "medium", "high", "xhigh", "max"),
            sampling="fixed",
        ),
    )
}

_FIELD_NAMES = frozenset(f.name for f in fields(ModelProfile))


@dataclass(frozen=True)
class ProfileSet:
    """Profiles indexed for cheap lookup by name, alias or dated id."""

    profiles: Mapping[str, ModelProfile]
    _index: dict[str, ModelProfile] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for profile in self.profiles.values():
            self._index[profile.name] = profile
            for alias in profile.aliases:
                self._index[alias] = profile

    def resolve(self, model: str) -> ModelProfile | None:
        """The profile serving ``model`` (its name or an alias), else ``None`` (a 404).

        Dated ids are not guessed: ``claude-haiku-4-5-20990101`` is unknown unless a profile
        lists it, as the API serves only the snapshots it has.
        """
        return self._index.get(model)

    def names(self) -> list[str]:
        return sorted(self.profiles)


def merge_profiles(
    base: Mapping[str, ModelProfile], overrides: Mapping[str, Mapping[str, Any]]
) -> dict[str, ModelProfile]:
    """Apply per-model field overrides to ``base``; unknown model names are added."""
    merged = dict(base)
    for name, raw in overrides.items():
        if not isinstance(raw, Mapping):
            raise ValueError(f"profile {name!r}: expected a mapping of fields")
        unknown = set(raw) - _FIELD_NAMES
        if unknown:
            raise ValueError(f"profile {name!r}: unknown fields {sorted(unknown)}")
        values = {k: _coerce_field(k, v) for k, v in raw.items() if k != "name"}
        current = merged.get(name)
        merged[name] = replace(current, **values) if current else ModelProfile(name=name, **values)
    return merged


_LIST_FIELDS = frozenset({"aliases", "thinking_types", "effort_levels"})
_INT_FIELDS = frozenset({"min_cacheable_tokens", "max_output_tokens", "context_window"})


def _coerce_field(name: str, value: Any) -> Any:
    if name in _LIST_FIELDS:
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ValueError(f"{name} must be a list")
        return tuple(str(v) for v in value)
    if name == "tool_prompt_tokens":
        if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
            raise ValueError("tool_prompt_tokens must be a list of two counts [auto, any]")
        return (int(value[0]), int(value[1]))
    if name in _INT_FIELDS:
        return int(value)
    if name == "sampling":
        return str(value)
    if name in (
        "context_window_stop",
        "inference_geo",
        "thinking_always_on",
        "forced_tool_choice",
        "bound_thinking",
    ):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    return float(value)


def load_profiles(
    path: str | Path, base: Mapping[str, ModelProfile] = DEFAULT_PROFILES
) -> dict[str, ModelProfile]:
    """Read a YAML/JSON profile file (``{"models": {name: {field: value}}}``) over ``base``."""
    text = Path(path).read_text(encoding="utf-8")
    doc = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if not isinstance(doc, Mapping):
        raise ValueError(f"{path}: expected a mapping with a 'models' key")
    models = doc.get("models", {})
    if not isinstance(models, Mapping):
        raise ValueError(f"{path}: 'models' must map model names to fields")
    return merge_profiles(base, models)
