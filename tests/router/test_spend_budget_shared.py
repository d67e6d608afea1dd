"""One spend budget shared by three router processes through a real redis-server.

Driven concurrently by the official SDK (non-streaming, streaming, response-cache hits,
batches) against the emulator. What is proved: the spend Redis records is exactly the sum
of every ``x-tierwise-cost-usd`` the clients were told; degrade holds from its threshold
on, across processes; reject answers 429 with ``retry-after``; the overshoot stays within
the documented bound (one request's worst case); and through faults (Redis killed and
restarted, a router SIGKILLed mid-request, a window boundary crossed mid-run) nothing is
counted twice and nothing is lost. The figures of the run are printed (``-s``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest
import redis
from router_builder import tier_env
from router_helpers import (
    free_port,
    metric,
    metrics,
    router_process,
    sdk,
    sse_comments,
    until_ended,
    wait_for,
)
from spend_helpers import budget, budget_config

from tierwise.pricing.spend import Window, from_units, to_units
from tierwise.router.spend_budget import hold_seconds_for, worst_case_usd
from tierwise.routerconfig import parse

pytestmark = pytest.mark.timeout(240)

POLICY = "support/email-triage"
LIMIT = Decimal("0.06")
LADDER = (
    {"atPercent": 50, "action": "alert"},
    {"atPercent": 70, "action": "degrade", "steps": 1},
    {"atPercent": 100, "action": "reject"},
)


class RedisServer:
    """A redis-server with an append-only file synced on every write, so that spend
    survives a SIGKILL and a restart (docs/budgets.md asks the same of the budget Redis)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run `make redis`", pytrace=False)
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            str(self.workdir),
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._up, timeout=10, interval=0.05)

    def _up(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return redis.Redis(port=self.port).ping()
        except (OSError, redis.RedisError):
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.workdir.mkdir()
    server.start()
    yield server
    server.stop()


def recorded(server: RedisServer, budget_name: str = "shared") -> tuple[Decimal, Decimal]:
    """(settled spend over every window, reservations still held) as Redis has them."""
    client = redis.Redis(port=server.port)
    base = f"tierwise:budget:{POLICY}:{budget_name}:all:"
    spent = sum(int(client.get(k) or 0) for k in client.scan_iter(f"{base}s:*"))
    held = sum(int(v.split(b":")[0]) for v in client.hvals(f"{base}held"))
    return from_units(spent), from_units(held)


@dataclass
class Ledger:
    """What the clients were told: every cost header, and when answers were degraded."""

    costs: list[Decimal] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)
    # Batch costs that landed after the first refusal: batches are admitted below the
    # reject threshold and counted when their results are read (docs/budgets.md).
    late_batches: Decimal = Decimal(0)
    refused: list[anthropic.RateLimitError] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, cost: Decimal) -> None:
        with self.lock:
            self.costs.append(cost)
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            if kind == "batch" and self.refused:
                self.late_batches += cost

    @property
    def total(self) -> Decimal:
        return sum(self.costs, Decimal(0))


MODEL = "tierwise/chat"
CACHED = [{"role": "user", "content": "What are your opening hours?"}]


def ask(n: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"Ticket {n}: the invoice total is wrong"}]


def one_request(client: anthropic.Anthropic, kind: str, n: int, ledger: Ledger) -> None:
    if kind == "stream":
        with client.messages.with_streaming_response.create(
            model=MODEL, max_tokens=64, messages=ask(n), stream=True
        ) as response:
            raw = response.read()
        [cost] = [c.split(": ", 1)[1] for c in sse_comments(raw) if "cost-usd" in c]
        ledger.add(kind, Decimal(cost))
    elif kind == "batch":
        batch = client.messages.batches.create(
            requests=[
                {
                    "custom_id": f"b{n}-{i}",
                    "params": {"model": MODEL, "max_tokens": 64, "messages": ask(n * 10 + i)},
                }
                for i in range(3)
            ]
        )
        until_ended(client, batch.id)
        for _ in range(2):  # read twice: counted once
            results = client.messages.batches.with_raw_response.results(batch.id)
            cost = Decimal(results.headers["x-tierwise-cost-usd"])
        ledger.add(kind, cost)
    else:
        messages = CACHED if kind == "cached" else ask(n)
        response = client.messages.with_raw_response.create(
            model=MODEL,
            max_tokens=64,
            messages=messages,
            extra_headers={"x-tierwise-cache": "allow" if kind == "cached" else "bypass"},
        )
        ledger.add(kind, Decimal(response.headers["x-tierwise-cost-usd"]))


