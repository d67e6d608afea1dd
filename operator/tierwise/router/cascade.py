"""Running a route's steps against the tiers: cost accounting, escalation, fallback.

``Exchange`` is one client request's state (route, body, running cost, escalations);
``Cascade`` runs steps for it. Nothing here knows about the client side of HTTP: the
server decides whether the answer goes out as JSON, a synthesized stream or a live one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tierwise.pricing import Prices, Usage, canonical_model, catalog_prices, cost_usd
from tierwise.router.escalation import escalation_reason, refusal_reason
from tierwise.router.jsonutil import dumps
from tierwise.router.metrics import RouterMetrics
from tierwise.router.request import build_step_request, estimate_prompt_tokens
from tierwise.router.runtime import Runtime
from tierwise.router.upstream import FALLBACK_NAMES, Reply, Stream, Upstream, UpstreamFailure
from tierwise.routerconfig import Route, RouterConfig, Step, Tier

MESSAGES_PATH = "/v1/messages"


def answer_cost(
    usage: Usage, tier: Tier, message: Mapping[str, Any] | None, *, batch: bool = False
) -> Decimal:
    """What one upstream answer cost, at the rates of the model(s) that actually served it.

    A server-side fallback can hand a request to another model inside one call: the answer
    then names the serving ``model`` and reports each attempt in ``usage.iterations``
    (each with its own tokens and, when it differs, its ``model``). Every iteration is
    priced at its model's rates (the tier's own prices for the tier's model, the price
    catalog's for another; an unknown model at the tier's prices); without iterations, an
    answer served by another model than the tier's is priced at that model's rates.
    """
    doc = message.get("usage") if isinstance(message, Mapping) else None
    served = message.get("model") if isinstance(message, Mapping) else None
    served = served if isinstance(served, str) else tier.model
    iterations = doc.get("iterations") if isinstance(doc, Mapping) else None
    if isinstance(iterations, list) and iterations:
        total = Decimal(0)
        for item in iterations:
            if isinstance(item, Mapping):
                model = item.get("model") if isinstance(item.get("model"), str) else served
                total += cost_usd(
                    Usage.from_anthropic(item), model_prices(model, tier), batch=batch
                )
        return total
    return cost_usd(usage, model_prices(served, tier), batch=batch)


def model_prices(model: str, tier: Tier) -> Prices:
    """``model``'s prices: the tier's for its own model (the operator may have set them),
    else the price catalog's, else (unknown to the catalog) the tier's."""
    if canonical_model(model) == canonical_model(tier.model):
        return tier.prices
    prices = catalog_prices(model)
    return prices if isinstance(prices, Prices) else tier.prices


def mixed_models(ex: Exchange) -> bool:
    """Whether the request's route (its steps and the fallback) uses more than one model."""
    return route_mixes_models(ex.runtime.config, ex.route)


def route_mixes_models(config: RouterConfig, route: Route) -> bool:
    """Whether a route's steps and the config's fallback use more than one model: then
    thinking blocks an earlier tier wrote are stripped before another model sees them
    (``request.adapt_to_model``), on the synchronous and the batch path alike."""
    names = [step.tier for step in route.steps]
    if config.fallback is not None:
        names.append(config.fallback.tier)
    return len({config.tiers[name].model for name in names}) > 1


@dataclass
class StepRecord:
    """One upstream answer of a request: which tier, what it used and cost, what followed."""

    tier: str
    usage: Usage
    cost: Decimal
    seconds: float
    fallback: bool = False
    escalation: str | None = None  # the signal's reason when this answer escalated


@dataclass
class Exchange:
    """One client request as it goes through the router."""

    runtime: Runtime
    route: Route
    body: dict[str, Any]
    forwarded: Mapping[str, str]
    started: float = field(default_factory=time.perf_counter)
    stream: bool = False
    escalations: int = 0
    cost: Decimal = Decimal(0)
    tier: str = ""
    cache_status: str = "bypass"
    cache_key: str | None = None
    outcome: str = "success"
    endpoint: str = "messages"
    batch: bool = False
    steps: list[StepRecord] = field(default_factory=list)
    trimmed_tokens: int = 0  # prompt tokens the route's input budget removed
    # A spend budget's degrade action served this request on a cheaper route than the
    # policy's: its answer is not production's as the policy defines it.
    degraded: bool = False
    # When set (``time.monotonic()``), the end of the first upstream attempt's time: work done
    # for the request before its first call (counting its tokens) comes out of that attempt.
    deadline: float | None = None

    def take_deadline(self) -> float | None:
        """The deadline for the request's first upstream call; later calls get their own."""
        deadline, self.deadline = self.deadline, None
        return deadline


