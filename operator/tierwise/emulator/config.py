"""Configuration of an emulator instance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tierwise.emulator.answers import Dataset
from tierwise.emulator.profiles import DEFAULT_PROFILES, ModelProfile, load_profiles
from tierwise.emulator.tasks import Calibration


@dataclass(frozen=True)
class RateLimits:
    """Per-model limits reported in ``anthropic-ratelimit-*`` headers (per minute).

    They are enforced (429 with ``retry-after``) only with
    ``EmulatorConfig.enforce_rate_limits``; benchmarks push far more than these.
    """

    requests_per_minute: int = 4_000
    input_tokens_per_minute: int = 2_000_000
    output_tokens_per_minute: int = 400_000


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything an ``Emulator`` needs; all fields have test-friendly defaults.

    ``api_keys``: accepted ``x-api-key`` values; ``None`` accepts any non-empty key.
    ``latency_scale`` multiplies every profile delay (``zero_latency`` forces 0).
    ``stream_chunk_tokens``: tokens per ``text_delta`` event.
    ``batch_processing_seconds``: how long a message batch stays ``in_progress`` (its items
    land evenly over that time; over 24 hours, the rest expire).
    ``batch_canceling_seconds``: how long a canceled batch stays ``canceling``.
    """

    profiles: Mapping[str, ModelProfile] = field(default_factory=lambda: dict(DEFAULT_PROFILES))
    dataset: Dataset | None = None
    seed: int = 0
    zero_latency: bool = False
    latency_scale: float = 1.0
    api_keys: frozenset[str] | None = None
    require_anthropic_version: bool = True
    record_requests: bool = True
    max_recorded_requests: int = 10_000
    rate_limits: RateLimits = field(default_factory=RateLimits)
    enforce_rate_limits: bool = False
    stream_chunk_tokens: int = 4
    calibration: Calibration = field(default_factory=Calibration)
    cache_lookback_blocks: int = 20
    max_cache_entries: int = 100_000
    batch_processing_seconds: float = 0.0
    batch_canceling_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.latency_scale < 0:
            raise ValueError("latency_scale must not be negative")
        if self.stream_chunk_tokens < 1:
            raise ValueError("stream_chunk_tokens must be at least 1")
        if not self.profiles:
            raise ValueError("at least one model profile is required")

    @property
    def effective_latency_scale(self) -> float:
        return 0.0 if self.zero_latency else self.latency_scale

    @classmethod
    def from_files(
        cls,
        *,
        profiles: str | Path | None = None,
        dataset: str | Path | None = None,
        **options: object,
    ) -> EmulatorConfig:
        """A config with profiles (YAML/JSON, over the built-ins) and a JSONL dataset."""
        loaded = load_profiles(profiles) if profiles else dict(DEFAULT_PROFILES)
        data = Dataset.from_jsonl(dataset) if dataset else None
        return cls(profiles=loaded, dataset=data, **options)  # type: ignore[arg-type]