def drive(
    clients: list[anthropic.Anthropic],
    ledger: Ledger,
    *,
    workers: int = 6,
    until_refused: int = 12,
    stop: threading.Event | None = None,
) -> None:
    """Concurrent clients over every router and kind until the budget refuses enough."""
    counter = itertools.count()
    kinds = ["plain", "stream", "cached", "plain", "stream", "batch"]

    def worker() -> None:
        while len(ledger.refused) < until_refused and not (stop and stop.is_set()):
            n = next(counter)
            try:
                one_request(clients[n % len(clients)], kinds[n % len(kinds)], n, ledger)
            except anthropic.RateLimitError as error:
                with ledger.lock:
                    ledger.refused.append(error)
            except Exception as error:  # asserted empty by the tests: nothing unaccounted
                with ledger.lock:
                    ledger.errors.append(error)

    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(worker) for _ in range(workers)]:
            future.result()


@contextlib.contextmanager
def three_routers(document: dict[str, Any], tmp_path: Path) -> Iterator[list[Any]]:
    with contextlib.ExitStack() as stack:
        routers = []
        for i in range(3):
            workdir = tmp_path / f"router-{i}"
            workdir.mkdir()
            env = {**tier_env(), "TIERWISE_BATCH_STATE_DIR": str(workdir / "batches")}
            routers.append(stack.enter_context(router_process(document, workdir, env)))
        yield routers


def settled_everywhere(routers: list[Any]) -> bool:
    return all(
        metric(metrics(r.metrics_url), "tierwise_budget_pending_settlements") == 0 for r in routers
    )


def worst_case(document: dict[str, Any], messages: list[dict[str, Any]]) -> Decimal:
    config = parse(document)
    route = config.routes_by_name["chat"]
    return worst_case_usd(config, route, {"model": MODEL, "max_tokens": 64, "messages": messages})


def test_three_routers_share_one_budget_exactly_degrade_then_reject(emu, redis_server, tmp_path):
    document = budget_config(
        emu.base_url, [budget(str(LIMIT), *LADDER)], redis_url=redis_server.url, cache=True
    )
    bound = worst_case(document, ask(10**6))
    with three_routers(document, tmp_path) as routers:
        clients = [sdk(r) for r in routers]
        # 1. Sequentially, round robin over the three processes: the degrade threshold is one
        # shared figure. Every answer escalates to sonnet below 70% of the limit, none above.
        ledger = Ledger()
        tiers: list[tuple[Decimal, str]] = []
        n = 0
        while ledger.total < LIMIT * Decimal("0.8"):
            response = clients[n % 3].messages.with_raw_response.create(
                model=MODEL,
                max_tokens=64,
                messages=ask(n),
                extra_headers={"x-tierwise-cache": "bypass"},
            )
            tiers.append((ledger.total, response.headers["x-tierwise-tier"]))
            ledger.add("plain", Decimal(response.headers["x-tierwise-cost-usd"]))
            n += 1
        threshold = LIMIT * Decimal("0.7")
        assert {t for before, t in tiers if before < threshold} == {"sonnet"}
        assert {t for before, t in tiers if before >= threshold} == {"haiku"}
        # 2. Concurrently, every kind, until the budget refuses.
        drive(clients, ledger)
        wait_for(lambda: settled_everywhere(routers), timeout=10)
        spent, held = recorded(redis_server)
        refusal = ledger.refused[0]
        samples = [metrics(r.metrics_url) for r in routers]
    assert held == 0
    assert spent == ledger.total  # exactly: integers of picodollars, nothing rounded
    assert refusal.status_code == 429 and refusal.body["error"]["type"] == "rate_limit_error"
    retry_after = int(refusal.response.headers["retry-after"])
    now = datetime.now(UTC)
    assert abs(retry_after - (Window("day").reset(now) - now).total_seconds()) <= 5
    overshoot = spent - LIMIT
    assert overshoot <= bound + ledger.late_batches, (overshoot, bound, ledger.late_batches)
    assert set(ledger.kinds) == {"plain", "stream", "cached", "batch"}
    assert all(metric(s, "tierwise_budget_shared", budget="shared") == 1 for s in samples)
    assert sum(metric(s, "tierwise_budget_degraded_total") for s in samples) > 0
    assert sum(metric(s, "tierwise_budget_refused_total", reason="limit") for s in samples) > 0
    print(
        f"\nshared budget run: limit {LIMIT} USD, recorded {spent} USD = sum of "
        f"{len(ledger.costs)} cost headers {ledger.total} USD ({ledger.kinds}); "
        f"{len(ledger.refused)} refusals (429, retry-after {retry_after}s); "
        f"overshoot {overshoot} USD, bound {bound} USD (one request's worst case) + "
        f"{ledger.late_batches} USD of batches read after the first refusal"
    )


