"""Router overhead: the same workload straight to the emulator and through the router.

Three processes, all on 127.0.0.1:

* the emulator (``tierwise emulator --zero-latency``): the upstream, answering at once;
* the router (``tierwise router``): a single-step route to the emulator, no caches, so
  its RSS is its own;
* this script: the load generator (an aiohttp client).

Phases: warm-up, then concurrency 1 (latency: direct vs routed, so "added" is the
router's share) and concurrency 64 (throughput), then a soak to ``--soak-requests``
routed requests sampling the router's RSS along the way. Every loop is bounded by a
request count and a deadline. Then, per request body size (1 MiB, 8 MiB and the maximum
the router accepts, as one long text, plus a body at the JSON structure limit), a fresh
router process serves one request of that size: its peak RSS (VmHWM), and the slowest
``/healthz`` answer while it decodes, are recorded. Results go to stdout as Markdown and JSON.

    .venv/bin/python bench/router_overhead.py            # the full run (~100k requests)
    .venv/bin/python bench/router_overhead.py --quick    # a smoke run
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
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

HOST = "127.0.0.1"
MODEL = "claude-haiku-4-5"
TIER_KEY_ENV = "TIERWISE_TIER_HAIKU_API_KEY"
TIER_KEY = "bench-tier-key"
PHASE_DEADLINE_SECONDS = 600.0
# The router with the optional accelerators hidden: importing them raises ImportError, so
# it runs on the standard library's json and asyncio loop exactly as without them.
PLAIN_LAUNCHER = (
    "import sys; sys.modules['uvloop'] = None; sys.modules['orjson'] = None; "
    "from tierwise.cli import main; sys.exit(main(sys.argv[1:]))"
)

BODY = json.dumps(
    {
        "model": "tierwise/bench",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Classify: my invoice shows a double charge."}],
    }
).encode()
DIRECT_BODY = BODY.replace(b'"tierwise/bench"', f'"{MODEL}"'.encode())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def router_config(emulator_url: str) -> dict[str, Any]:
    from tierwise.pricing import catalog_prices
    from tierwise.routerconfig import SCHEMA_VERSION, content_hash

    prices = catalog_prices(MODEL)
    doc: dict[str, Any] = {
        "schemaVersion": SCHEMA_VERSION,
        "policy": {"namespace": "bench", "name": "overhead"},
        "defaultRoute": "bench",
        "routes": [
            {
                "name": "bench",
                "models": ["tierwise/bench"],
                "mode": "interactive",
                "streamPolicy": "cascade",
                "formatInstruction": None,
                "counterfactualTier": "haiku",
                "steps": [{"tier": "haiku", "maxTokens": 256, "escalateWhen": []}],
            }
        ],
        "tiers": {
            "haiku": {
                "provider": "anthropic",
                "model": MODEL,
                "endpoint": emulator_url,
                "apiKeyEnv": TIER_KEY_ENV,
                "pricing": prices.to_document(),  # type: ignore[union-attr]
                "limits": {"maxOutputTokens": None, "timeoutSeconds": 30, "maxConcurrency": 256},
                "minCacheableTokens": 4096,
            }
        },
        "fallback": None,
        "retry": {"maxAttempts": 1, "initialBackoffSeconds": "0.1", "maxBackoffSeconds": "1"},
        "cache": {
            "profile": None,
            "promptCaching": {"enabled": False, "breakpoints": [], "ttl": "5m"},
            "responseCache": {
                "enabled": False,
                "ttlSeconds": 60,
                "maxEntries": 1,
                "backend": "memory",
                "redisURL": None,
                "allowNonDeterministic": False,
            },
        },
    }
    doc["hash"] = content_hash(doc)
    return doc


@contextlib.contextmanager
def process(
    args: list[str], ready_url: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(ready_url, timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"{args[:4]} did not start: {err}") from None
                time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now (VmRSS) or at its peak so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def big_body(kind: str, size: int) -> bytes:
    """A Messages request of about ``size`` bytes: one long text, or many small values."""
    head = (
        b'{"model": "tierwise/bench", "max_tokens": 16, "messages": [{"role": "user", "content": '
    )
    if kind == "text":
        return head + b'"' + b"x" * (size - len(head) - 4) + b'"}]}'
    # The structure limit: as many tiny objects as the router accepts (each `{"a":1},` has
    # 3 structural bytes), in metadata the emulator ignores.
    from tierwise.routerconfig.sidecar import MAX_JSON_STRUCTURE

    count = MAX_JSON_STRUCTURE // 3 - 100
    return (
        b'{"model": "tierwise/bench", "max_tokens": 16, "metadata": {"user_id": "u", "x": ['
        + b'{"a":1},' * count
        + b'{"a":1}]}, "messages": [{"role": "user", "content": "hi"}]}'
    )


async def probe_while(url: str, task: asyncio.Task[Any]) -> float:
    """The slowest /healthz answer (ms) while ``task`` runs."""
    slowest = 0.0
    async with aiohttp.ClientSession() as session:
        while not task.done():
            started = time.perf_counter()
            async with session.get(url) as response:
                await response.read()
            slowest = max(slowest, (time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.01)
    return slowest


async def one_big_request(
    api: str, health: str, body: bytes, copies: int = 1
) -> tuple[str, float, float]:
    """(statuses, seconds, slowest probe ms) of ``copies`` concurrent requests carrying ``body``."""
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def send() -> int:
            async with session.post(api + "/v1/messages", data=body, headers=headers) as response:
                await response.read()
                return response.status

        async def send_all() -> list[int]:
            return list(await asyncio.gather(*(send() for _ in range(copies))))

        started = time.perf_counter()
        task = asyncio.get_running_loop().create_task(send_all())
        slowest = await probe_while(health, task)
        statuses = await task
        return "/".join(map(str, statuses)), time.perf_counter() - started, slowest


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class PhaseResult:
    name: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    router_cpu_us_per_request: float = 0.0


async def run_phase(
    name: str, url: str, body: bytes, concurrency: int, requests: int
) -> PhaseResult:
    """``requests`` POSTs by ``concurrency`` workers over keep-alive connections."""
    headers = {
        "content-type": "application/json",
        "x-api-key": "client-key",
        "anthropic-version": "2023-06-01",
    }
    latencies: list[float] = []
    errors = 0
    remaining = requests
    deadline = time.monotonic() + PHASE_DEADLINE_SECONDS
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
                latencies.append(time.perf_counter() - started)
                errors += 0 if ok else 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return PhaseResult(
        name,
        concurrency,
        len(latencies),
        errors,
        elapsed,
        len(latencies) / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        statistics.fmean(latencies) * 1000,
    )


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
    }


async def measure(
    args: argparse.Namespace, emulator_url: str, routers: dict[str, tuple[str, int]]
) -> dict[str, Any]:
    """All phases. Router variants and the direct path take turns within each round, so
    a burst of load from elsewhere on the shared CPUs hits them alike."""
    direct = emulator_url + "/v1/messages"
    phases: list[PhaseResult] = []
    await run_phase("warmup", direct, DIRECT_BODY, 8, args.warmup)
    routed: dict[str, int] = {}
    rss: dict[str, list[tuple[int, float]]] = {}
    for name, (url, pid) in routers.items():
        await run_phase("warmup", url + "/v1/messages", BODY, 8, args.warmup)
        routed[name] = args.warmup
        rss[name] = [(args.warmup, rss_mib(pid))]
    for concurrency, count in ((1, args.c1_requests), (64, args.c64_requests)):
        for _ in range(args.rounds):
            phases.append(await run_phase("direct", direct, DIRECT_BODY, concurrency, count))
            for name, (url, pid) in routers.items():
                cpu = cpu_seconds(pid)
                phase = await run_phase(name, url + "/v1/messages", BODY, concurrency, count)
                phase.router_cpu_us_per_request = (cpu_seconds(pid) - cpu) / count * 1e6
                phases.append(phase)
                routed[name] += count
    for name, (_url, pid) in routers.items():
        rss[name].append((routed[name], rss_mib(pid)))
    # Soak: routed requests up to the target total, sampling each router's RSS.
    while any(n < args.soak_requests for n in routed.values()):
        for name, (url, pid) in routers.items():
            step = max(1, (args.soak_requests - args.warmup) // 8)
            batch = min(step, args.soak_requests - routed[name])
            if batch <= 0:
                continue
            phases.append(await run_phase(f"soak-{name}", url + "/v1/messages", BODY, 64, batch))
            routed[name] += batch
            rss[name].append((routed[name], rss_mib(pid)))
    return {"phases": [asdict(r) for r in phases], "rss_mib": rss}


def body_memory(args: argparse.Namespace, config_path: Path, launcher: list[str]) -> list[dict]:
    """Peak RSS of a fresh router serving one request per body size (see the docstring)."""
    from tierwise.routerconfig.sidecar import MAX_BODY_BYTES

    # The largest accepted body: the limit less a little (the limit itself is refused).
    largest = MAX_BODY_BYTES - 4096
    # (kind, size, concurrent copies): the last two are the worst cases under concurrency.
    cases = [
        ("text", 1 << 20, 1),
        ("text", 8 << 20, 1),
        ("text", largest, 1),
        ("structure", 0, 1),
        ("text", largest, 4),
        ("structure", 0, 8),
    ]
    if args.quick:
        cases = [("text", 1 << 20, 1), ("structure", 0, 1), ("text", largest, 4)]
    results = []
    for kind, size, copies in cases:
        body = big_body(kind, size)
        port, metrics_port = free_port(), free_port()
        cmd = [
            *launcher,
            "router",
            "--config",
            str(config_path),
            "--host",
            HOST,
            "--port",
            str(port),
            "--metrics-host",
            HOST,
            "--metrics-port",
            str(metrics_port),
            "--log-level",
            "error",
        ]
        health = f"http://{HOST}:{metrics_port}/healthz"
        with process(
            cmd, f"http://{HOST}:{metrics_port}/readyz", env={TIER_KEY_ENV: TIER_KEY}
        ) as p:
            idle = rss_mib(p.pid)
            status, seconds, slowest = asyncio.run(
                one_big_request(f"http://{HOST}:{port}", health, body, copies)
            )
            peak = rss_mib(p.pid, "VmHWM")
            after = rss_mib(p.pid)
        results.append(
            {
                "kind": kind if copies == 1 else f"{kind} x{copies} at once",
                "after_mib": after,
                "body_mib": len(body) / 2**20,
                "status": status,
                "idle_mib": idle,
                "peak_mib": peak,
                "seconds": seconds,
                "slowest_probe_ms": slowest,
            }
        )
    return results


def summarize(raw: dict[str, Any], variants: list[str]) -> dict[str, Any]:
    def median(name: str, concurrency: int, key: str) -> float:
        values = [
            p[key] for p in raw["phases"] if p["name"] == name and p["concurrency"] == concurrency
        ]
        # The median of the rounds: robust to one round disturbed by the shared CPUs.
        return statistics.median(values)

    summary: dict[str, Any] = {"errors": sum(p["errors"] for p in raw["phases"])}
    for c in (1, 64):
        direct = {k: median("direct", c, k) for k in ("p50_ms", "p99_ms", "rps")}
        summary[f"direct_c{c}"] = direct
        for name in variants:
            keys = ("p50_ms", "p99_ms", "rps", "router_cpu_us_per_request")
            routed = {k: median(name, c, k) for k in keys}
            summary[f"{name}_c{c}"] = {
                **routed,
                "added_p50_ms": routed["p50_ms"] - direct["p50_ms"],
                "added_p99_ms": routed["p99_ms"] - direct["p99_ms"],
            }
    return summary


def markdown(
    summary: dict[str, Any],
    raw: dict[str, Any],
    info: dict[str, str],
    args: argparse.Namespace,
    variants: list[str],
) -> str:
    lines = [
        f"Machine: {info['nproc']} cores ({info['cpu']}), Python {info['python']}, "
        f"aiohttp {info['aiohttp']}; load average {info['load_before']} before, "
        f"{info['load_after']} after.",
        f"Requests: {args.c1_requests} at concurrency 1 and {args.c64_requests} at "
        f"concurrency 64 per round and path, {args.rounds} rounds (medians); soak to "
        f"{args.soak_requests:,} routed requests per router.",
        "",
        "| concurrency | path | p50 | p99 | added p50 | added p99 | req/s | router CPU/request |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in (1, 64):
        d = summary[f"direct_c{c}"]
        lines.append(
            f"| {c} | direct | {d['p50_ms']:.2f} ms | {d['p99_ms']:.2f} ms | | | {d['rps']:.0f} | |"
        )
        for name in variants:
            r = summary[f"{name}_c{c}"]
            lines.append(
                f"| {c} | router, {name} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | "
                f"{r['added_p50_ms']:.2f} ms | {r['added_p99_ms']:.2f} ms | {r['rps']:.0f} | "
                f"{r['router_cpu_us_per_request']:.0f} µs |"
            )
    lines.append("")
    for name in variants:
        samples = ", ".join(f"{n:,}: {m:.1f}" for n, m in raw["rss_mib"][name])
        lines.append(f"Router RSS, {name} (MiB by routed requests served): {samples}")
    lines.append(f"Errors: {summary['errors']}")
    lines += [
        "",
        "| body | size | status | router RSS idle | peak RSS | peak - idle | RSS after "
        "| request time | slowest /healthz during it |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b in raw.get("bodies", []):
        grown = b["peak_mib"] - b["idle_mib"]
        lines.append(
            f"| {b['kind']} | {b['body_mib']:.1f} MiB | {b['status']} | {b['idle_mib']:.1f} MiB | "
            f"{b['peak_mib']:.1f} MiB | {grown:.1f} MiB | {b['after_mib']:.1f} MiB | "
            f"{b['seconds'] * 1000:.0f} ms | {b['slowest_probe_ms']:.0f} ms |"
        )
    return "\n".join(lines)


VARIANTS = {
    "plain": "standard-library json, asyncio event loop",
    "accelerated": "orjson, uvloop",
    "baseline": "plain, from the source tree given with --baseline (e.g. the main branch)",
}


def accelerators() -> bool:
    try:
        __import__("uvloop")
        __import__("orjson")
    except ImportError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--c1-requests", type=int, default=3000)
    parser.add_argument("--c64-requests", type=int, default=10000)
    parser.add_argument(
        "--soak-requests",
        type=int,
        default=100_000,
        help="routed requests per router before the last RSS sample",
    )
    parser.add_argument("--json", metavar="FILE", help="also write raw results here")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also measure the router of another checkout (its operator/ on PYTHONPATH), "
        "interleaved with this one, for a same-run ratio",
    )
    parser.add_argument("--skip-bodies", action="store_true", help="skip the body-size phase")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.warmup, args.c1_requests = 1, 200, 300
        args.c64_requests, args.soak_requests = 1000, 3000

    launchers = {"plain": [sys.executable, "-c", PLAIN_LAUNCHER]}
    if accelerators():
        launchers["accelerated"] = [sys.executable, "-m", "tierwise.cli"]
    envs: dict[str, dict[str, str]] = {name: {} for name in launchers}
    if args.baseline:
        launchers["baseline"] = [sys.executable, "-c", PLAIN_LAUNCHER]
        envs["baseline"] = {"PYTHONPATH": str(Path(args.baseline).resolve() / "operator")}
    variants = list(launchers)
    emulator_port = free_port()
    emulator_url = f"http://{HOST}:{emulator_port}"
    info = machine()
    info["load_before"] = f"{os.getloadavg()[0]:.2f}"
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        config_path = Path(tmp) / "router-config.json"
        config_path.write_text(json.dumps(router_config(emulator_url)))
        emulator_cmd = [
            sys.executable,
            "-m",
            "tierwise.cli",
            "emulator",
            "--zero-latency",
            "--host",
            HOST,
            "--port",
            str(emulator_port),
            "--log-level",
            "WARNING",
        ]
        stack.enter_context(process(emulator_cmd, emulator_url + "/_emulator/health"))
        routers: dict[str, tuple[str, int]] = {}
        for name, launcher in launchers.items():
            port, metrics_port = free_port(), free_port()
            cmd = [
                *launcher,
                "router",
                "--config",
                str(config_path),
                "--host",
                HOST,
                "--port",
                str(port),
                "--metrics-host",
                HOST,
                "--metrics-port",
                str(metrics_port),
                "--log-level",
                "warning",
            ]
            proc = stack.enter_context(
                process(
                    cmd,
                    f"http://{HOST}:{metrics_port}/readyz",
                    env={TIER_KEY_ENV: TIER_KEY, **envs[name]},
                )
            )
            routers[name] = (f"http://{HOST}:{port}", proc.pid)
        raw = asyncio.run(measure(args, emulator_url, routers))
        if not args.skip_bodies:
            raw["bodies"] = body_memory(args, config_path, launchers["plain"])
    info["load_after"] = f"{os.getloadavg()[0]:.2f}"
    summary = summarize(raw, variants)
    print("Router variants: " + "; ".join(f"{n} = {VARIANTS[n]}" for n in variants) + ".")
    print(markdown(summary, raw, info, args, variants))
    if args.json:
        report = {"machine": info, "summary": summary, **raw}
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
