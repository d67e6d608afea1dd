"""Spend budgets at the router: reserve the worst case, settle to the exact cost, act.

Admission (``SpendBudgets.admit``) reserves, in every budget whose scope the request is in,
the request's worst case: the estimated prompt (with the input-budget margin) at the
dearest input rate (cache writes included) plus ``max_tokens`` at the output rate, for each
step of the route and the fallback. A budget whose ``reject`` threshold is reached by the
spend and reservations already in flight refuses the request with the API's 429
(``rate_limit_error``) and ``retry-after`` at the window's reset; one whose ``degrade``
threshold is reached serves a cheaper route (first steps only, lower ``max_tokens`` or
effort). ``settle`` then replaces the reservation by the exact Decimal cost the client was
told (``x-tierwise-cost-usd``), in integer picodollars, once per request whatever retries.

So spend can pass a reject threshold only by what was admitted below it: at most one
request's worst case per budget (plus the prompt estimate's error, bounded by its margin).

Where spend is kept: the CacheProfile's Redis when it names one (``router.spend_store``),
shared by every router of the policy; else this router's own count (``shared`` 0 in the
metrics). When Redis cannot be answered within ``REDIS_TIMEOUT_SECONDS`` a budget follows its
``onRedisUnavailable``: ``countLocally`` serves on and counts here (on top of the last
shared figure seen), and a journal adds that spend to Redis once it answers again, each
settlement once (idempotent by request id); ``reject`` answers 503 until it is back.
Redis is tried again after ``RETRY_REDIS_AFTER_SECONDS``, so an outage costs a request at
most one bounded attempt per period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from prometheus_client import Counter, Gauge

from tierwise.pricing import Prices, format_usd
from tierwise.pricing.model import MTOK
from tierwise.pricing.spend import (
    from_units,
    reject_units,
    retry_after_seconds,
    strongest,
    to_units,
)
from tierwise.router.cascade import Exchange
from tierwise.router.errors import RouterError
from tierwise.router.input_budget import with_margin
from tierwise.router.jsonutil import sha256_hex
from tierwise.router.metrics import RouterMetrics
from tierwise.router.request import estimate_prompt_tokens
from tierwise.router.response_cache import caller_identity
from tierwise.router.spend_store import LocalSpendStore, RedisSpendStore, SpendStore
from tierwise.routerconfig import ResponseCacheConfig, Route, RouterConfig, Tier
from tierwise.routerconfig.budget import Budget, BudgetAction
from tierwise.routerconfig.defaults import EFFORT_LEVELS

log = logging.getLogger("tierwise.router")

RETRY_REDIS_AFTER_SECONDS = 1.0
JOURNAL_FLUSH_SECONDS = 0.5
# A reservation outlives the longest its request can take (every step's attempts at their
# timeouts) by this much; past it, its router is taken for dead and it counts at worst case.
HOLD_MARGIN_SECONDS = 10.0
ACTION_LEVELS = {"none": 0, "alert": 1, "degrade": 2, "reject": 3}
SHOULD_RETRY_HEADER = "x-should-retry"


@dataclass
class Hold:
    """One budget's reservation for one request."""

    budget: Budget
    base: str
    key: str  # the spend counter of the window the request started in
    ttl: int
    store: SpendStore


@dataclass
class Admission:
    rid: str
    units: int
    holds: list[Hold] = field(default_factory=list)
    settled: bool = False


@dataclass(frozen=True)
class Pending:
    """A settlement Redis has not confirmed yet (``local``: counted here meanwhile)."""

    base: str
    key: str
    rid: str
    units: int
    ttl: int
    local: bool


