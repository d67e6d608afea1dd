"""The emulator's core, free of HTTP: resolve the model, account the prompt, answer.

The server (``server.py``) and the batch processor (``batches.py``) both call it, so a
batch item and an interactive request of the same body produce the same usage.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tierwise.emulator.answers import (
    Answer,
    Dataset,
    finish,
    labelled_answer,
    last_user_text,
    natural_text,
)
from tierwise.emulator.cache import CacheUsage, PromptCache
from tierwise.emulator.config import EmulatorConfig
from tierwise.emulator.errors import ApiError, invalid
from tierwise.emulator.faults import FaultPlan, ScriptStep, tool_use_block
from tierwise.emulator.profiles import ModelProfile, ProfileSet
from tierwise.emulator.tokens import PromptLayout, layout_prompt
from tierwise.emulator.wire import message_dict, new_id, usage_dict


@dataclass(frozen=True, slots=True)
class Completion:
    """One answered request: the message object plus what the latency model needs."""

    message: dict[str, Any]
    prompt: CacheUsage
    answer: Answer
    step: ScriptStep | None


class Engine:
    """Models, prompt cache, dataset and fault plan of one emulator."""

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.profiles = ProfileSet(config.profiles)
        self.dataset: Dataset | None = config.dataset
        self.cache = PromptCache(
            clock,
            lookback_blocks=config.cache_lookback_blocks,
            max_entries=config.max_cache_entries,
        )
        self.faults = FaultPlan()
        self._tool_ids = itertools.count(1)

    def resolve(self, model: str) -> ModelProfile:
        profile = self.profiles.resolve(model)
        if profile is None:
            raise ApiError(404, f"model: {model}")
        return profile

    def model_key(self, model: str) -> str:
        """The name scripts and faults are filed under: the profile's, or ``model`` as given."""
        profile = self.profiles.resolve(model)
        return profile.name if profile is not None else model

    def prepare(self, body: Mapping[str, Any], profile: ModelProfile) -> PromptLayout:
        """Checks that need the model: output cap and context window (400s)."""
        max_tokens = body["max_tokens"]
        if max_tokens > profile.max_output_tokens:
            raise invalid(
                f"max_tokens: {max_tokens} > {profile.max_output_tokens}, which is the maximum "
                f"allowed number of output tokens for {body['model']}"
            )
        layout = layout_prompt(body)
        if layout.total_tokens + max_tokens > profile.context_window:
            raise invalid(
                f"prompt is too long: {layout.total_tokens} tokens + {max_tokens} max_tokens "
                f"> {profile.context_window} maximum"
            )
        return layout

    def injected_error(self, profile: ModelProfile, step: ScriptStep | None) -> ApiError | None:
        """The scripted error of this step, else a random fault of the model's rates."""
        if step is not None:
            return step.api_error()
        return self.faults.random_fault(profile.name)

    def complete(
        self,
        body: Mapping[str, Any],
        profile: ModelProfile,
        layout: PromptLayout,
        step: ScriptStep | None,
        *,
        service_tier: str = "standard",
    ) -> Completion:
        prompt = self.cache.account(profile.name, layout, profile.min_cacheable_tokens)
        answer = self.answer(body, profile, step)
        overrides = step.usage if step is not None else None
        usage = usage_dict(
            prompt, answer.output_tokens, service_tier=service_tier, overrides=overrides
        )
        message = message_dict(new_id("msg"), body["model"], answer, usage)
        return Completion(message, prompt, answer, step)

    def answer(
        self, body: Mapping[str, Any], profile: ModelProfile, step: ScriptStep | None
    ) -> Answer:
        max_tokens = body["max_tokens"]
        stops = body.get("stop_sequences") or ()
        if step is not None and (step.text is not None or step.tool_use is not None):
            answer = finish(
                step.text or "",
                max_tokens=max_tokens,
                stop_sequences=stops,
                stop_reason=step.stop_reason,
                tool_use=tool_use_block(step.tool_use, next(self._tool_ids))
                if step.tool_use
                else None,
            )
        else:
            text, stop_reason = self._natural(body, profile)
            if step is not None and step.stop_reason is not None:
                stop_reason = step.stop_reason
            answer = finish(
                text, max_tokens=max_tokens, stop_sequences=stops, stop_reason=stop_reason
            )
        if step is not None and step.output_tokens is not None:
            answer = Answer(
                answer.content, answer.stop_reason, answer.stop_sequence, step.output_tokens
            )
        return answer

    def _natural(self, body: Mapping[str, Any], profile: ModelProfile) -> tuple[str, str | None]:
        question = last_user_text(body["messages"])
        dataset = self.dataset
        if dataset is not None:
            item = dataset.find(question)
            if item is not None:
                labelled = labelled_answer(
                    item,
                    dataset.labels,
                    model=profile.name,
                    accuracy=profile.accuracy,
                    seed=self.config.seed,
                    calibration=self.config.calibration,
                )
                return labelled.text(), None
        return natural_text(profile.name, question)
