"""Model profiles: how each emulated model behaves (accuracy, speed, cache minimum, limits).

The built-in profiles cover the current line-up (Claude Haiku, Sonnet and Opus 5.5) and the
4.5 family before it. A YAML or JSON file can override any field of a built-in profile or
add new models::

    models:
      claude-haiku-5-5:
        accuracy: 0.85
      my-model:
        aliases: [my-model-latest]
        accuracy: 0.7
        min_cacheable_tokens: 2048
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

# A dated snapshot id is the alias plus "-YYYYMMDD" (e.g. claude-haiku-4-5-20251001).
_DATED_SUFFIX = re.compile(r"^(?P<base>.+)-\d{8}$")


@dataclass(frozen=True)
class ModelProfile:
    """Behaviour of one emulated model.

    Latency: time to first token is ``ttft_seconds`` plus the uncached prompt tokens over
    ``prefill_tokens_per_second`` (cache reads are free, as they are much faster upstream);
    output is then produced at ``output_tokens_per_second``.
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

    def __post_init__(self) -> None:
        if not 0.0 <= self.accuracy <= 1.0:
            raise ValueError(f"{self.name}: accuracy must be within [0, 1], got {self.accuracy}")
        if self.output_tokens_per_second <= 0 or self.prefill_tokens_per_second <= 0:
            raise ValueError(f"{self.name}: token rates must be positive")
        if self.ttft_seconds < 0:
            raise ValueError(f"{self.name}: ttft_seconds must not be negative")
        if self.min_cacheable_tokens < 0 or self.max_output_tokens < 1:
            raise ValueError(f"{self.name}: invalid token limits")


# Minimum cacheable lengths follow the price catalog (tierwise.pricing): 4096 tokens for
# Haiku 4.5 and Opus 4.5, 1024 for Sonnet 4.5; Anthropic publishes none for the 5.5 models,
# where the catalog (and so the router) assumes 1024. Accuracies are the emulator's own
# choice, picked so a cheap-first cascade with a confidence threshold has something to prove.
DEFAULT_PROFILES: Mapping[str, ModelProfile] = {
    p.name: p
    for p in (
        ModelProfile(
            name="claude-haiku-5-5",
            accuracy=0.82,
            ttft_seconds=0.3,
            output_tokens_per_second=160.0,
            prefill_tokens_per_second=40_000.0,
            min_cacheable_tokens=1024,
            max_output_tokens=128_000,
            context_window=1_000_000,
        ),
        ModelProfile(
            name="claude-sonnet-5-5",
            accuracy=0.93,
            ttft_seconds=0.6,
            output_tokens_per_second=75.0,
            prefill_tokens_per_second=20_000.0,
            min_cacheable_tokens=1024,
            max_output_tokens=128_000,
            context_window=1_000_000,
        ),
        ModelProfile(
            name="claude-opus-5-5",
            accuracy=0.97,
            ttft_seconds=1.0,
            output_tokens_per_second=50.0,
            prefill_tokens_per_second=12_000.0,
            min_cacheable_tokens=1024,
            max_output_tokens=128_000,
            context_window=1_000_000,
        ),
        ModelProfile(
            name="claude-haiku-4-5",
            accuracy=0.82,
            ttft_seconds=0.35,
            output_tokens_per_second=150.0,
            prefill_tokens_per_second=40_000.0,
            min_cacheable_tokens=4096,
            aliases=("claude-haiku-4-5-20251001",),
        ),
        ModelProfile(
            name="claude-sonnet-4-5",
            accuracy=0.93,
            ttft_seconds=0.6,
            output_tokens_per_second=75.0,
            prefill_tokens_per_second=20_000.0,
            min_cacheable_tokens=1024,
            aliases=("claude-sonnet-4-5-20250929",),
        ),
        ModelProfile(
            name="claude-opus-4-5",
            accuracy=0.97,
            ttft_seconds=1.0,
            output_tokens_per_second=50.0,
            prefill_tokens_per_second=12_000.0,
            min_cacheable_tokens=4096,
            aliases=("claude-opus-4-5-20251101",),
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
        """The profile serving ``model``: exact name or alias, else a dated id of one."""
        profile = self._index.get(model)
        if profile is not None:
            return profile
        match = _DATED_SUFFIX.match(model)
        if match is None:
            return None
        profile = self._index.get(match.group("base"))
        if profile is not None:
            # Remember the dated id so the regex runs once per distinct model string.
            self._index[model] = profile
        return profile

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


def _coerce_field(name: str, value: Any) -> Any:
    if name == "aliases":
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ValueError("aliases must be a list of model ids")
        return tuple(str(v) for v in value)
    if name in ("min_cacheable_tokens", "max_output_tokens", "context_window"):
        return int(value)
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