def test_redis_killed_and_restarted_mid_run_loses_and_doubles_nothing(emu, redis_server, tmp_path):
    document = budget_config(emu.base_url, [budget("1000")], redis_url=redis_server.url, cache=True)
    with three_routers(document, tmp_path) as routers:
        clients = [sdk(r, timeout=5.0) for r in routers]
        ledger = Ledger()
        stop = threading.Event()
        load = threading.Thread(target=drive, args=(clients, ledger), kwargs={"stop": stop})
        load.start()
        wait_for(lambda: len(ledger.costs) > 20, timeout=30)
        redis_server.kill()
        assert not redis_server._up()  # the outage is real: nothing answers on its port
        during = len(ledger.costs)
        slowest = measure_latency(clients[0], 20, ledger)  # served while Redis is down
        wait_for(lambda: len(ledger.costs) > during + 30, timeout=30)
        redis_server.start()  # same port, same append-only file
        wait_for(lambda: len(ledger.costs) > during + 60, timeout=30)
        stop.set()
        load.join()
        wait_for(lambda: settled_everywhere(routers), timeout=20)
        spent, held = recorded(redis_server)
        # The routers noticed the outage (the counter only grows: read once the run is over).
        noticed = sum(
            metric(metrics(r.metrics_url), "tierwise_budget_redis_errors_total") for r in routers
        )
    assert ledger.errors == []
    assert held == 0
    assert spent == ledger.total
    assert noticed > 0
    assert slowest < 1.0  # never blocked on Redis beyond its bound (0.25 s) for long
    print(
        f"\nRedis outage run: {len(ledger.costs)} answers, recorded {spent} USD = sum of "
        f"headers {ledger.total} USD; slowest answer during the outage {slowest:.3f}s"
    )


def measure_latency(client: anthropic.Anthropic, count: int, ledger: Ledger) -> float:
    slowest = 0.0
    for i in range(count):
        started = time.perf_counter()
        one_request(client, "plain", 10**7 + i, ledger)
        slowest = max(slowest, time.perf_counter() - started)
    return slowest


def test_a_router_sigkilled_mid_request_leaves_its_worst_case_counted_once(
    emu, redis_server, tmp_path
):
    document = budget_config(emu.base_url, [budget("1000")], redis_url=redis_server.url, timeout=2)
    with three_routers(document, tmp_path) as routers:
        clients = [sdk(r) for r in routers]
        ledger = Ledger()
        for n in range(6):
            one_request(clients[n % 3], "plain", n, ledger)
        emu.script("claude-haiku-4-5", [{"first_token_delay": 1.5}])
        victim = threading.Thread(target=_swallow, args=(clients[1], ask(999)))
        victim.start()
        wait_for(lambda: recorded(redis_server)[1] > 0, timeout=5)  # its reservation is held
        os.kill(routers[1].pid, signal.SIGKILL)
        victim.join()
        # Past the reservation's deadline, the next admission counts it at its worst case.
        config = parse(document)
        time.sleep(hold_seconds_for(config, config.routes_by_name["chat"]) + 0.5)
        for n in range(6, 10):
            one_request(clients[(n % 2) * 2], "plain", n, ledger)
        spent, held = recorded(redis_server)
    assert held == 0
    assert spent == ledger.total + worst_case(document, ask(999))
    print(
        f"\nSIGKILL run: recorded {spent} USD = headers {ledger.total} + the killed request's worst case"
    )


def _swallow(client: anthropic.Anthropic, messages: list[dict[str, Any]]) -> None:
    with contextlib.suppress(anthropic.APIError):
        client.messages.create(
            model=MODEL,
            max_tokens=64,
            messages=messages,
            extra_headers={"x-tierwise-cache": "bypass"},
        )


def test_a_window_boundary_crossed_mid_run_counts_each_request_once(emu, redis_server, make_router):
    """Three routers (threads: the clock is injected) cross midnight UTC together mid-run."""
    clock = {"now": datetime(2026, 12, 6, 23, 59, 58, tzinfo=UTC).timestamp()}
    document = budget_config(emu.base_url, [budget("1000")], redis_url=redis_server.url)
    routers = [make_router(document, spend_clock=lambda: clock["now"]) for _ in range(3)]
    clients = [sdk(r) for r in routers]
    ledger = Ledger()
    stop = threading.Event()
    load = threading.Thread(target=drive, args=(clients, ledger), kwargs={"stop": stop})
    load.start()
    wait_for(lambda: len(ledger.costs) > 20, timeout=30)
    clock["now"] += 3  # 2026-12-07T00:00:01Z
    before = len(ledger.costs)
    wait_for(lambda: len(ledger.costs) > before + 20, timeout=30)
    stop.set()
    load.join()
    wait_for(lambda: settled_everywhere(routers), timeout=10)
    client = redis.Redis(port=redis_server.port)
    base = f"tierwise:budget:{POLICY}:shared:all:s:"
    old = from_units(int(client.get(base + "20261206T00") or 0))
    new = from_units(int(client.get(base + "20261207T00") or 0))
    assert old > 0 and new > 0
    assert old + new == ledger.total
    assert recorded(redis_server)[1] == 0
    assert to_units(ledger.total) == to_units(old) + to_units(new)
