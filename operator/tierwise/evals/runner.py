"""Replay a plan's datasets through the candidate and baseline configs, grade, decide.

The candidate and the baseline answer every item concurrently (``plan.concurrency`` items
in flight per config), through ``CascadeEngine`` (the router's own cascade). Items still
running at the plan's timeout are recorded as errors, so a slow eval is inconclusive rather
than decided on the fast items only.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tierwise.evals.batch import BatchCascadeEngine
from tierwise.evals.dataset import Dataset, Item
from tierwise.evals.gate import Decision, Measured, combine, decide
from tierwise.evals.graders import GraderSpec, Verdict, grade
from tierwise.evals.outcome import Outcome
from tierwise.evals.plan import JUDGE_ROUTE, EvalPlan, RoutePlan, judge_config
from tierwise.evals.stats import PairedCounts, percentile
from tierwise.router.engine import CascadeEngine
from tierwise.routerconfig import RouterConfig
from tierwise.routerconfig import load as load_config

Progress = Callable[[int, int], None]  # (done, total) item answers, both configs counted


@dataclass
class ItemResult:
    item: Item
    outcome: Outcome
    verdict: Verdict | None  # None when the request failed

    @property
    def graded(self) -> bool:
        return self.verdict is not None and self.verdict.correct is not None

    @property
    def correct(self) -> bool:
        return self.verdict is not None and self.verdict.correct is True


@dataclass
class ConfigRun:
    """One config's answers to one route's items."""

    results: list[ItemResult]

    @property
    def answered(self) -> list[ItemResult]:
        return [r for r in self.results if r.outcome.error is None]

    def measured(self) -> Measured:
        graded = [r for r in self.results if r.graded]
        return Measured(
            items=len(self.results),
            graded=len(graded),
            correct=sum(r.correct for r in graded),
            cost_per_item=self.cost_per_item,
            p95_seconds=self.latency(0.95),
        )

    @property
    def total_cost(self) -> Decimal:
        return sum((r.outcome.cost for r in self.results), Decimal(0))

    @property
    def cost_per_item(self) -> Decimal | None:
        answered = self.answered
        if not answered:
            return None
        return sum((r.outcome.cost for r in answered), Decimal(0)) / len(answered)

    @property
    def escalation_rate(self) -> float | None:
        answered = self.answered
        if not answered:
            return None
        return sum(1 for r in answered if r.outcome.escalations > 0) / len(answered)

    def latency(self, q: float) -> float | None:
        return percentile((r.outcome.seconds for r in self.answered), q)

    def errors(self) -> Counter[str]:
        return Counter(r.outcome.error for r in self.results if r.outcome.error is not None)


@dataclass
class RouteReport:
    name: str
    grader: GraderSpec
    candidate: ConfigRun
    baseline: ConfigRun | None
    decision: Decision

    @property
    def paired(self) -> PairedCounts | None:
        return paired_counts(self.candidate, self.baseline)

    @property
    def saving(self) -> float | None:
        """Share of the baseline's cost per item the candidate saves (negative: costs more)."""
        if self.baseline is None:
            return None
        cand, base = self.candidate.cost_per_item, self.baseline.cost_per_item
        if cand is None or base is None or base == 0:
            return None
        return float(1 - cand / base)

    def confusion(self) -> Counter[tuple[str, str]]:
        """(expected label, predicted) counts of the candidate's graded answers."""
        return Counter(
            (r.verdict.expected, r.verdict.predicted or "")
            for r in self.candidate.results
            if r.verdict is not None and r.verdict.expected is not None
        )


@dataclass
class EvalReport:
    policy: str
    candidate_hash: str
    baseline_hash: str | None
    baseline_kind: str  # "promoted" (a given config) or "strongest" (strongest tiers)
    routes: list[RouteReport]
    decision: Decision
    seconds: float
    judge_cost: Decimal = Decimal(0)
    batch: bool = False
    notes: list[str] = field(default_factory=list)


def paired_counts(candidate: ConfigRun, baseline: ConfigRun | None) -> PairedCounts | None:
    """Baseline-vs-candidate verdicts on the items both graded."""
    if baseline is None:
        return None
    base_by_id = {r.item.id: r for r in baseline.results if r.graded}
    pairs = [
        (base_by_id[r.item.id].correct, r.correct)
        for r in candidate.results
        if r.graded and r.item.id in base_by_id
    ]
    return PairedCounts.of(pairs) if pairs else None


def route_decision(plan: EvalPlan, candidate: ConfigRun, baseline: ConfigRun | None) -> Decision:
    return decide(plan.gate, candidate.measured(), paired_counts(candidate, baseline))


