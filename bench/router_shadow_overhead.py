"""What the shadow stage adds to the client's latency: 0%, 10% and 100% sampling.

Processes on 127.0.0.1: the emulator (``tierwise emulator --zero-latency``); three routers
serving the same single-step route to it, each from its own directory, one without a shadow
document (0%), one shadowing a candidate (the same route on another model of the emulator)
at sample rate 0.1 and one at 1.0; and this script, the load generator (``router_overhead``'s
aiohttp client). Each round sends the same number of requests straight to the emulator and
through each router in turn, at concurrency 1 (latency) and then at concurrency 16, so load
from elsewhere hits every path alike. "Added" is a router's percentile minus the direct one,
the median over the rounds. The shadow calls run after each answer is sent, so at 100% they
compete for the same two cores as the next request: that competition is what is measured.

    .venv/bin/python bench/router_shadow_overhead.py           # ~ 3 x 4 x 2 x 1500 requests
    .venv/bin/python bench/router_shadow_overhead.py --quick   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

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

CANDIDATE_MODEL = "claude-sonnet-4-6"
RATES = {"0%": None, "10%": 0.1, "100%": 1.0}


def shadow_document(emulator_url: str, rate: float) -> dict[str, Any]:
    from tierwise.pricing import catalog_prices
    from tierwise.routerconfig import content_hash
    from tierwise.routerconfig.shadow import SHADOW_SCHEMA_VERSION

    candidate = router_config(emulator_url)
    candidate.pop("hash")
    tier = candidate["tiers"]["haiku"]
    tier["model"] = CANDIDATE_MODEL
    tier["pricing"] = catalog_prices(CANDIDATE_MODEL).to_document()  # type: ignore[union-attr]
    candidate["hash"] = content_hash(candidate)
    return {
        "schemaVersion": SHADOW_SCHEMA_VERSION,
        "sampleRate": rate,
        "maxConcurrency": 16,
        "timeoutSeconds": 30,
        "spendLimitPerHourUSD": "1000",
        "routes": [{"name": "bench", "comparison": "exactText"}],
        "config": candidate,
    }


def shadow_samples(metrics_url: str) -> int:
    with urllib.request.urlopen(metrics_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("tierwise_shadow_samples_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def measure(
    args: argparse.Namespace, emulator_url: str, routers: dict[str, str]
) -> dict[str, Any]:
    direct = f"{emulator_url}/v1/messages"
    raw: dict[str, list[dict[str, float]]] = {}
    for concurrency in (1, 16):
        for name, url in {"direct": direct, **routers}.items():
            await run_phase(name, url, DIRECT_BODY if name == "direct" else BODY, concurrency, 200)
        for _ in range(args.rounds):
            for name, url in {"direct": direct, **routers}.items():
                body = DIRECT_BODY if name == "direct" else BODY
                result = await run_phase(name, url, body, concurrency, args.requests)
                raw.setdefault(f"{name}@{concurrency}", []).append(
                    {"p50": result.p50_ms, "p99": result.p99_ms, "errors": result.errors}
                )
    return raw


def summarize(raw: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for concurrency in (1, 16):
        base = raw[f"direct@{concurrency}"]
        for name in RATES:
            rounds = raw[f"{name}@{concurrency}"]
            out[f"{name}@{concurrency}"] = {
                key: statistics.median(r[key] - b[key] for r, b in zip(rounds, base, strict=True))
                for key in ("p50", "p99")
            } | {"errors": sum(r["errors"] for r in rounds)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1500)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests = 1, 200
    emulator_port = free_port()
    emulator_url = f"http://{HOST}:{emulator_port}"
    info = machine() | {"load_before": f"{os.getloadavg()[0]:.2f}"}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        stack.enter_context(
            process(
                [
                    sys.executable, "-m", "tierwise.cli", "emulator", "--zero-latency",
                    "--host", HOST, "--port", str(emulator_port), "--log-level", "WARNING",
                ],
                emulator_url + "/_emulator/health",
            )
        )  # fmt: skip
        routers: dict[str, str] = {}
        metrics: dict[str, str] = {}
        for name, rate in RATES.items():
            directory = Path(tmp) / name.rstrip("%")
            directory.mkdir()
            config = directory / "router-config.json"
            config.write_text(json.dumps(router_config(emulator_url)))
            if rate is not None:
                shadow = shadow_document(emulator_url, rate)
                (directory / "shadow-config.json").write_text(json.dumps(shadow))
            port, metrics_port = free_port(), free_port()
            stack.enter_context(
                process(
                    [
                        sys.executable, "-m", "tierwise.cli", "router", "--config", str(config),
                        "--host", HOST, "--port", str(port), "--metrics-host", HOST,
                        "--metrics-port", str(metrics_port), "--log-level", "warning",
                    ],
                    f"http://{HOST}:{metrics_port}/readyz",
                    env={TIER_KEY_ENV: TIER_KEY},
                )
            )  # fmt: skip
            routers[name] = f"http://{HOST}:{port}/v1/messages"
            metrics[name] = f"http://{HOST}:{metrics_port}"
        raw = asyncio.run(measure(args, emulator_url, routers))
        samples = {name: shadow_samples(url) for name, url in metrics.items()}
    info["load_after"] = f"{os.getloadavg()[0]:.2f}"
    summary = summarize(raw)
    print(json.dumps({"machine": info, "samples": samples, "added_ms": summary}, indent=2))
    print(
        "\n| sampling | shadow samples | added p50, c=1 | added p99, c=1 | added p50, c=16 "
        "| added p99, c=16 | errors |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in RATES:
        one, many = summary[f"{name}@1"], summary[f"{name}@16"]
        print(
            f"| {name} | {samples[name]} | {one['p50']:.2f} ms | {one['p99']:.2f} ms | "
            f"{many['p50']:.2f} ms | {many['p99']:.2f} ms | {int(one['errors'] + many['errors'])} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
