"""The example eval's wall time at several concurrencies, and its cost at list and batch price.

Runs `tierwise eval`'s code path (``tierwise.evals``) on ``examples/``: 200 labelled support
emails through the candidate (the triage cascade) and the baseline (the strongest tier), both
answered by the in-process model emulator with its realistic latency profiles (time to first
token plus output at each model's token rate). Wall time is measured per concurrency; cost
comes from the same token counts priced at list and at batch prices (the emulator answers
deterministically, so every run uses the same tokens).

    .venv/bin/python bench/eval_wall_time.py                     # concurrency 1, 8, 32
    .venv/bin/python bench/eval_wall_time.py --concurrency 8 --latency-scale 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

from tierwise.evals.local import emulator_env, local_evals, maybe_emulator, point_at
from tierwise.evals.plan import strongest_tier_config
from tierwise.evals.runner import EvalReport, run_eval

ROOT = Path(__file__).resolve().parents[1]


async def one_run(
    concurrency: int, latency_scale: float, batch_prices: bool
) -> tuple[float, EvalReport]:
    (found,) = local_evals([str(ROOT / "examples" / "support-triage")])
    plan = replace(found.plan, concurrency=concurrency, timeout_seconds=3600)
    datasets = list(found.datasets.values())
    async with maybe_emulator(True, datasets, latency_scale, 0) as url:
        assert url is not None
        candidate = point_at(found.candidate, url)
        baseline = point_at(strongest_tier_config(found.candidate), url)
        env = emulator_env(candidate, baseline)
        started = time.perf_counter()
        report = await run_eval(
            plan, candidate, baseline, found.datasets, env,
            baseline_kind="strongest", batch_prices=batch_prices,
        )  # fmt: skip
        return time.perf_counter() - started, report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--concurrency", type=int, action="append", help="repeatable (default 1, 8, 32)"
    )
    parser.add_argument(
        "--latency-scale",
        type=float,
        default=1.0,
        help="emulator latency multiple (default 1: realistic)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    levels = args.concurrency or [1, 8, 32]
    rows = []
    for level in levels:
        seconds, report = asyncio.run(one_run(level, args.latency_scale, False))
        route = report.routes[0]
        rows.append(
            {
                "concurrency": level,
                "seconds": round(seconds, 2),
                "decision": report.decision.outcome,
                "quality": route.measured().quality.format(),
                "p50": round(route.candidate.latency(0.5) or 0, 3),
                "p95": round(route.candidate.latency(0.95) or 0, 3),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    _, listed = asyncio.run(one_run(32, 0.0, False))
    _, batched = asyncio.run(one_run(32, 0.0, True))
    costs = {}
    for label, report in (("list", listed), ("batch", batched)):
        route = report.routes[0]
        costs[label] = {
            "candidate": str(route.candidate.total_cost),
            "baseline": str(route.baseline.total_cost if route.baseline else 0),
            "candidatePerItem": f"{route.candidate.cost_per_item:.6f}",
        }
    result = {
        "items": len(listed.routes[0].candidate.results),
        "latencyScale": args.latency_scale,
        "runs": rows,
        "cost": costs,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}",
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
