"""Replay a plan's datasets through the candidate and baseline configs, grade, decide.

The candidate and the baseline answer every distinct item concurrently (``plan.concurrency``
items in flight per config), through ``CascadeEngine`` (the router's own cascade); duplicates
and near-duplicates are not replayed (they add no evidence) and the report counts them.
Items still running at the plan's timeout are recorded as errors, so a slow eval is
inconclusive rather than decided on the fast items only.

What is checkable before a model is called is checked first (a grader with no reference on
any item is bad input); after the replay, answers nothing could grade are bad input too, not
a verdict. Routes of the config that changed against the baseline but have no dataset are
named: Inconclusive unless ``spec.evaluation.unevaluatedRoutes: Promote``, or left to the shadow
stage that follows (``spec.evaluation.shadow``) when it gates them.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from tierwise.evals.batch import BatchCascadeEngine
from tierwise.evals.dataset import Dataset, DatasetError, Item
from tierwise.evals.gate import (
    INCONCLUSIVE,
    Decision,
    Measured,
    bad_input,
    combine,
    decide,
    deciding,
)
from tierwise.evals.graders import FIELD_ABSENT, GraderSpec, Verdict, check_gradable, grade
from tierwise.evals.outcome import Outcome
from tierwise.evals.plan import (
    JUDGE_ROUTE,
    EvalPlan,
    RoutePlan,
    judge_config,
    route_changes,
    without_dataset,
)
from tierwise.evals.stats import Interval, PairedCounts, percentile, wilson_interval
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

    @property
    def failed(self) -> int:
        """Items that failed upstream or could not be graded."""
        return sum(1 for r in self.results if not r.graded)

    def over(self, ids: Sequence[str]) -> ConfigRun:
        """The results of the items ``ids``, in that order."""
        by_id = {r.item.id: r for r in self.results}
        return ConfigRun([by_id[i] for i in ids if i in by_id])

    @property
    def total_cost(self) -> Decimal:
        return sum((r.outcome.cost for r in self.results), Decimal(0))

    @property
    def cost_per_item(self) -> Decimal | None:
        """Spend per item, failed items' spend included (an error is not free)."""
        if not self.results:
            return None
        return self.total_cost / len(self.results)

    @property
    def quality(self) -> Interval | None:
        return wilson_interval(sum(r.correct for r in self.results), len(self.results))

    @property
    def escalation_rate(self) -> float | None:
        if not self.results:
            return None
        return sum(1 for r in self.results if r.outcome.escalations > 0) / len(self.results)

    def latency(self, q: float) -> float | None:
        """Latency quantile over every item, a failed one at the time it took to fail."""
        return percentile((r.outcome.seconds for r in self.results), q)

    def errors(self) -> Counter[str]:
        return Counter(r.outcome.error for r in self.results if r.outcome.error is not None)

    def ungradable(self) -> Counter[str]:
        """Why answered items could not be graded (e.g. "item has no label")."""
        return Counter(
            r.verdict.note or "not gradable"
            for r in self.results
            if r.verdict is not None and r.verdict.correct is None
        )


@dataclass
class RouteReport:
    """One route's runs, and the item set every figure and the decision are over:
    ``counted``, the distinct items the baseline graded whose candidate answer was graded or
    failed (a failure counts as wrong)."""

    name: str
    grader: GraderSpec
    candidate: ConfigRun
    baseline: ConfigRun | None
    decision: Decision
    counted: tuple[str, ...] = ()
    duplicates: tuple[tuple[Item, Item], ...] = ()  # (duplicate, the item it repeats)

    @property
    def lines(self) -> int:
        """Dataset items before duplicates were removed."""
        return len(self.candidate.results) + len(self.duplicates)

    @property
    def candidate_set(self) -> ConfigRun:
        return self.candidate.over(self.counted)

    @property
    def baseline_set(self) -> ConfigRun | None:
        return self.baseline.over(self.counted) if self.baseline is not None else None

    @property
    def paired(self) -> PairedCounts | None:
        base = self.baseline_set
        if base is None or not self.counted:
            return None
        return PairedCounts.of(
            (b.correct, c.correct)
            for b, c in zip(base.results, self.candidate_set.results, strict=True)
        )

    def measured(self) -> Measured:
        run = self.candidate_set
        return Measured(
            items=len(self.candidate.results),
            counted=len(run.results),
            correct=sum(r.correct for r in run.results),
            cost_per_item=run.cost_per_item,
            p95_seconds=run.latency(0.95),
            failed=self.candidate.failed,
            baseline_failed=self.baseline.failed if self.baseline is not None else 0,
        )

    @property
    def saving(self) -> float | None:
        """Share of the baseline's cost per item the candidate saves (negative: costs more)."""
        base = self.baseline_set
        if base is None:
            return None
        cand, base_cost = self.candidate_set.cost_per_item, base.cost_per_item
        if cand is None or base_cost is None or base_cost == 0:
            return None
        return float(1 - cand / base_cost)

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
    # Every route of the candidate and baseline configs: changed, evaluated / changed, not
    # evaluated / unchanged (empty without a baseline config).
    changes: dict[str, str] = field(default_factory=dict)
    deciding: tuple[str, ...] = ()  # the routes whose decision is the eval's


