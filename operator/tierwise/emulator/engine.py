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
    filler,
    finish,
    last_user_text,
    natural_text,
)
from tierwise.emulator.cache import CacheUsage, PromptCache, VisibleAt
from tierwise.emulator.config import EmulatorConfig
from tierwise.emulator.errors import ApiError, invalid
from tierwise.emulator.faults import FaultPlan, ScriptStep, tool_use_block
from tierwise.emulator.profiles import ModelProfile, ProfileSet
from tierwise.emulator.rules import Thinking, effort_of, thinking_signature, validate_for_model
from tierwise.emulator.tasks import Behaviour, answer_item, judge_parts, judge_verdict
from tierwise.emulator.tokens import PromptLayout, layout_prompt, tool_prompt_tokens
from tierwise.emulator.wire import message_dict, new_id, usage_dict

# Tokens an adaptive-thinking request thinks at each effort level (the emulator's choice;
# a script step's ``thinking_tokens`` overrides it). Manual thinking thinks its whole budget:
# the pessimistic reading of "Claude may not use the entire budget".
ADAPTIVE_THINKING_TOKENS = {"low": 256, "medium": 1024, "high": 4096, "xhigh": 8192, "max": 16384}
# The visible summary of a thinking block is at most this long; the rest is billed unseen.
THINKING_SUMMARY_TOKENS = 64


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request checked against its model: prompt layout and thinking settings."""

    layout: PromptLayout
    thinking: Thinking | None
    output_room: int  # tokens the answer may use: max_tokens, or less when the window is full
    limit_reason: str  # the stop reason when the answer hits output_room


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
        self.clock = clock
        self.cache = PromptCache(
            clock,
            lookback_blocks=config.cache_lookback_blocks,
            max_entries=config.max_cache_entries,
        )
        self.faults = FaultPlan()
        self._tool_ids = itertools.count(1)
        self.latency_scale = config.effective_latency_scale
        # Requests answered while a dataset is loaded: recognised as an item (or a judge
        # request about one), and not recognised (echoed, so they grade as wrong).
        self.recognised = 0
        self.unrecognised = 0
        self.unanswerable = 0  # recognised, but the item's task could not be followed

    def resolve(self, model: str) -> ModelProfile:
        profile = self.profiles.resolve(model)
        if profile is None:
            raise ApiError(404, f"model: {model}")
        return profile

    def model_key(self, model: str) -> str:
        """The name scripts and faults are filed under: the profile's, or ``model`` as given."""
        profile = self.profiles.resolve(model)
        return profile.name if profile is not None else model

    def prepare(self, body: Mapping[str, Any], profile: ModelProfile) -> Prepared:
        """Checks that need the model: its rules, output cap and context window (400s)."""
        max_tokens = body["max_tokens"]
        if max_tokens > profile.max_output_tokens:
            raise invalid(
                f"max_tokens: {max_tokens} > {profile.max_output_tokens}, which is the maximum "
                f"allowed number of output tokens for {body['model']}"
            )
        thinking = validate_for_model(body, profile)
        layout = layout_prompt(body, tool_prompt_tokens(body, profile.tool_prompt_tokens))
        window = profile.context_window
        if layout.total_tokens > window or (
            not profile.context_window_stop and layout.total_tokens + max_tokens > window
        ):
            raise invalid(
                f"prompt is too long: {layout.total_tokens} tokens + {max_tokens} max_tokens "
                f"> {window} maximum"
            )
        room = window - layout.total_tokens
        if max_tokens <= room:
            return Prepared(layout, thinking, max_tokens, "max_tokens")
        return Prepared(layout, thinking, room, "model_context_window_exceeded")

    def injected_error(self, profile: ModelProfile, step: ScriptStep | None) -> ApiError | None:
        """The scripted error of this step, else a random fault of the model's rates."""
        if step is not None:
            return step.api_error()
        return self.faults.random_fault(profile.name)

    def complete(
        self,
        body: Mapping[str, Any],
        profile: ModelProfile,
        prepared: Prepared,
        step: ScriptStep | None,
        *,
        service_tier: str = "standard",
        visible_at: VisibleAt = None,
    ) -> Completion:
        """Answer a prepared request.

        ``visible_at``: when the prompt-cache entries it writes become readable; by default
        when its first token would be sent (the latency model), as the API makes an entry
        readable only once the writing response has begun.
        """
        if visible_at is None:
            start = self.clock()

            def at_first_token(usage: CacheUsage) -> float:
                return start + self.first_token_seconds(profile, usage, step)

            visible_at = at_first_token
        prompt = self.cache.account(
            profile.name, prepared.layout, profile.min_cacheable_tokens, visible_at=visible_at
        )
        answer = self.answer(body, profile, prepared, step)
        overrides = step.usage if step is not None else None
        usage = usage_dict(
            prompt,
            answer,
            service_tier=service_tier,
            inference_geo=_inference_geo(body) if profile.inference_geo else None,
            server_tools=_has_server_tools(body),
            overrides=overrides,
        )
        message = message_dict(new_id("msg"), body["model"], answer, usage)
        return Completion(message, prompt, answer, step)

    def first_token_seconds(
        self, profile: ModelProfile, prompt: CacheUsage, step: ScriptStep | None
    ) -> float:
        """Seconds before the first token: TTFT plus prefill of the uncached prompt."""
        extra = (
            float(step.first_token_delay) if step is not None and step.first_token_delay else 0.0
        )
        if self.latency_scale == 0:
            return extra
        uncached = prompt.input_tokens + prompt.cache_creation_input_tokens
        prefill = uncached / profile.prefill_tokens_per_second
        return (profile.ttft_seconds + prefill) * self.latency_scale + extra

    def answer(
        self,
        body: Mapping[str, Any],
        profile: ModelProfile,
        prepared: Prepared,
        step: ScriptStep | None,
    ) -> Answer:
        room, limit = prepared.output_room, prepared.limit_reason
        if body["max_tokens"] == 0:
            # Cache pre-warming: the prompt is processed (and cached), nothing is generated.
            return Answer((), "max_tokens", None, 0)
        thinking = self._thinking_block(body, prepared.thinking, room, step)
        thought = thinking[1] if thinking else 0
        text_room = room - thought
        if thinking is not None and text_room <= 0:
            return Answer((thinking[0],), limit, None, room, thinking_tokens=room)
        answer = self._text_answer(body, profile, text_room, limit, step, prepared.thinking)
        details = step.stop_details if step is not None and step.stop_details else None
        if details is None and answer.stop_reason == "refusal":
            details = {"type": "refusal", "category": None, "explanation": None}
        content = ((thinking[0],) if thinking else ()) + answer.content
        return Answer(
            content,
            answer.stop_reason,
            answer.stop_sequence,
            answer.output_tokens + thought,
            thinking_tokens=thought,
            stop_details=dict(details) if details else None,
        )

    def _thinking_block(
        self,
        body: Mapping[str, Any],
        thinking: Thinking | None,
        room: int,
        step: ScriptStep | None,
    ) -> tuple[dict[str, Any], int] | None:
        """The thinking block and the tokens it cost (billed in full), if the request thinks."""
        if thinking is None:
            return None
        if step is not None and step.thinking_tokens is not None:
            planned = int(step.thinking_tokens)
        elif thinking.budget_tokens is not None:
            planned = thinking.budget_tokens
        else:
            planned = ADAPTIVE_THINKING_TOKENS[effort_of(body)]
        used = min(planned, room)
        summary = (
            "" if thinking.display == "omitted" else filler(min(used, THINKING_SUMMARY_TOKENS))
        )
        signature = thinking_signature(self.model_key(str(body["model"])), summary)
        return {"type": "thinking", "thinking": summary, "signature": signature}, used

    def _text_answer(
        self,
        body: Mapping[str, Any],
        profile: ModelProfile,
        room: int,
        limit: str,
        step: ScriptStep | None,
        thinking: Thinking | None,
    ) -> Answer:
        stops = body.get("stop_sequences") or ()
        if step is not None and (step.text is not None or step.tool_use is not None):
            answer = finish(
                step.text or "",
                max_tokens=room,
                stop_sequences=stops,
                stop_reason=step.stop_reason,
                tool_use=tool_use_block(step.tool_use, next(self._tool_ids))
                if step.tool_use
                else None,
                limit_reason=limit,
            )
        else:
            text, stop_reason = self._natural(body, profile, thinking)
            if step is not None and step.stop_reason is not None:
                stop_reason = step.stop_reason
            answer = finish(
                text,
                max_tokens=room,
                stop_sequences=stops,
                stop_reason=stop_reason,
                limit_reason=limit,
            )
        if step is not None and step.output_tokens is not None:
            answer = Answer(
                answer.content, answer.stop_reason, answer.stop_sequence, step.output_tokens
            )
        return answer

    def _natural(
        self, body: Mapping[str, Any], profile: ModelProfile, thinking: Thinking | None
    ) -> tuple[str, str | None]:
        question = last_user_text(body["messages"])
        dataset = self.dataset
        if dataset is None:
            return natural_text(profile.name, question)
        behaviour = self.behaviour(profile, effort_of(body), thinking is not None)
        judged = judge_parts(question)
        if judged is not None:
            item = dataset.find(judged[0])
            if item is not None:
                self.recognised += 1
                verdict = judge_verdict(
                    item, judged[1], model=profile.name, seed=self.config.seed, behaviour=behaviour
                )
                return verdict, None
        item = dataset.find(question)
        if item is None:
            self.unrecognised += 1
            return natural_text(profile.name, question, unrecognised=True)
        self.recognised += 1
        answer = answer_item(
            item,
            item.task.labels or dataset.labels,
            model=profile.name,
            seed=self.config.seed,
            behaviour=behaviour,
        )
        if answer.problem is not None:
            self.unanswerable += 1
        return answer.text, None

    def behaviour(self, profile: ModelProfile, effort: str, thinking: bool) -> Behaviour:
        """How ``profile`` answers dataset items at this effort, with or without thinking."""
        return Behaviour(
            accuracy=effective_accuracy(profile, effort, thinking),
            difficulty_correlation=profile.difficulty_correlation,
            confident_wrong_rate=profile.confident_wrong_rate,
            calibration=self.config.calibration,
        )

    def dataset_stats(self) -> dict[str, int]:
        return {
            "recognised": self.recognised,
            "unrecognised": self.unrecognised,
            "unanswerable": self.unanswerable,
        }


