"""Latency and cost of the example triage route: all-strong, cascade, cascade with hedging.

Processes, all on 127.0.0.1: the model emulator with its realistic latency model (time to
first token, prefill and output speed per model; not ``--zero-latency``) answering the
labelled support emails at each model's accuracy; one ``tierwise router`` per variant, on
the router config ``tierwise render`` makes of ``examples/`` (``--endpoint`` to the
emulator); and this script replaying the emails with the official ``anthropic`` SDK.

Variants of the ``triage`` route (response cache off, so every email reaches a model):

* all-strong: Sonnet 5.5 only;
* cascade: Haiku 5.5, escalating to Sonnet 5.5 when unsure (the example as written);
* cascade + hedging: the same with ``hedgeAfter`` on the Haiku step.

    .venv/bin/python bench/triage_hedging.py                    # 200 emails x 3 variants
    .venv/bin/python bench/triage_hedging.py --hedge-after 0.5 --repeat 2

Prints a Markdown table (p50/p95 latency, cost, cost relative to all-strong) and JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXAMPLES = ROOT / "examples" / "support-triage"
DATASET = EXAMPLES / "support-triage" / "dataset.jsonl"
KEY = "bench-key"
SYSTEM = "You triage the support inbox of a software company."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ok(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {url}")


@contextlib.contextmanager
def process(argv: list[str], env: dict[str, str] | None = None) -> Iterator[None]:
    proc = subprocess.Popen(
        argv,
        env=env or dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def variants(emulator: str, hedge_after: str) -> dict[str, dict[str, Any]]:
    from tierwise.api import load_manifests
    from tierwise.render import render_all, with_endpoint

    [(_, result)] = render_all(load_manifests([str(EXAMPLES)]))
    base = with_endpoint(result.config, emulator).to_document()  # type: ignore[arg-type]
    base["cache"]["responseCache"]["enabled"] = False
    out = {}
    for name in ("all-strong", "cascade", "cascade + hedging"):
        doc = json.loads(json.dumps(base))
        triage = next(r for r in doc["routes"] if r["name"] == "triage")
        if name == "all-strong":
            triage["steps"] = [triage["steps"][-1]]
        elif name == "cascade + hedging":
            triage["steps"][0]["hedgeAfterSeconds"] = hedge_after
        out[name] = doc
    return out


async def replay(base_url: str, emails: list[str], concurrency: int) -> list[dict[str, Any]]:
    client = anthropic.AsyncAnthropic(base_url=base_url, api_key="app-key", max_retries=0)
    gate = asyncio.Semaphore(concurrency)

    async def one(text: str) -> dict[str, Any]:
        async with gate:
            started = time.perf_counter()
            raw = await client.messages.with_raw_response.create(
                model="tierwise/triage",
                max_tokens=1024,
                system=SYSTEM,
                messages=[{"role": "user", "content": text}],
            )
            await raw.parse()
            return {
                "seconds": time.perf_counter() - started,
                "cost": Decimal(raw.headers["x-tierwise-cost-usd"]),
                "tier": raw.headers["x-tierwise-tier"],
            }

    try:
        return await asyncio.gather(*(one(e) for e in emails))
    finally:
        await client.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def run_variant(
    name: str, doc: dict[str, Any], emulator: str, emails: list[str], concurrency: int
) -> dict[str, Any]:
    from tierwise.routerconfig import dump_document

    urllib.request.urlopen(
        urllib.request.Request(f"{emulator}/_emulator/reset", data=b"{}", method="POST")
    ).close()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "router.json"
        from tierwise.routerconfig import parse

        config.write_text(dump_document(parse(doc).with_hash().to_document()))
        port, metrics_port = free_port(), free_port()
        env = {**os.environ}
        env.update({t["apiKeyEnv"]: KEY for t in doc["tiers"].values() if t["apiKeyEnv"]})
        argv = [str(BIN / "tierwise"), "router", "--config", str(config)]
        argv += ["--port", str(port), "--metrics-port", str(metrics_port)]
        with process(argv, env):
            wait_ok(f"http://127.0.0.1:{metrics_port}/readyz")
            started = time.perf_counter()
            results = asyncio.run(replay(f"http://127.0.0.1:{port}", emails, concurrency))
            wall = time.perf_counter() - started
    seconds = [r["seconds"] for r in results]
    return {
        "variant": name,
        "requests": len(results),
        "p50_ms": round(statistics.median(seconds) * 1000),
        "p95_ms": round(percentile(seconds, 0.95) * 1000),
        "cost_usd": str(sum((r["cost"] for r in results), Decimal(0))),
        "answered_by": dict(Counter(r["tier"] for r in results)),
        "wall_seconds": round(wall, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hedge-after", default="0.45", help="seconds (default 0.45)")
    parser.add_argument("--concurrency", type=int, default=8, help="default 8")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each variant")
    parser.add_argument("--limit", type=int, default=200, help="emails (default all 200)")
    args = parser.parse_args()
    lines = [line for line in DATASET.read_text().splitlines() if line.strip()]
    emails = [json.loads(line)["input"] for line in lines[: args.limit]]
    port = free_port()
    emulator = f"http://127.0.0.1:{port}"
    rows = []
    with process(
        [str(BIN / "tierwise"), "emulator", "--port", str(port), "--dataset", str(DATASET)]
    ):
        wait_ok(f"{emulator}/_emulator/health")
        docs = variants(emulator, args.hedge_after)
        for _ in range(args.repeat):
            for name, doc in docs.items():
                rows.append(run_variant(name, doc, emulator, emails, args.concurrency))
    strong = Decimal(next(r["cost_usd"] for r in rows if r["variant"] == "all-strong"))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; hedgeAfter {args.hedge_after}s; "
        f"{len(emails)} emails, concurrency {args.concurrency}\n"
    )
    print("| variant | p50 | p95 | cost | vs all-strong | answered by |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = Decimal(r["cost_usd"]) / strong if strong else Decimal(0)
        by = ", ".join(f"{t} {n}" for t, n in sorted(r["answered_by"].items()))
        print(
            f"| {r['variant']} | {r['p50_ms']} ms | {r['p95_ms']} ms | "
            f"${Decimal(r['cost_usd']):.4f} | {ratio:.2f}x | {by} |"
        )
    print("\n" + json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