def counted_ids(
    candidate: ConfigRun, baseline: ConfigRun | None, errors_wrong: bool = True
) -> tuple[str, ...]:
    """The item set of a route's figures: items whose candidate answer was graded or failed
    upstream (counted wrong, unless ``errors_wrong`` is off), and, with a baseline, that the
    baseline graded."""
    base = {r.item.id: r for r in baseline.results if r.graded} if baseline is not None else None
    return tuple(
        r.item.id
        for r in candidate.results
        if (r.graded or (errors_wrong and r.outcome.error is not None))
        and (base is None or r.item.id in base)
    )


def route_report(
    plan: EvalPlan,
    route: RoutePlan,
    candidate: ConfigRun,
    baseline: ConfigRun | None,
    duplicates: tuple[tuple[Item, Item], ...] = (),
) -> RouteReport:
    """The route's report and decision from its runs (pure)."""
    report = RouteReport(
        route.name,
        route.grader,
        candidate,
        baseline,
        Decision(INCONCLUSIVE, ()),
        counted_ids(candidate, baseline, plan.gate.candidate_errors == "Wrong"),
        duplicates,
    )
    report.decision = ungradable(route, candidate, baseline) or decide(
        plan.gate, report.measured(), report.paired
    )
    return report


def ungradable(
    route: RoutePlan, candidate: ConfigRun, baseline: ConfigRun | None
) -> Decision | None:
    """Bad input when the answers (of both configs) say nothing about quality: no answer
    could be graded, the graded field is absent from every answer, or no answer of either
    config is correct (a grader that marks everything wrong is not measuring)."""
    runs = [candidate] + ([baseline] if baseline is not None else [])
    answered = [r for run in runs for r in run.answered]
    if len(answered) * 2 <= sum(len(run.results) for run in runs):
        return None  # most calls failed upstream: the error rates say so
    n = len(answered)
    notes = Counter(r.verdict.note for r in answered if r.verdict is not None and not r.graded)
    if all(not r.graded for r in answered):
        note = notes.most_common(1)[0][0] if notes else "not gradable"
        return bad_input(f"{note} on {n}/{n} answers: nothing could be graded")
    absent = FIELD_ABSENT.format(field=route.grader.field)
    if all(r.verdict is not None and r.verdict.note == absent for r in answered):
        return bad_input(f"{absent} from {n}/{n} answers: nothing could be graded")
    graded = [r for r in answered if r.graded]
    if not any(r.correct for r in graded):
        return bad_input(
            f"no answer of either config is correct (0/{len(graded)} graded answers): the "
            f"grader ({route.grader.type} on `{route.grader.field}`) or the items' references "
            "are wrong"
        )
    return None


def check_datasets(plan: EvalPlan, datasets: Mapping[str, Dataset]) -> None:
    """What can be checked before any model is called: each route's grader can grade some
    of its items. Raises ``DatasetError``."""
    for route in plan.routes:
        dataset = datasets[route.name]
        problem = check_gradable(route.grader, dataset.items, f"route {route.name}")
        if problem is not None:
            raise DatasetError(dataset.source, None, problem)


def unevaluated_decisions(
    plan: EvalPlan, changes: Mapping[str, str], *, shadow: bool = False
) -> dict[str, Decision]:
    """A decision per changed route without a dataset: never a silent promotion. ``shadow``:
    a shadow stage follows this eval (the baseline is the live config), so the routes it
    gates are left to it."""
    return without_dataset(changes, plan.unevaluated_routes, plan.shadows if shadow else None)


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
    judge_doc = judge_config(candidate, plan.judge_tiers)
    check_datasets(plan, datasets)
    distinct = {name: dataset.distinct() for name, dataset in datasets.items()}
    datasets = {name: found[0] for name, found in distinct.items()}
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
            reports.append(route_report(plan, route, cand_run, base_run, distinct[route.name][1]))
        judge_cost = judge.spent if judge is not None else Decimal(0)
    changes = (
        route_changes(candidate, baseline, [r.name for r in plan.routes])
        if baseline is not None
        else {}
    )
    decisions = {
        r.name: replace(r.decision, reasons=tuple(f"{r.name}: {x}" for x in r.decision.reasons))
        for r in reports
    }
    decisions.update(unevaluated_decisions(plan, changes, shadow=baseline_kind == "promoted"))
    decision = combine(decisions.values())
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
        changes=changes,
        deciding=deciding(decisions, decision),
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

    started = time.monotonic()
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
        # A timed-out item took at least the eval's time: its latency is not zero.
        waited = max(0.0, time.monotonic() - started)
        results.append(ItemResult(item, replace(Outcome.failed(error), seconds=waited), None))
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