async def run_eval(
    plan: EvalPlan,
    candidate: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    datasets: Mapping[str, Dataset],
    env: Mapping[str, str],
    *,
    baseline_kind: str = "promoted",
    progress: Progress | None = None,
    batch_prices: bool = False,
) -> EvalReport:
    """Run ``plan``. ``candidate``/``baseline``: router config documents (``baseline`` None:
    no comparison). ``datasets``: by route name, already sampled."""
    started = time.perf_counter()
    candidate_config = load_config(candidate)
    baseline_config = load_config(baseline) if baseline is not None else None
    judge_doc = judge_config(candidate, plan)
    total = sum(len(datasets[r.name].items) for r in plan.routes) * (
        2 if baseline_config is not None else 1
    )
    tracker = _Tracker(total, progress)
    async with AsyncExitStack() as stack:

        def engine(config: RouterConfig) -> Any:
            if plan.use_batch_api:
                return BatchCascadeEngine(config, env)
            return CascadeEngine(config, env=env, batch_prices=batch_prices)

        cand_engine = await stack.enter_async_context(engine(candidate_config))
        base_engine = (
            await stack.enter_async_context(engine(baseline_config))
            if baseline_config is not None
            else None
        )
        judge = (
            _Judge(await stack.enter_async_context(CascadeEngine(load_config(judge_doc), env=env)))
            if judge_doc is not None
            else None
        )
        deadline = time.monotonic() + plan.timeout_seconds
        reports = []
        for route in plan.routes:
            _check_route(route, candidate_config, baseline_config)
            dataset = datasets[route.name]
            cand_run, base_run = await asyncio.gather(
                _replay(cand_engine, route, dataset, plan, judge, deadline, tracker),
                _replay(base_engine, route, dataset, plan, judge, deadline, tracker)
                if base_engine is not None
                else _none(),
            )
            reports.append(
                RouteReport(
                    route.name,
                    route.grader,
                    cand_run,
                    base_run,
                    route_decision(plan, cand_run, base_run),
                )
            )
        judge_cost = judge.spent if judge is not None else Decimal(0)
    decision = combine(
        Decision(r.decision.outcome, tuple(f"{r.name}: {reason}" for reason in r.decision.reasons))
        for r in reports
    )
    return EvalReport(
        policy=plan.policy,
        candidate_hash=candidate_config.hash,
        baseline_hash=baseline_config.hash if baseline_config is not None else None,
        baseline_kind=baseline_kind,
        routes=reports,
        decision=decision,
        seconds=time.perf_counter() - started,
        judge_cost=judge_cost,
        batch=plan.use_batch_api,
    )


async def _none() -> None:
    return None


def _check_route(route: RoutePlan, candidate: RouterConfig, baseline: RouterConfig | None) -> None:
    for label, config in (("candidate", candidate), ("baseline", baseline)):
        if config is not None and route.name not in config.routes_by_name:
            raise ValueError(
                f"route {route.name!r} is not in the {label} config "
                f"(routes: {', '.join(sorted(config.routes_by_name))})"
            )


class _Tracker:
    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self.progress = total, 0, progress

    def step(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


async def _replay(
    engine: CascadeEngine | BatchCascadeEngine,
    route: RoutePlan,
    dataset: Dataset,
    plan: EvalPlan,
    judge: _Judge | None,
    deadline: float,
    tracker: _Tracker,
) -> ConfigRun:
    slots = asyncio.Semaphore(plan.concurrency)  # requests, or gradings of batched answers
    alias = f"tierwise/{route.name}"
    if isinstance(engine, BatchCascadeEngine):
        bodies = [item.request(alias, route.template) for item in dataset.items]
        outcomes = await _batched(engine, route.name, bodies, deadline, plan.timeout_seconds)

        async def graded(item: Item, outcome: Outcome) -> ItemResult:
            async with slots:
                return await _graded(route, item, outcome, judge, tracker)

        pairs = zip(dataset.items, outcomes, strict=True)
        return ConfigRun(list(await asyncio.gather(*(graded(i, o) for i, o in pairs))))

    async def one(item: Item) -> ItemResult:
        async with slots:
            result = await engine.run(item.request(alias, route.template), route=route.name)
            return await _graded(route, item, Outcome.of(result), judge, tracker)

    tasks = [asyncio.ensure_future(one(item)) for item in dataset.items]
    await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
    results = []
    for item, task in zip(dataset.items, tasks, strict=True):
        if task.done() and not task.cancelled() and task.exception() is None:
            results.append(task.result())
            continue
        if not task.done():
            task.cancel()
            error = f"no answer within the eval's timeout ({plan.timeout_seconds}s)"
        else:
            error = f"internal error: {task.exception()!r}"
        results.append(ItemResult(item, Outcome.failed(error), None))
    await asyncio.gather(*tasks, return_exceptions=True)
    return ConfigRun(results)


async def _batched(
    engine: BatchCascadeEngine,
    route: str,
    bodies: list[dict[str, Any]],
    deadline: float,
    timeout: int,
) -> list[Outcome]:
    """Every body's outcome over batches; all errors when the batches outlast the eval."""
    try:
        ran = await asyncio.wait_for(
            engine.run_all(route, bodies), max(0.0, deadline - time.monotonic())
        )
    except TimeoutError:
        error = f"the batches did not end within the eval's timeout ({timeout}s)"
        return [Outcome.failed(error) for _ in bodies]
    return [Outcome.of(result) for result in ran]


async def _graded(
    route: RoutePlan, item: Item, outcome: Outcome, judge: _Judge | None, tracker: _Tracker
) -> ItemResult:
    """``outcome`` of ``item`` graded (an error is not graded), and counted as done."""
    verdict = None
    if outcome.message is not None:
        verdict = await grade(route.grader, item, outcome.message, _ask(judge, route))
    tracker.step()
    return ItemResult(item, outcome, verdict)


class _Judge:
    """The judge tiers' engine, and what their answers cost (reported beside the eval's)."""

    def __init__(self, engine: CascadeEngine) -> None:
        self.engine = engine
        self.spent = Decimal(0)

    async def ask(self, route: str, body: dict[str, Any]) -> Mapping[str, Any]:
        result = await self.engine.run(body, route=route)
        self.spent += result.cost
        return (result.message if result.ok else None) or {"content": []}


def _ask(judge: _Judge | None, route: RoutePlan) -> Any:
    if judge is None or route.grader.type != "judge":
        return None
    judge_route = f"{JUDGE_ROUTE}-{route.grader.tier}"

    async def ask(body: dict[str, Any]) -> Mapping[str, Any]:
        return await judge.ask(judge_route, body)

    return ask


def sampled(datasets: Mapping[str, Dataset], routes: Sequence[RoutePlan]) -> dict[str, Dataset]:
    return {r.name: datasets[r.name].sample(r.sample_size) for r in routes}
