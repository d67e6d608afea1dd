"""An Anthropic-compatible model emulator for tests, demos and benchmarks.

It speaks the Messages API (JSON and SSE streaming, ``count_tokens``, message batches),
accounts prompt caching the way the API bills it, answers labelled datasets with each
model's configured accuracy, and fails on demand. See ``docs/emulator.md``.

    from tierwise.emulator import EmulatorConfig, running_emulator

    async with running_emulator(EmulatorConfig(zero_latency=True)) as emu:
        client = anthropic.AsyncAnthropic(base_url=emu.base_url, api_key="test")
"""

from tierwise.emulator.answers import Dataset
from tierwise.emulator.cache import CacheUsage, PromptCache
from tierwise.emulator.config import EmulatorConfig, RateLimits
from tierwise.emulator.errors import ApiError
from tierwise.emulator.faults import ScriptStep
from tierwise.emulator.profiles import DEFAULT_PROFILES, ModelProfile, load_profiles
from tierwise.emulator.recording import RecordedRequest
from tierwise.emulator.runner import EmulatorThread, running_emulator
from tierwise.emulator.server import Emulator
from tierwise.emulator.tasks import Behaviour, Calibration, DatasetItem, Task, answer_item
from tierwise.emulator.tokens import count_prompt_tokens, layout_prompt, text_tokens

__all__ = [
    "DEFAULT_PROFILES",
    "ApiError",
    "Behaviour",
    "CacheUsage",
    "Calibration",
    "Dataset",
    "DatasetItem",
    "Emulator",
    "EmulatorConfig",
    "EmulatorThread",
    "ModelProfile",
    "PromptCache",
    "RateLimits",
    "RecordedRequest",
    "ScriptStep",
    "Task",
    "answer_item",
    "count_prompt_tokens",
    "layout_prompt",
    "load_profiles",
    "running_emulator",
    "text_tokens",
]
