"""The router's added latency with a Redis-shared spend budget on vs off.

Processes on 127.0.0.1: the emulator (``tierwise emulator --zero-latency``), a
``redis-server`` (append-only, fsync every second), and two ``tierwise router`` processes
with the same single-step route: **off** without budgets, **on** with one policy budget
(alert/degrade/reject thresholds, limit far above the run's spend) kept in the Redis. Each
round sends the same number of requests straight to the emulator and through each router,
in turn, at concurrency 1 (latency); the figures are the medians over rounds. "Added" is a
router's percentile minus the direct one; "budget" is on minus off: the reservation and the
settlement (two Lua scripts on Redis) per request.

    .venv/bin/python bench/budget_overhead.py            # 5 rounds x 2,000 requests
    .venv/bin/python bench/budget_overhead.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prometheus_client.parser import text_string_to_metric_families
from router_overhead import (
    BODY,
    DIRECT_BODY,
    HOST,
    TIER_KEY,
    TIER_KEY_ENV,
    free_port,
    machine,
    process,
    router_config,
    run_phase,
)

from tierwise.routerconfig import content_hash

BUDGET = {
    "name": "bench",
    "limitUSD": "1000000",
    "window": {"period": "month", "seconds": None},
    "actions": [
        {"atPercent": 80, "action": "alert"},
        {"atPercent": 90, "action": "degrade", "maxTokens": 8},
        {"atPercent": 100, "action": "reject"},
    ],
    "scope": "policy",
    "onRedisUnavailable": "countLocally",
}


def with_budget(doc: dict[str, Any], redis_url: str) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    doc.pop("hash")
    doc["cache"]["responseCache"].update(backend="redis", redisURL=redis_url)
    doc["budgets"] = [BUDGET]
    doc["hash"] = content_hash(doc)
    return doc


def budget_figures(metrics_url: str) -> dict[str, float]:
    """What the "on" router's budget saw: proof it was counting, in Redis."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    wanted = (
        "tierwise_budget_shared",
        "tierwise_budget_spend_usd",
        "tierwise_budget_redis_errors_total",
    )
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in wanted
    }


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0]


async def rounds(urls: dict[str, str], count: int, requests: int) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, list[float]]] = {n: {"p50": [], "p99": []} for n in urls}
    for name, url in urls.items():  # warm-up
        await run_phase("warm", url, DIRECT_BODY if name == "direct" else BODY, 1, 300)
    for _ in range(count):
        for name, url in urls.items():
            result = await run_phase(
                name, url, DIRECT_BODY if name == "direct" else BODY, 1, requests
            )
            assert result.errors == 0, f"{name}: {result.errors} errors"
            figures[name]["p50"].append(result.p50_ms)
            figures[name]["p99"].append(result.p99_ms)
    return {n: {k: statistics.median(v) for k, v in f.items()} for n, f in figures.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count, requests = (2, 200) if args.quick else (5, 2000)
    redis_server = shutil.which("redis-server")
    assert redis_server, "redis-server is not installed: make redis"
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        emu_port, redis_port = free_port(), free_port()
        emulator = f"http://{HOST}:{emu_port}"
        redis_url = f"redis://{HOST}:{redis_port}/0"
        redis_proc = subprocess.Popen(
            [
                redis_server,
                "--port",
                str(redis_port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--dir",
                str(work),
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            emu_args = [
                py,
                "-m",
                "tierwise.cli",
                "emulator",
                "--zero-latency",
                "--host",
                HOST,
                "--port",
                str(emu_port),
                "--log-level",
                "WARNING",
            ]
            with process(emu_args, emulator + "/_emulator/health"):
                urls = {"direct": emulator + "/v1/messages"}
                configs = {
                    "off": router_config(emulator),
                    "on": with_budget(router_config(emulator), redis_url),
                }
                stack = []
                metrics_urls: dict[str, str] = {}
                for name, doc in configs.items():
                    path = work / f"{name}.json"
                    path.write_text(json.dumps(doc))
                    port, mport = free_port(), free_port()
                    router_args = [
                        py,
                        "-m",
                        "tierwise.cli",
                        "router",
                        "--config",
                        str(path),
                        "--port",
                        str(port),
                        "--metrics-host",
                        HOST,
                        "--metrics-port",
                        str(mport),
                    ]
                    ctx = process(
                        router_args, f"http://{HOST}:{mport}/readyz", {TIER_KEY_ENV: TIER_KEY}
                    )
                    ctx.__enter__()
                    stack.append(ctx)
                    urls[name] = f"http://{HOST}:{port}/v1/messages"
                    metrics_urls[name] = f"http://{HOST}:{mport}/metrics"
                try:
                    before = loadavg()
                    figures = asyncio.run(rounds(urls, count, requests))
                    after = loadavg()
                    budget = budget_figures(metrics_urls["on"])
                finally:
                    for ctx in reversed(stack):
                        ctx.__exit__(None, None, None)
        finally:
            redis_proc.terminate()
            redis_proc.wait(10)
    direct = figures["direct"]
    out = {
        "machine": machine(),
        "loadavg": {"before": before, "after": after},
        "rounds": count,
        "requestsPerRound": requests,
        "p50_ms": {n: round(f["p50"], 3) for n, f in figures.items()},
        "p99_ms": {n: round(f["p99"], 3) for n, f in figures.items()},
        "added_p50_ms": {n: round(figures[n]["p50"] - direct["p50"], 3) for n in ("off", "on")},
        "budget_on": budget,
        "added_p99_ms": {n: round(figures[n]["p99"] - direct["p99"], 3) for n in ("off", "on")},
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