class SpendBudgets:
    def __init__(
        self,
        metrics: RouterMetrics,
        env: Mapping[str, str],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.env = env
        self.clock = clock
        self.local = LocalSpendStore(clock)
        self.remote: RedisSpendStore | None = None
        self._down_until = 0.0
        self._seen: dict[str, int] = {}  # base -> last shared committed spend seen
        self.journal: list[Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._levels: dict[str, int] = {}
        self._said_local = False
        self._metrics(metrics)

    def _metrics(self, metrics: RouterMetrics) -> None:
        r = metrics.registry
        labels = ["policy", "budget"]
        self.m_spend = Gauge(
            "tierwise_budget_spend_usd",
            "Settled spend of the budget's current window (policy and route scopes).",
            labels,
            registry=r,
        )
        self.m_reserved = Gauge(
            "tierwise_budget_reserved_usd",
            "Worst-case reservations of requests in flight, counted against the budget.",
            labels,
            registry=r,
        )
        self.m_limit = Gauge("tierwise_budget_limit_usd", "The budget's limit.", labels, registry=r)
        self.m_action = Gauge(
            "tierwise_budget_action",
            "The strongest action in force: 0 none, 1 alert, 2 degrade, 3 reject.",
            labels,
            registry=r,
        )
        self.m_shared = Gauge(
            "tierwise_budget_shared",
            "1 when the budget is counted in the shared Redis, 0 when this router counts its "
            "own share (no Redis configured, or Redis unavailable and onRedisUnavailable "
            "countLocally).",
            labels,
            registry=r,
        )
        self.m_reset = Gauge(
            "tierwise_budget_window_reset_timestamp_seconds",
            "When the budget's current window resets (Unix time).",
            labels,
            registry=r,
        )
        self.m_refused = Counter(
            "tierwise_budget_refused",
            "Requests refused by a budget: limit (429) or redis (503, onRedisUnavailable reject).",
            [*labels, "reason"],
            registry=r,
        )
        self.m_degraded = Counter(
            "tierwise_budget_degraded", "Requests served degraded.", labels, registry=r
        )
        self.m_crossed = Counter(
            "tierwise_budget_threshold_crossings",
            "Thresholds this router saw the budget cross, by action and percent.",
            [*labels, "action", "percent"],
            registry=r,
        )
        self.m_redis_errors = Counter(
            "tierwise_budget_redis_errors",
            "Budget operations Redis did not answer in time.",
            ["policy"],
            registry=r,
        )
        self.m_pending = Gauge(
            "tierwise_budget_pending_settlements",
            "Settlements waiting for Redis (journal), counted locally meanwhile.",
            registry=r,
        )

    # ----------------------------------------------------------------- admission

    async def admit(self, ex: Exchange, headers: Mapping[str, str]) -> Admission | None:
        """Reserve the request's worst case in each budget it is in; refuse (429/503) or
        degrade ``ex.route`` as their thresholds say. ``None`` when no budget applies."""
        config = ex.runtime.config
        budgets = [b for b in config.budgets if b.scope != "route" or b.route == ex.route.name]
        if not budgets:
            return None
        self._sync_remote(config)
        now = self.clock()
        moment = datetime.fromtimestamp(now, UTC)
        units = to_units(worst_case_usd(config, ex.route, ex.body))
        admission = Admission(uuid.uuid4().hex, units)
        degrade: list[BudgetAction] = []
        hold_seconds = hold_seconds_for(config, ex.route)
        try:
            for budget in budgets:
                scope = await self._scope(ex, budget, headers, moment)
                base = f"tierwise:budget:{ex.runtime.policy}:{budget.name}:{scope}:"
                keys = [f"{base}s:{k}" for k in budget.window.keys(moment)]
                limit = to_units(budget.limit_usd)
                reject_at = reject_units(budget.thresholds, limit)
                ttl = budget.window.ttl_seconds(moment)
                deadline = now + hold_seconds
                args = (base, keys, admission.rid, units, reject_at, deadline, ttl)
                reservation, store = await self._reserve(ex, budget, args)
                before = reservation.committed - (units if reservation.admitted else 0)
                reached = [a for a in budget.actions if a.threshold.reached(before, limit)]
                reset = budget.window.reset(moment).timestamp()
                self._observe(
                    ex, budget, scope, reservation.spent, reservation.held, reached, reset
                )
                if not reservation.admitted:
                    raise self._refusal(ex, budget, moment, reservation.spent, limit)
                admission.holds.append(Hold(budget, base, keys[0], ttl, store))
                degrade += [a for a in reached if a.action == "degrade"]
        except BaseException:
            await self.settle(admission, Decimal(0))  # give back what was reserved
            raise
        if degrade:
            ex.route = degraded_route(ex.route, degrade)
            ex.degraded = True
            for budget in {h.budget.name for h in admission.holds}:
                self.m_degraded.labels(ex.runtime.policy, budget).inc()
        return admission

    async def _scope(
        self, ex: Exchange, budget: Budget, headers: Mapping[str, str], moment: datetime
    ) -> str:
        """Who the request counts for in ``budget``: everyone, or its caller (a digest; the
        ``maxCallers`` first seen in a window, then ``other`` for the rest)."""
        if budget.scope != "caller":
            return "all"
        if budget.caller_by == "header":
            value = headers.get(budget.caller_header or "", "").strip()
            caller = sha256_hex(b"team:" + value.encode())[:32] if value else "anonymous"
        else:
            caller = caller_identity(headers)[:32]
        assert budget.max_callers is not None
        # A calendar window's callers are its own; a rolling window's set lives one window
        # long from its first caller (a bucket's would move callers between counts).
        rolling = budget.window.period == "rolling"
        window = "rolling" if rolling else budget.window.keys(moment)[0]
        key = f"tierwise:budget:{ex.runtime.policy}:{budget.name}:callers:{window}"
        ttl = budget.window.seconds or budget.window.ttl_seconds(moment)
        if self._remote_up():
            assert self.remote is not None
            try:
                return await self.remote.caller(key, caller, budget.max_callers, ttl)
            except Exception:
                self._redis_failed(ex.runtime.policy)
        return await self.local.caller(key, caller, budget.max_callers, ttl)

    async def _reserve(self, ex: Exchange, budget: Budget, args: tuple[Any, ...]) -> Any:
        base = args[0]
        if self._remote_up():
            assert self.remote is not None
            try:
                reservation = await self.remote.reserve(*args)
                self._seen[base] = reservation.committed - (args[3] if reservation.admitted else 0)
                self.m_shared.labels(ex.runtime.policy, budget.name).set(1)
                return reservation, self.remote
            except Exception:
                self._redis_failed(ex.runtime.policy)
        if self.remote is not None and budget.on_redis_unavailable == "reject":
            self.m_refused.labels(ex.runtime.policy, budget.name, "redis").inc()
            raise RouterError(
                503,
                f"spend budget {budget.name!r} is kept in Redis, which does not answer; "
                "the policy refuses requests until it is back (onRedisUnavailable: reject)",
                outcome="rejected",
                error_type="api_error",
                headers={"retry-after": "1"},
            )
        self.m_shared.labels(ex.runtime.policy, budget.name).set(0)
        # Counted here: on top of the shared spend last seen, when there is a Redis.
        seen = self._seen.get(base, 0) if self.remote is not None else 0
        base, keys, rid, units, reject_at, deadline, ttl = args
        limit = None if reject_at is None else max(0, reject_at - seen)
        local = await self.local.reserve(base, keys, rid, units, limit, deadline, ttl)
        return replace(local, spent=local.spent + seen), self.local

    def _publish(
        self, gauge: Gauge, policy: str, budget: Budget, value: float, reset: float
    ) -> None:
        """Set a figure of the window ending at ``reset``. The figures move at admissions: a
        calendar window that ended with no request since reads 0 (nothing spent in the new
        one), never the old window's figure; a rolling window's spend leaves bucket by
        bucket and is shown as last counted."""
        if budget.window.period == "rolling":
            gauge.labels(policy, budget.name).set(value)
            return
        gauge.labels(policy, budget.name).set_function(
            lambda: value if self.clock() < reset else 0.0
        )

    def _next_reset(self, budget: Budget) -> float:
        return budget.window.reset(datetime.fromtimestamp(self.clock(), UTC)).timestamp()

    def _refusal(
        self, ex: Exchange, budget: Budget, moment: datetime, spent: int, limit: int
    ) -> RouterError:
        self.m_refused.labels(ex.runtime.policy, budget.name, "limit").inc()
        reset = budget.window.reset(moment)
        return RouterError(
            429,
            f"spend budget {budget.name!r} of policy {ex.runtime.policy} is used up for this "
            f"window: {format_usd(from_units(spent))} of {format_usd(budget.limit_usd)} USD "
            f"spent or reserved; it resets at {reset.isoformat().replace('+00:00', 'Z')}",
            error_type="rate_limit_error",
            headers={
                "retry-after": str(retry_after_seconds(budget.window, moment)),
                SHOULD_RETRY_HEADER: "false",  # an SDK retry within seconds cannot succeed
            },
        )

    def _observe(
        self,
        ex: Exchange,
        budget: Budget,
        scope: str,
        spent: int,
        held: int,
        reached: Sequence[BudgetAction],
        reset: float,
    ) -> None:
        policy = ex.runtime.policy
        level = ACTION_LEVELS[strongest([a.threshold for a in reached])]
        if scope == "all":  # per-caller figures stay out of the metrics (cardinality)
            self._publish(self.m_spend, policy, budget, float(from_units(spent)), reset)
            self._publish(self.m_reserved, policy, budget, float(from_units(held)), reset)
            self._publish(self.m_action, policy, budget, float(level), reset)
        self.m_reset.labels(policy, budget.name).set_function(
            lambda: reset if self.clock() < reset else self._next_reset(budget)
        )
        self.m_limit.labels(policy, budget.name).set(float(budget.limit_usd))
        key = f"{policy}/{budget.name}/{scope}"
        seen = self._levels.get(key, -1)
        for action in reached[max(0, seen + 1) :] if seen >= 0 else reached:
            self.m_crossed.labels(policy, budget.name, action.action, str(action.at_percent)).inc()
            log.warning(
                "spend budget %s of policy %s crossed %d%% (%s)",
                budget.name,
                policy,
                action.at_percent,
                action.action,
            )
        self._levels[key] = len(reached) - 1

    async def charge(
        self, ex: Exchange, headers: Mapping[str, str], rid: str, cost: Decimal
    ) -> None:
        """Count ``cost`` once under ``rid`` without a reservation: a batch's items, at the
        batch prices they were billed at, when its results are first read (read again, or
        by another router, they are not counted again)."""
        config = ex.runtime.config
        budgets = [b for b in config.budgets if b.scope != "route" or b.route == ex.route.name]
        if not budgets:
            return
        self._sync_remote(config)
        moment = datetime.fromtimestamp(self.clock(), UTC)
        admission = Admission(rid, 0)
        for budget in budgets:
            scope = await self._scope(ex, budget, headers, moment)
            base = f"tierwise:budget:{ex.runtime.policy}:{budget.name}:{scope}:"
            key = f"{base}s:{budget.window.keys(moment)[0]}"
            store: SpendStore = self.remote if self._remote_up() and self.remote else self.local
            admission.holds.append(
                Hold(budget, base, key, budget.window.ttl_seconds(moment), store)
            )
        await self.settle(admission, cost)

    # ----------------------------------------------------------------- settlement

    async def release(self, admission: Admission | None, ex: Exchange) -> None:
        """Settle ``admission`` at ``ex.cost`` (what the client was told), shielded: a
        cancelled request (the client went away) still settles what was billed."""
        if admission is None or admission.settled:
            return
        task = asyncio.ensure_future(self.settle(admission, ex.cost))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.shield(task)

    async def settle(self, admission: Admission, cost: Decimal) -> None:
        if admission.settled:
            return
        admission.settled = True
        units = to_units(cost)
        for hold in admission.holds:
            pending = Pending(hold.base, hold.key, admission.rid, units, hold.ttl, False)
            if hold.store is self.local:
                await self.local.settle(hold.base, hold.key, admission.rid, units, hold.ttl)
                if self.remote is not None:  # counted here while Redis was away: add it there
                    self.journal.append(replace(pending, local=True))
                continue
            try:
                await hold.store.settle(hold.base, hold.key, admission.rid, units, hold.ttl)
            except Exception:
                log.debug("budget settlement failed; journaled", exc_info=True)
                self._down_until = time.monotonic() + RETRY_REDIS_AFTER_SECONDS
                self.journal.append(pending)
        self._kick()

    def _kick(self) -> None:
        self.m_pending.set(len(self.journal))
        if self.journal and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        """Replay the journal into Redis until it is empty (each entry is idempotent)."""
        while self.journal:
            remote = self.remote
            if remote is None:
                self.journal.clear()
                break
            entry = self.journal[0]
            try:
                await remote.settle(entry.base, entry.key, entry.rid, entry.units, entry.ttl)
            except Exception:
                await asyncio.sleep(JOURNAL_FLUSH_SECONDS)
                continue
            self._down_until = 0.0
            if entry.local:
                self.local.unsettle(entry.key, entry.units)
            self.journal.pop(0)
            self.m_pending.set(len(self.journal))

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for settlements in flight and the journal: at shutdown."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._tasks or (self._flusher is not None and not self._flusher.done()):
                    await asyncio.sleep(0.05)

    # ----------------------------------------------------------------- Redis

    def _sync_remote(self, config: RouterConfig) -> None:
        """The store for ``config``: its Redis when the response cache names one."""
        settings = config.cache.response_cache
        wanted = _redis_settings(settings, self.env)
        if wanted is None:
            if not self._said_local:
                self._said_local = True
                log.warning(
                    "spend budgets: no Redis in the cache profile; this router counts only its "
                    "own requests against each limit (a local share)"
                )
            if self.remote is not None and not self.journal:
                self._retire(self.remote)
                self.remote = None
            return
        if self.remote is not None and self.remote.same_settings(wanted):
            return
        if self.remote is not None:
            self._retire(self.remote)
        self.remote = RedisSpendStore(wanted, self.env, self.clock)

    def _retire(self, store: RedisSpendStore) -> None:
        task = asyncio.get_running_loop().create_task(store.close())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _remote_up(self) -> bool:
        return self.remote is not None and time.monotonic() >= self._down_until

    def _redis_failed(self, policy: str) -> None:
        log.warning(
            "spend budgets: Redis did not answer; retrying in %gs", RETRY_REDIS_AFTER_SECONDS
        )
        self.m_redis_errors.labels(policy).inc()
        self._down_until = time.monotonic() + RETRY_REDIS_AFTER_SECONDS

    async def close(self) -> None:
        await self.drain()
        if self._flusher is not None:
            self._flusher.cancel()
        if self.remote is not None:
            with contextlib.suppress(Exception):
                await self.remote.close()


def _redis_settings(settings: ResponseCacheConfig, env: Mapping[str, str]) -> Any:
    """The CacheProfile's Redis, when it names one the router can reach the URL of."""
    if settings.backend != "redis":
        return None
    if settings.redis_url or env.get(settings.redis_url_env or ""):
        return settings
    return None


# --------------------------------------------------------------------------- worst case


def worst_case_usd(config: RouterConfig, route: Route, body: Mapping[str, Any]) -> Decimal:
    """The most ``body`` can cost on ``route``: every step (and the fallback, once more for a
    refusal) answering with the estimated prompt, inflated by the input-budget margin, at
    the dearest input rate (a cache write) and ``max_tokens`` at the output rate; the long-
    prompt band when it is dearer. Batch items reserve full price and settle at half."""
    prompt = with_margin(estimate_prompt_tokens(body))
    requested = body.get("max_tokens")
    requested = requested if isinstance(requested, int) and requested >= 0 else 0
    fallback = config.tiers.get(config.fallback.tier) if config.fallback else None
    total = Decimal(0)
    for step in route.steps:
        tier = config.tiers[step.tier]
        candidates = [tier, fallback] if fallback is not None else [tier]
        total += max(
            _call_cost(t, prompt, _output_cap(requested, step.max_tokens, t)) for t in candidates
        )
    if fallback is not None:
        total += _call_cost(fallback, prompt, _output_cap(requested, None, fallback))
    return total


def _output_cap(requested: int, step_cap: int | None, tier: Tier) -> int:
    caps = [c for c in (step_cap, tier.limits.max_output_tokens) if c is not None]
    return min([requested, *caps])


def _call_cost(tier: Tier, prompt: int, output: int) -> Decimal:
    prices: Prices = tier.prices
    bands = [prices.rates] + ([prices.long_prompt.rates] if prices.long_prompt else [])
    return max(
        (prompt * max(r.input, r.cache_write_5m, r.cache_write_1h) + output * r.output) / MTOK
        for r in bands
    )


def hold_seconds_for(config: RouterConfig, route: Route) -> float:
    """How long a request of ``route`` can take: every step's attempts at their timeouts
    and backoffs, the fallback's once more, and a margin."""
    retry = config.retry
    per_attempts = retry.max_attempts
    backoff = retry.max_backoff_seconds * max(0, retry.max_attempts - 1)
    tiers = [config.tiers[s.tier] for s in route.steps]
    if config.fallback is not None and config.fallback.tier in config.tiers:
        tiers.append(config.tiers[config.fallback.tier])
    return (
        sum(t.limits.timeout_seconds * per_attempts + backoff for t in tiers) + HOLD_MARGIN_SECONDS
    )


# --------------------------------------------------------------------------- degrade


def degraded_route(route: Route, actions: Sequence[BudgetAction]) -> Route:
    """``route`` made cheaper by the degrade ``actions`` in force (the strictest of each)."""
    steps = list(route.steps)
    keep = min((a.steps for a in actions if a.steps is not None), default=len(steps))
    steps = steps[: max(1, keep)]
    caps = [a.max_tokens for a in actions if a.max_tokens is not None]
    efforts = [a.effort for a in actions if a.effort is not None]
    effort = min(efforts, key=EFFORT_LEVELS.index) if efforts else None
    changed = []
    for step in steps:
        cap = min([*caps, *([step.max_tokens] if step.max_tokens else [])], default=None)
        # Effort only goes down, and only where the step sets one: a step without effort
        # may be on a model that refuses the parameter.
        lowered = step.effort
        if effort is not None and step.effort is not None:
            lowered = min(effort, step.effort, key=EFFORT_LEVELS.index)
        changed.append(replace(step, max_tokens=cap, effort=lowered))
    changed[-1] = replace(changed[-1], hedge_after_seconds=None, escalate_when=())
    return replace(route, steps=tuple(changed))