@dataclass
class Answer:
    """A complete (buffered) answer of one step."""

    tier: Tier
    body: bytes
    message: dict[str, Any]
    usage: Usage
    request_id: str | None
    cost: Decimal
    logprobs: Any = None  # token log-probabilities, from a tier that returns them


class Cascade:
    def __init__(self, upstream: Upstream, metrics: RouterMetrics) -> None:
        self.upstream = upstream
        self.metrics = metrics

    async def run(self, ex: Exchange) -> Answer:
        """The whole route, buffered: the first accepted answer, else the last step's."""
        answer = await self.first_accepted(ex, ex.route.steps, last_is_final=True)
        assert answer is not None
        return answer

    async def first_accepted(
        self, ex: Exchange, steps: Sequence[Step], *, last_is_final: bool
    ) -> Answer | None:
        """Run ``steps`` buffered until one's answer is accepted.

        With ``last_is_final`` the last step's answer is returned whatever its signals say
        (the end of the cascade); without, ``None`` means every step escalated (the caller
        then runs the route's last step itself, e.g. streaming it live). A step with
        ``hedgeAfterSeconds`` that has a next step in ``steps`` may start it early (``_hedged``).
        """
        index = 0
        while index < len(steps):
            step = steps[index]
            if step.hedge_after_seconds is not None and index + 1 < len(steps):
                answer, index = await self._hedged(ex, steps, index, last_is_final)
                if answer is not None:
                    return answer
                continue
            answer = await self.call_step(ex, step)
            if self._accepted(ex, steps, index, answer, last_is_final):
                if refusal_reason(answer.message) is not None:
                    answer = await self._after_refusal(ex, step, answer)
                return answer
            index += 1
        return None

    async def _after_refusal(self, ex: Exchange, step: Step, answer: Answer) -> Answer:
        """The last step refused: ask the fallback tier once, when there is one with another
        model (a refusal is a reason to ask another model, like an outage); its answer,
        refusal or not, is final. Without one, the refusal goes to the client."""
        fallback = ex.runtime.config.fallback
        if fallback is None:
            return answer
        tier = ex.runtime.config.tiers[fallback.tier]
        if canonical_model(tier.model) == canonical_model(answer.tier.model):
            return answer
        started = time.perf_counter()
        reply = await self._fallback_call(ex, step, tier)
        return self._answer(ex, tier, reply, started, fallback=True)

    def _accepted(
        self, ex: Exchange, steps: Sequence[Step], index: int, answer: Answer, last_is_final: bool
    ) -> bool:
        """Whether ``answer`` (of ``steps[index]``) ends the cascade; counts an escalation."""
        if last_is_final and index == len(steps) - 1:
            return True
        if ex.body.get("max_tokens") == 0:
            # Pre-warming the prompt cache: no answer was asked for, so there is nothing for
            # a signal to judge; the first step (the one that serves first) is warmed.
            return True
        return self.accepts(ex, steps[index], answer.tier.name, answer.message, answer.logprobs)

    def accepts(
        self,
        ex: Exchange,
        step: Step,
        tier: str,
        message: Mapping[str, Any],
        logprobs: Any = None,
    ) -> bool:
        """Whether ``step``'s answer (from ``tier``) ends the cascade by its signals; else the
        escalation is counted on the request, that answer's step record and the metrics."""
        reason = escalation_reason(step.escalate_when, message, logprobs)
        if reason is None:
            return True
        ex.escalations += 1
        for record in reversed(ex.steps):  # this answer's record (hedged calls interleave)
            if record.tier == tier:
                record.escalation = reason
                break
        self.metrics.escalations.labels(ex.runtime.policy, ex.route.name, tier, reason).inc()
        return False

    async def _hedged(
        self, ex: Exchange, steps: Sequence[Step], index: int, last_is_final: bool
    ) -> tuple[Answer | None, int]:
        """Step ``index``, hedged by step ``index + 1`` once ``hedgeAfterSeconds`` pass.

        Returns the accepted answer (the first acceptable one; the other call is cancelled and
        its spend counted) and its step index, or ``(None, next index)`` when both escalated.
        """
        step = steps[index]
        primary = asyncio.create_task(self._cancellable_call(ex, step))
        done, _ = await asyncio.wait({primary}, timeout=float(step.hedge_after_seconds or 0))
        if primary in done:  # answered in time: no hedge
            answer = primary.result()
            accepted = self._accepted(ex, steps, index, answer, last_is_final)
            return (answer, index) if accepted else (None, index + 1)
        hedge = asyncio.create_task(self._cancellable_call(ex, steps[index + 1]))
        running = {primary: index, hedge: index + 1}
        escalated: set[int] = set()
        failure: BaseException | None = None
        try:
            while running:
                finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    at = running.pop(task)
                    if task.exception() is not None:
                        failure = failure or task.exception()
                        continue
                    answer = task.result()
                    if self._accepted(ex, steps, at, answer, last_is_final):
                        self._hedge_result(ex, step, "hedge" if at > index else "primary")
                        if at > index and index not in escalated:
                            ex.escalations += 1  # the answer comes from the next step
                        ex.tier = answer.tier.name
                        return answer, at
                    escalated.add(at)
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        if failure is not None:
            raise failure
        self._hedge_result(ex, step, "neither")
        return None, index + 2

    def _hedge_result(self, ex: Exchange, step: Step, result: str) -> None:
        self.metrics.child(
            self.metrics.hedges, ex.runtime.policy, ex.route.name, step.tier, result
        ).inc()

    async def _cancellable_call(self, ex: Exchange, step: Step) -> Answer:
        """``call_step``; when cancelled (the other call of a hedge won), count its spend.

        A cancelled call returns no usage, but the upstream has read the prompt: it is
        counted as the estimated prompt at the tier's input price (a lower bound: output
        generated before the cancel is not visible to the router).
        """
        try:
            return await self.call_step(ex, step)
        except asyncio.CancelledError:
            tier = ex.runtime.config.tiers[step.tier]
            body = build_step_request(
                ex.body, ex.route, step, tier, ex.runtime.config.cache.prompt_caching, stream=False
            )
            usage = Usage(input_tokens=estimate_prompt_tokens(body))
            cost = cost_usd(usage, tier.prices, batch=ex.batch)
            ex.cost += cost
            self.metrics.record_usage(ex.runtime.policy, ex.route.name, tier.name, usage, cost)
            self.metrics.child(
                self.metrics.hedge_cancelled_cost, ex.runtime.policy, ex.route.name, tier.name
            ).inc(float(cost))
            raise

    async def call_step(self, ex: Exchange, step: Step) -> Answer:
        """One buffered upstream call for ``step``, falling back when configured."""
        config = ex.runtime.config
        tier = config.tiers[step.tier]
        ex.tier = tier.name  # an error answer names the tier that failed
        started = time.perf_counter()
        fallback = False
        try:
            reply = await self.upstream.call(
                ex.runtime.clients[tier.name],
                MESSAGES_PATH,
                self._payload(ex, step, tier, False),
                ex.forwarded,
                config.retry,
                deadline=ex.take_deadline(),
                logprobs=step.wants_logprobs,
                schema=step.answer_schema,
            )
        except UpstreamFailure as failure:
            tier = self._fallback_tier(ex, failure)
            fallback = True
            reply = await self._fallback_call(ex, step, tier)
        return self._answer(ex, tier, reply, started, fallback=fallback)

    async def _fallback_call(self, ex: Exchange, step: Step, tier: Tier) -> Reply:
        """``step``'s request on the fallback ``tier``: one attempt, counted as a fallback."""
        self.metrics.fallbacks.labels(ex.runtime.policy, ex.route.name, tier.name).inc()
        return await self._after_fallback(
            self.upstream.call(
                ex.runtime.clients[tier.name],
                MESSAGES_PATH,
                self._payload(ex, step, tier, False),
                ex.forwarded,
                ex.runtime.config.retry,
                attempts=1,
                logprobs=step.wants_logprobs,
                schema=step.answer_schema,
            )
        )

    def _answer(
        self, ex: Exchange, tier: Tier, reply: Reply, started: float, *, fallback: bool
    ) -> Answer:
        """A buffered reply of ``tier`` as an ``Answer``: priced, counted, recorded."""
        message = reply.document
        usage = Usage.from_anthropic(message.get("usage") or {})
        seconds = time.perf_counter() - started
        cost = self.record_step(ex, tier, usage, seconds, fallback, message=message)
        return Answer(tier, reply.body, message, usage, reply.request_id, cost, reply.logprobs)

    def record_step(
        self,
        ex: Exchange,
        tier: Tier,
        usage: Usage,
        seconds: float,
        fallback: bool = False,
        *,
        message: Mapping[str, Any] | None = None,
    ) -> Decimal:
        """One upstream answer of the request: priced, counted, and kept in ``ex.steps``."""
        cost = self.account(ex, tier, usage, message=message)
        ex.steps.append(StepRecord(tier.name, usage, cost, seconds, fallback))
        return cost

    @staticmethod
    async def _after_fallback(call: Any) -> Any:
        """Await a fallback call: its failure comes after the router's retries of the step."""
        try:
            return await call
        except UpstreamFailure as failure:
            failure.retried = True
            raise

    async def open_live(self, ex: Exchange, step: Step) -> tuple[Stream, Tier]:
        """Open ``step``'s streaming call (retried, then falling back, before any byte)."""
        config = ex.runtime.config
        tier = config.tiers[step.tier]
        ex.tier = tier.name
        try:
            stream = await self.upstream.open_stream(
                ex.runtime.clients[tier.name],
                MESSAGES_PATH,
                self._payload(ex, step, tier, True),
                ex.forwarded,
                config.retry,
                deadline=ex.take_deadline(),
            )
        except UpstreamFailure as failure:
            tier = self._fallback_tier(ex, failure)
            self.metrics.fallbacks.labels(ex.runtime.policy, ex.route.name, tier.name).inc()
            stream = await self._after_fallback(
                self.upstream.open_stream(
                    ex.runtime.clients[tier.name],
                    MESSAGES_PATH,
                    self._payload(ex, step, tier, True),
                    ex.forwarded,
                    config.retry,
                    attempts=1,
                )
            )
        return stream, tier

    def account(
        self,
        ex: Exchange,
        tier: Tier,
        usage: Usage,
        *,
        message: Mapping[str, Any] | None = None,
    ) -> Decimal:
        """Add one upstream call's cost to the request and the metrics (priced per model
        that served it, see ``answer_cost``, when the answer ``message`` is known)."""
        cost = answer_cost(usage, tier, message, batch=ex.batch)
        ex.cost += cost
        ex.tier = tier.name
        self.metrics.record_usage(ex.runtime.policy, ex.route.name, tier.name, usage, cost)
        return cost

    def account_counterfactual(
        self, ex: Exchange, usage: Usage, tier: str | None = None, cost: Decimal | None = None
    ) -> None:
        """Price the final answer's usage on the route's counterfactual tier.

        ``tier``/``cost``: the answering tier and what it cost, reused when it is the
        counterfactual tier itself (a single-step route on its strongest tier).
        """
        name = ex.route.counterfactual_tier
        if name is None:
            return
        if cost is None or tier != name:
            cost = cost_usd(usage, ex.runtime.config.tiers[name].prices, batch=ex.batch)
        self.metrics.record_counterfactual(ex.runtime.policy, ex.route.name, name, cost)

    def _payload(self, ex: Exchange, step: Step, tier: Tier, stream: bool) -> bytes:
        config = ex.runtime.config
        body = build_step_request(
            ex.body,
            ex.route,
            step,
            tier,
            config.cache.prompt_caching,
            stream=stream,
            mixed_models=mixed_models(ex),
        )
        return dumps(body)

    def _fallback_tier(self, ex: Exchange, failure: UpstreamFailure) -> Tier:
        """The fallback tier for this failure, or re-raise it."""
        fallback = ex.runtime.config.fallback
        if fallback is None or FALLBACK_NAMES.get(failure.kind) not in fallback.on:
            raise failure
        ex.tier = fallback.tier
        return ex.runtime.config.tiers[fallback.tier]
