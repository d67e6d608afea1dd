"""The shadow stage in the sidecar: a candidate config answers a sample of live requests.

While the operator shadows a candidate it writes the candidate config and the shadow
settings (``routerconfig.shadow``) beside the live config; ``ShadowRunner`` watches that file
(a bad one is reported and never replaces a good one; a removed one stops shadowing).

After the client has its complete answer (the JSON body, a cached one, or a stream's final
message) ``offer`` decides, without awaiting anything, whether the request is a sample: the
route is shadowed, the client did not send ``x-tierwise-no-shadow``, the sample rate picks it,
a concurrency slot is free and the hour's shadow spend is under its limit. A sample runs in
a task of its own, outside the client's handler: the client's bytes, status and timing are
the same with shadowing on or off, a client that disconnects cancels nothing, and each call
is cut at its deadline. The candidate's cascade is the router's one request path
(``RequestPath``) on the candidate's runtime, with its own upstream callbacks and a private
metrics registry, so production's metrics never count shadow calls; the shadow has its own
``tierwise_shadow_*`` series.

The counters are cumulative for this router process; ``tierwise_shadow_info`` carries the
process's random ``start`` id, so a collector keys what it reads by pod and start id and a
restart (counters from zero, a new start id) neither loses nor double counts a sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tierwise.router.cascade import Cascade, Exchange
from tierwise.router.errors import RouterError
from tierwise.router.escalation import answer_field, answer_text
from tierwise.router.jsonutil import sha256_hex
from tierwise.router.metrics import LATENCY_BUCKETS, RouterMetrics
from tierwise.router.reload import missing_key_envs, poll_forever
from tierwise.router.request_path import RequestPath
from tierwise.router.runtime import Runtime, build_runtime
from tierwise.router.upstream import Upstream, UpstreamFailure
from tierwise.routerconfig import ConfigError
from tierwise.routerconfig.shadow import (
    JUDGE_ROUTE_PREFIX,
    NO_SHADOW_HEADER,
    SHADOW_KEY,
    ShadowRoute,
    ShadowSettings,
    parse_shadow_bytes,
)

log = logging.getLogger("tierwise.router.shadow")

PREFIX = "tierwise_shadow"
# Why a request of a shadowed route was not run on the candidate (the ``reason`` label).
SKIP_REASONS = ("client_opt_out", "live_degraded", "busy", "spend_limit", "live_not_comparable")


class ShadowMetrics:
    """The ``tierwise_shadow_*`` series, in the router's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.samples = Counter(
            f"{PREFIX}_samples",
            "Live requests also answered by the shadowed candidate, by result (agree, "
            "disagree, failed: the shadow call failed or hit its deadline).",
            ["policy", "route", "candidate", "result"],
            registry=r,
        )
        self.skipped = Counter(
            f"{PREFIX}_skipped",
            "Sampled (or opted-out) requests not run on the candidate, by reason "
            "(client_opt_out, live_degraded, busy, spend_limit, live_not_comparable).",
            ["policy", "route", "reason"],
            registry=r,
        )
        self.cost = Counter(
            f"{PREFIX}_cost_usd",
            "Dollars spent on shadow calls, apart from tierwise_router_cost_usd.",
            ["policy", "route", "candidate"],
            registry=r,
        )
        self.latency = Histogram(
            f"{PREFIX}_duration_seconds",
            "Time of one shadow call (the candidate's whole cascade).",
            ["policy", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(f"{PREFIX}_in_flight", "Shadow calls running now.", registry=r)
        self.info = Gauge(
            f"{PREFIX}_info",
            "The candidate being shadowed (value 1), with this router process's start id.",
            ["policy", "candidate", "start"],
            registry=r,
        )
        self.rejections = Counter(
            f"{PREFIX}_config_rejections",
            "Shadow documents kept out by reason (invalid, missing_key_env, other_policy).",
            ["reason"],
            registry=r,
        )


class _Active:
    """One loaded shadow document: its settings, the candidate's runtime and the judge's."""

    def __init__(
        self, settings: ShadowSettings, runtime: Runtime, judge: Runtime | None = None
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.judge = judge
        self.slots = settings.max_concurrency


class ShadowRunner:
    """Samples live requests onto the shadowed candidate; see the module's docstring."""

    def __init__(
        self,
        metrics: RouterMetrics,
        env: Mapping[str, str],
        live_policy: Callable[[], str],
        *,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = ShadowMetrics(metrics.registry)
        self.env = env
        self._live_policy = live_policy
        self._rng = rng
        self._clock = clock
        self.start_id = secrets.token_hex(8)
        self.path: Path | None = None
        self._digest: str | None = None
        self.active: _Active | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._hour = -1
        self._hour_spend = Decimal(0)
        self._path: RequestPath | None = None
        self._info_labels: tuple[str, str, str] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, session: aiohttp.ClientSession) -> None:
        """The candidate's request path: the router's session, callbacks of its own and a
        private metrics registry (production's series never count shadow calls)."""
        private = RouterMetrics()
        upstream = Upstream(session, _ignore_failure, _ignore_retry)
        self._path = RequestPath(Cascade(upstream, private), private)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @property
    def running(self) -> int:
        """Shadow calls in flight (tests and ``/readyz``)."""
        return len(self._tasks)

    # ------------------------------------------------------------------ the document

    def watch_beside(self, config_path: Path) -> None:
        """Watch ``SHADOW_KEY`` in the directory of the router's config file."""
        self.path = config_path.parent / SHADOW_KEY
        self.check_file()

    def check_file(self) -> bool | None:
        """Load the shadow document if it changed: True loaded (or removed), False kept out,
        None unchanged."""
        if self.path is None:
            return None
        try:
            data: bytes | None = self.path.read_bytes()
        except FileNotFoundError:
            data = None
        except OSError as exc:
            data = f"unreadable: {exc}".encode()
        digest = None if data is None else sha256_hex(data)
        if digest == self._digest:
            return None
        self._digest = digest
        if data is None:
            if self.active is not None:
                log.info("shadow stage ended: %s removed", self.path)
            self._set(None)
            return True
        try:
            settings = parse_shadow_bytes(data, str(self.path))
        except ConfigError as exc:
            return self._reject("invalid", str(exc))
        return self.apply(settings)

    def apply(self, settings: ShadowSettings | None) -> bool:
        """Shadow ``settings`` from now on (``None``: stop); False when kept out."""
        if settings is None:
            self._set(None)
            return True
        policy = settings.candidate.policy.label
        if policy != self._live_policy():
            return self._reject(
                "other_policy",
                f"the shadow candidate is for policy {policy}, this router serves "
                f"{self._live_policy()}",
            )
        missing = missing_key_envs(settings.candidate, self.env)
        if settings.judge_config is not None:
            missing = [*missing, *missing_key_envs(settings.judge_config, self.env)]
        if missing:
            return self._reject(
                "missing_key_env",
                f"shadow candidate {settings.candidate_hash} names API key variables this pod "
                f"does not have ({', '.join(missing)})",
            )
        runtime = build_runtime(settings.candidate, self.env)
        runtime.response_cache = None  # a shadow answer is never cached nor served from cache
        judge = None
        if settings.judge_config is not None:
            judge = build_runtime(settings.judge_config, self.env)
            judge.response_cache = None
        self._set(_Active(settings, runtime, judge))
        log.info(
            "shadowing candidate %s on routes %s at sample rate %s",
            settings.candidate_hash,
            ", ".join(settings.routes),
            settings.sample_rate,
        )
        return True

    def _set(self, active: _Active | None) -> None:
        self.active = active
        if self._info_labels is not None:
            self.metrics.info.remove(*self._info_labels)
            self._info_labels = None
        if active is not None:
            labels = (self._live_policy(), active.settings.candidate_hash, self.start_id)
            self.metrics.info.labels(*labels).set(1)
            self._info_labels = labels

    def _reject(self, reason: str, message: str) -> bool:
        log.error("shadow document rejected, keeping the previous one: %s", message)
        self.metrics.rejections.labels(reason).inc()
        return False

    async def watch(self, interval: float) -> None:
        await poll_forever(self.check_file, interval, "shadow document")

    # ------------------------------------------------------------------ sampling

    def shadows(self, route: str) -> bool:
        """Whether ``route``'s requests may be sampled now (a stream then keeps its final
        message for the comparison)."""
        active = self.active
        return active is not None and route in active.settings.routes

    def offer(
        self,
        live: Exchange,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        answer: Mapping[str, Any] | bytes,
    ) -> None:
        """A live request answered in full: maybe run it on the candidate, in the background.

        Never awaits and never raises: the client's response is not touched.
        """
        try:
            self._offer(live, body, headers, answer)
        except Exception:  # a shadow bug must never reach a client
            log.exception("shadow sampling failed")

    def _offer(
        self,
        live: Exchange,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        answer: Mapping[str, Any] | bytes,
    ) -> None:
        active = self.active
        if active is None or self._path is None:
            return
        route = active.settings.routes.get(live.route.name)
        if route is None:
            return
        policy = live.runtime.policy
        if _opted_out(headers.get(NO_SHADOW_HEADER)):
            self._skip(policy, route.name, "client_opt_out")
            return
        if live.degraded:
            # A spend budget served a cheaper route: agreeing with that answer says nothing
            # of agreeing with production.
            self._skip(policy, route.name, "live_degraded")
            return
        if self._rng() >= active.settings.sample_rate:
            return
        message = _message(answer)
        if message is None or not _comparable(route, message):
            self._skip(policy, route.name, "live_not_comparable")
            return
        if self._in_flight >= active.slots:
            self._skip(policy, route.name, "busy")
            return
        if self._spent_this_hour() >= active.settings.spend_limit_per_hour_usd:
            self._skip(policy, route.name, "spend_limit")
            return
        self._in_flight += 1
        self.metrics.in_flight.inc()
        task = asyncio.get_running_loop().create_task(
            self._sample(active, route, policy, dict(body), dict(live.forwarded), message)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _skip(self, policy: str, route: str, reason: str) -> None:
        self.metrics.skipped.labels(policy, route, reason).inc()

    def _spent_this_hour(self) -> Decimal:
        hour = int(self._clock() // 3600)
        if hour != self._hour:
            self._hour, self._hour_spend = hour, Decimal(0)
        return self._hour_spend

    async def _sample(
        self,
        active: _Active,
        route: ShadowRoute,
        policy: str,
        body: dict[str, Any],
        forwarded: dict[str, str],
        live: Mapping[str, Any],
    ) -> None:
        assert self._path is not None
        candidate = active.settings.candidate
        ex = Exchange(
            runtime=active.runtime,
            route=candidate.routes_by_name[route.name],
            body=body,
            forwarded=forwarded,
        )
        judged: list[Exchange] = []  # the judge's call, when a judge compares
        result = "failed"
        try:
            await asyncio.sleep(0)  # let the client's response go out first
            async with asyncio.timeout(active.settings.timeout_seconds):
                answer = await self._path.run(ex)
                if route.comparison == "judge":
                    result = await self._judged(active, route, body, live, answer.message, judged)
                else:
                    result = "agree" if _agree(route, live, answer.message) else "disagree"
        except (TimeoutError, RouterError, UpstreamFailure, aiohttp.ClientError):
            result = "failed"
        except asyncio.CancelledError:
            result = ""  # the router stops: nothing measured, nothing counted
            raise
        except Exception:
            log.exception("shadow call failed unexpectedly")
        finally:
            self._in_flight -= 1
            self.metrics.in_flight.dec()
            self._spent_this_hour()
            cost = ex.cost + sum((j.cost for j in judged), Decimal(0))
            self._hour_spend += cost
            labels = (policy, route.name, candidate.hash)
            self.metrics.cost.labels(*labels).inc(float(cost))
            if result:
                self.metrics.samples.labels(*labels, result).inc()
                self.metrics.latency.labels(policy, route.name).observe(
                    time.perf_counter() - ex.started
                )

    async def _judged(
        self,
        active: _Active,
        route: ShadowRoute,
        body: Mapping[str, Any],
        live: Mapping[str, Any],
        candidate: Mapping[str, Any],
        judged: list[Exchange],
    ) -> str:
        """The eval's judge grader on the candidate's answer, production's as the reference:
        agree when it passes, disagree when it fails, failed without a usable verdict."""
        # The eval's judge grader. Imported here: ``evals.graders`` reads the router's answer
        # helpers, so importing it while the router package loads would be circular.
        from tierwise.evals.dataset import Item
        from tierwise.evals.graders import GraderSpec, judge_answer

        assert self._path is not None and active.judge is not None and route.judge_tier
        judge = active.judge
        judge_route = judge.config.routes_by_name[f"{JUDGE_ROUTE_PREFIX}{route.judge_tier}"]

        async def ask(request: dict[str, Any]) -> Mapping[str, Any]:
            ex = Exchange(runtime=judge, route=judge_route, body=request, forwarded={})
            judged.append(ex)
            return (await self._path.run(ex)).message  # type: ignore[union-attr]

        messages = body.get("messages")
        item = Item(
            id="shadow",
            line=0,
            messages=tuple(messages) if isinstance(messages, list) else (),
            system=body.get("system"),
            expected=answer_text(live),
        )
        spec = GraderSpec(type="judge", tier=route.judge_tier, criteria=route.criteria)
        verdict = await judge_answer(spec, item, candidate, ask)
        if verdict.correct is None:
            return "failed"
        return "agree" if verdict.correct else "disagree"


def _ignore_failure(_tier: str, _kind: str) -> None:
    """Shadow upstream failures count as failed samples, not as production's errors."""


def _ignore_retry(_tier: str) -> None:
    """Shadow retries are not production's."""


def _opted_out(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ("", "0", "false", "no")


def _message(answer: Mapping[str, Any] | bytes) -> Mapping[str, Any] | None:
    if isinstance(answer, Mapping):
        return answer
    try:
        value = json.loads(answer)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, Mapping) else None


def _comparable(route: ShadowRoute, live: Mapping[str, Any]) -> bool:
    """Whether production's answer can be compared at all (graderField: it has the field)."""
    if route.comparison == "graderField":
        return answer_field(live, route.field)[0]
    return True


def _agree(route: ShadowRoute, live: Mapping[str, Any], candidate: Mapping[str, Any]) -> bool:
    if route.comparison == "graderField":
        found, value = answer_field(candidate, route.field)
        return found and value == answer_field(live, route.field)[1]
    return answer_text(candidate).strip() == answer_text(live).strip()
