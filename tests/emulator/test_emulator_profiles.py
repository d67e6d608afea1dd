"""Model profiles, the latency model and rate-limit enforcement."""

from __future__ import annotations

import time
from pathlib import Path

import anthropic
import pytest
from emulator_helpers import API_KEY, HAIKU, SONNET, user

from tierwise.emulator import (
    DEFAULT_PROFILES,
    EmulatorConfig,
    EmulatorThread,
    ModelProfile,
    RateLimits,
    load_profiles,
)
from tierwise.emulator.profiles import ProfileSet
from tierwise.pricing import min_cacheable_tokens

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]


def test_builtin_profiles_have_documented_cache_minimums() -> None:
    assert DEFAULT_PROFILES["claude-haiku-4-5"].min_cacheable_tokens == 4096
    assert DEFAULT_PROFILES["claude-sonnet-5-5"].min_cacheable_tokens == 1024
    # The emulator's minimum is the catalog's, which is the router's.
    for name, profile in DEFAULT_PROFILES.items():
        assert profile.min_cacheable_tokens == min_cacheable_tokens(name), name
    accuracies = [
        DEFAULT_PROFILES[m].accuracy
        for m in ("claude-haiku-4-5", "claude-sonnet-5-5", "claude-opus-5-5")
    ]
    assert accuracies == sorted(accuracies)


def test_resolve_names_aliases_and_dated_ids() -> None:
    profiles = ProfileSet(DEFAULT_PROFILES)
    assert profiles.resolve("claude-haiku-4-5").name == "claude-haiku-4-5"
    assert profiles.resolve("claude-haiku-4-5-20251001").name == "claude-haiku-4-5"
    # Unknown snapshots are not guessed from the alias: the API answers 404 for them.
    assert profiles.resolve("claude-opus-4-5-20991231") is None
    assert profiles.resolve("claude-opus-4-5-preview") is None
    assert profiles.resolve("claude-opus-4") is None


def test_profile_file_overrides_and_adds(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(
        "models:\n"
        "  claude-haiku-4-5:\n    accuracy: 0.5\n"
        "  tiny-model:\n    aliases: [tiny-latest]\n    accuracy: 0.4\n    min_cacheable_tokens: 16\n"
    )
    profiles = load_profiles(path)
    assert profiles["claude-haiku-4-5"].accuracy == 0.5
    assert profiles["claude-haiku-4-5"].min_cacheable_tokens == 4096  # untouched field kept
    assert profiles["tiny-model"] == ModelProfile(
        name="tiny-model", accuracy=0.4, min_cacheable_tokens=16, aliases=("tiny-latest",)
    )
    json_path = tmp_path / "profiles.json"
    json_path.write_text('{"models": {"claude-opus-5-5": {"ttft_seconds": 0}}}')
    assert load_profiles(json_path)["claude-opus-5-5"].ttft_seconds == 0


def test_profile_file_errors_are_clear(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  claude-haiku-4-5:\n    accurcy: 0.5\n")
    with pytest.raises(ValueError, match="unknown fields"):
        load_profiles(path)
    path.write_text("models:\n  claude-haiku-4-5:\n    accuracy: 1.5\n")
    with pytest.raises(ValueError, match="accuracy"):
        load_profiles(path)


def test_latency_model_paces_responses_and_streams() -> None:
    slow = ModelProfile(name="slow-model", ttft_seconds=0.3, output_tokens_per_second=100.0)
    config = EmulatorConfig(profiles={"slow-model": slow})
    with EmulatorThread(config) as thread:
        client = anthropic.Anthropic(base_url=thread.base_url, api_key=API_KEY, max_retries=0)
        started = time.monotonic()
        message = client.messages.create(
            model="slow-model", max_tokens=100, messages=user("[[emulator:tokens=20]]")
        )
        elapsed = time.monotonic() - started
        assert message.usage.output_tokens == 20
        assert 0.3 + 0.2 <= elapsed < 3.0  # TTFT plus 20 tokens at 100 tokens/s
        started = time.monotonic()
        with client.messages.stream(
            model="slow-model", max_tokens=100, messages=user("[[emulator:tokens=20]]")
        ) as stream:
            first_text = next(iter(stream.text_stream))
            first_token_at = time.monotonic() - started
            rest = "".join(stream.text_stream)
        total = time.monotonic() - started
        assert first_text and rest
        assert 0.3 <= first_token_at < total
        assert total >= 0.5


def test_zero_latency_ignores_the_profile_but_not_scripted_delays() -> None:
    slow = ModelProfile(name="slow-model", ttft_seconds=2.0, output_tokens_per_second=1.0)
    with EmulatorThread(EmulatorConfig(profiles={"slow-model": slow}, zero_latency=True)) as thread:
        client = anthropic.Anthropic(base_url=thread.base_url, api_key=API_KEY, max_retries=0)
        started = time.monotonic()
        client.messages.create(model="slow-model", max_tokens=100, messages=user("q"))
        assert time.monotonic() - started < 1.0
        thread.script("slow-model", [{"first_token_delay": 0.3}])
        started = time.monotonic()
        client.messages.create(model="slow-model", max_tokens=100, messages=user("q"))
        assert time.monotonic() - started >= 0.3


def test_rate_limits_can_be_enforced() -> None:
    config = EmulatorConfig(
        zero_latency=True, enforce_rate_limits=True, rate_limits=RateLimits(requests_per_minute=2)
    )
    with EmulatorThread(config) as thread:
        client = anthropic.Anthropic(base_url=thread.base_url, api_key=API_KEY, max_retries=0)
        client.messages.create(model=HAIKU, max_tokens=10, messages=user("q"))
        raw = client.messages.with_raw_response.create(
            model=HAIKU, max_tokens=10, messages=user("q")
        )
        assert raw.headers["anthropic-ratelimit-requests-limit"] == "2"
        assert raw.headers["anthropic-ratelimit-requests-remaining"] == "0"
        with pytest.raises(anthropic.RateLimitError) as caught:
            client.messages.create(model=HAIKU, max_tokens=10, messages=user("q"))
        assert float(caught.value.response.headers["retry-after"]) >= 1
        # Limits are per model.
        assert client.messages.create(model=SONNET, max_tokens=10, messages=user("q")).content