# Effort levels as steps from the default (high): each step moves accuracy by the profile's
# ``effort_accuracy_step``. The emulator's own choice, so that cheaper settings cost some
# quality and an eval has a trade-off to measure.
EFFORT_STEPS = {"low": -2.0, "medium": -1.0, "high": 0.0, "xhigh": 0.5, "max": 1.0}


def effective_accuracy(profile: ModelProfile, effort: str, thinking: bool) -> float:
    """The profile's accuracy at an effort level, with or without thinking (within [0, 1]).

    The same draw decides every setting, so raising accuracy only ever turns wrong answers
    right: a labelled item answered right at low effort is right at high effort too.
    """
    accuracy = profile.accuracy + EFFORT_STEPS.get(effort, 0.0) * profile.effort_accuracy_step
    if thinking:
        accuracy += profile.thinking_accuracy_gain
    return min(1.0, max(0.0, accuracy))


def _inference_geo(body: Mapping[str, Any]) -> str:
    geo = body.get("inference_geo")
    return geo if isinstance(geo, str) and geo else "global"


def _has_server_tools(body: Mapping[str, Any]) -> bool:
    """Server tools (web search, web fetch, ...) are typed tools run by the API itself."""
    tools = body.get("tools") or ()
    return any(
        isinstance(t, Mapping)
        and isinstance(t.get("type"), str)
        and t["type"].startswith(("web_search", "web_fetch"))
        for t in tools
    )
