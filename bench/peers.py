"""The router beside the LiteLLM proxy: same upstream, same cores, one worker each.

    make bench-peers                       # installs the peer on demand, then measures
    .venv/bin/python bench/peers.py --quick

The peer is installed into its own virtual environment (``.bench-venv/``, never the
project's) at a pinned version; when it cannot be installed, the benchmark says why and
exits 0 without figures. Processes, all on 127.0.0.1: the emulator at zero latency (the
upstream of both), the Tierwise router, the LiteLLM proxy (``--num_workers 1``) and this
script (the load generator). Paths take turns within each round so load from elsewhere on
the shared machine hits them alike.

Measured per path: added p50/p99 over the direct path at concurrency 1 and 64, throughput
at 64, RSS after the run, the streaming time to first token added, and a two-step cascade
(the router's cheap-first route, whose first answer escalates; the proxy has no
quality-signal cascade, so the client makes the same two calls through it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import router_overhead as ro

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / ".bench-venv"
# Pinned: LiteLLM releases 1.82.7, 1.82.8 and 1.107.0 were published compromised on the
# package index; never install it unpinned. 1.81.16 predates them; later releases' `proxy`
# extra needs a `litellm-proxy` distribution the index does not carry.
PEER_REQUIREMENT = "litellm[proxy]==1.81.16"
STRONG_MODEL = "claude-sonnet-4-5"
HEADERS = {
    "content-type": "application/json",
    "x-api-key": "client-key",
    "anthropic-version": "2023-06-01",
}


def install_peer() -> Path | None:
    """The proxy's executable in its own venv, installing it on first use; None if it fails."""
    exe = PEER_VENV / "bin" / "litellm"
    stamp = PEER_VENV / f".installed-{PEER_REQUIREMENT}"
    if exe.exists() and stamp.exists():
        return exe
    print(f"installing {PEER_REQUIREMENT} into {PEER_VENV} (its own venv) ...", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run(
            [str(PEER_VENV / "bin" / "pip"), "install", "--quiet", PEER_REQUIREMENT],
            check=True,
            timeout=1200,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"skipped: the LiteLLM proxy could not be installed ({exc})", file=sys.stderr)
        return None
    stamp.touch()
    return exe if exe.exists() else None


def tierwise_config(emulator_url: str) -> dict[str, Any]:
    from tierwise.pricing import catalog_prices
    from tierwise.routerconfig import (
        InvalidJSONSignal,
        PolicyRef,
        RetryPolicy,
        Route,
        RouterConfig,
        Step,
        Tier,
        TierLimits,
    )

    def tier(name: str, model: str) -> Tier:
        return Tier(
            name=name,
            model=model,
            prices=catalog_prices(model),  # type: ignore[arg-type]
            endpoint=emulator_url,
            api_key_env=ro.TIER_KEY_ENV,
            limits=TierLimits(timeout_seconds=30, max_concurrency=256),
        )

    config = RouterConfig(
        policy=PolicyRef("bench", "peers"),
        default_route="bench",
        routes=(
            Route("bench", ("tierwise/bench",), (Step("haiku", 256),)),
            Route(
                "cascade",
                (),
                (Step("haiku", 256, (InvalidJSONSignal(),)), Step("sonnet", 256)),
            ),
        ),
        tiers={"haiku": tier("haiku", ro.MODEL), "sonnet": tier("sonnet", STRONG_MODEL)},
        retry=RetryPolicy(max_attempts=1),
    )
    return config.with_hash().to_document()


def litellm_config(emulator_url: str) -> str:
    lines = ["model_list:"]
    for model in (ro.MODEL, STRONG_MODEL):
        lines += [
            f"  - model_name: {model}",
            "    litellm_params:",
            f"      model: anthropic/{model}",
            f"      api_base: {emulator_url}",
            f"      api_key: {ro.TIER_KEY}",
        ]
    lines += ["litellm_settings:", "  num_retries: 0", "  drop_params: false"]
    return "\n".join(lines) + "\n"


def body(model: str, *, stream: bool = False) -> bytes:
    doc: dict[str, Any] = {
        "model": model,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Classify: my invoice shows a double charge."}],
    }
    if stream:
        doc["stream"] = True
    return json.dumps(doc).encode()


async def ttft(url: str, payload: bytes, requests: int) -> list[float]:
    """Time to the first content delta of ``requests`` streaming calls, one at a time (ms)."""
    out = []
    async with aiohttp.ClientSession() as session:
        for _ in range(requests):
            started = time.perf_counter()
            first = None
            async with session.post(url, data=payload, headers=HEADERS) as response:
                async for line in response.content:
                    if first is None and b"content_block_delta" in line:
                        first = time.perf_counter() - started
                if first is not None:
                    out.append(first * 1000)
    return out


async def client_cascade(url: str, requests: int) -> list[float]:
    """A client-side cheap-first cascade through a proxy: cheap call, then the strong one."""
    out = []
    async with aiohttp.ClientSession() as session:
        for _ in range(requests):
            started = time.perf_counter()
            for model in (ro.MODEL, STRONG_MODEL):
                async with session.post(url, data=body(model), headers=HEADERS) as response:
                    await response.read()
            out.append((time.perf_counter() - started) * 1000)
    return out


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


async def measure(args: argparse.Namespace, paths: dict[str, tuple[str, str, int | None]]) -> dict:
    """``paths``: name -> (messages URL, model to send, pid)."""
    results: dict[str, Any] = {
        name: {"c1": [], "c64": [], "ttft": [], "cascade": []} for name in paths
    }
    for url, model, _pid in paths.values():
        await ro.run_phase("warmup", url, body(model), 8, args.warmup)
    for _ in range(args.rounds):
        for name, (url, model, _pid) in paths.items():
            results[name]["c1"].append(
                asdict(await ro.run_phase(name, url, body(model), 1, args.c1))
            )
            results[name]["c64"].append(
                asdict(await ro.run_phase(name, url, body(model), 64, args.c64))
            )
            results[name]["ttft"] += await ttft(url, body(model, stream=True), args.stream)
    for name, (url, _model, _pid) in paths.items():
        if name == "tierwise":
            cascade_body = body("tierwise/cascade")
            phase = await ro.run_phase("cascade", url, cascade_body, 1, args.cascade)
            results[name]["cascade"] = [phase.p50_ms, phase.p99_ms]
        else:
            times = await client_cascade(url, args.cascade)
            results[name]["cascade"] = [pct(times, 0.5), pct(times, 0.99)]
    for name, (_url, _model, pid) in paths.items():
        results[name]["rss_mib"] = ro.rss_mib(pid) if pid else None
    return results


def asdict(phase: Any) -> dict[str, Any]:
    return {k: getattr(phase, k) for k in ("p50_ms", "p99_ms", "rps", "errors")}


def med(rounds: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def report(results: dict[str, Any], info: dict[str, str], args: argparse.Namespace) -> str:
    direct = results["direct"]
    rows = []
    for name in ("tierwise", "litellm"):
        r = results[name]
        rows.append(
            {
                "name": name,
                "c1_p50": med(r["c1"], "p50_ms") - med(direct["c1"], "p50_ms"),
                "c1_p99": med(r["c1"], "p99_ms") - med(direct["c1"], "p99_ms"),
                "c64_p50": med(r["c64"], "p50_ms") - med(direct["c64"], "p50_ms"),
                "c64_p99": med(r["c64"], "p99_ms") - med(direct["c64"], "p99_ms"),
                "rps": med(r["c64"], "rps"),
                "rss": r["rss_mib"],
                "ttft": pct(r["ttft"], 0.5) - pct(direct["ttft"], 0.5),
                "cascade": r["cascade"][0],
                "errors": sum(x["errors"] for x in r["c1"] + r["c64"]),
            }
        )
    t, lite = rows
    lines = [
        f"Machine: {info['nproc']} cores ({info['cpu']}), Python {info['python']}; load "
        f"average {info['load_before']} before, {info['load_after']} after. Peer: "
        f"{PEER_REQUIREMENT}. {args.rounds} rounds (medians): {args.c1} requests at "
        f"concurrency 1 and {args.c64} at 64 per path and round, {args.stream} streaming and "
        f"{args.cascade} cascade requests per path.",
        "",
        "| figure | direct | Tierwise router | LiteLLM proxy | LiteLLM / Tierwise |",
        "|---|---|---|---|---|",
    ]

    def row(label: str, key: str, base: str, unit: str = "ms") -> None:
        ratio = lite[key] / t[key] if t[key] else float("nan")
        lines.append(
            f"| {label} | {base} | {t[key]:.2f} {unit} | {lite[key]:.2f} {unit} | {ratio:.1f}x |"
        )

    row("added p50, concurrency 1", "c1_p50", f"{med(direct['c1'], 'p50_ms'):.2f} ms")
    row("added p99, concurrency 1", "c1_p99", f"{med(direct['c1'], 'p99_ms'):.2f} ms")
    row("added p50, concurrency 64", "c64_p50", f"{med(direct['c64'], 'p50_ms'):.2f} ms")
    row("added p99, concurrency 64", "c64_p99", f"{med(direct['c64'], 'p99_ms'):.2f} ms")
    row("throughput, concurrency 64", "rps", f"{med(direct['c64'], 'rps'):.0f} req/s", "req/s")
    row("RSS after the run", "rss", "", "MiB")
    row("streaming TTFT added (p50)", "ttft", f"{pct(direct['ttft'], 0.5):.2f} ms")
    lines.append(
        f"| two-step cascade, p50 | | {t['cascade']:.2f} ms (router route) | "
        f"{lite['cascade']:.2f} ms (two client calls) | {lite['cascade'] / t['cascade']:.1f}x |"
    )
    lines.append(f"\nErrors: Tierwise {t['errors']}, LiteLLM {lite['errors']}.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--c1", type=int, default=1000)
    parser.add_argument("--c64", type=int, default=3000)
    parser.add_argument("--stream", type=int, default=200)
    parser.add_argument("--cascade", type=int, default=300)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.warmup, args.c1, args.c64, args.stream, args.cascade = (
            1,
            100,
            200,
            500,
            30,
            50,
        )
    peer = install_peer()
    if peer is None:
        print("bench/peers.py: no LiteLLM proxy, nothing measured (see the message above)")
        return 0
    info = ro.machine()
    info["load_before"] = f"{os.getloadavg()[0]:.2f}"
    emulator_port = ro.free_port()
    emulator_url = f"http://{ro.HOST}:{emulator_port}"
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        emulator = [
            sys.executable,
            "-m",
            "tierwise.cli",
            "emulator",
            "--zero-latency",
            "--host",
            ro.HOST,
            "--port",
            str(emulator_port),
            "--log-level",
            "WARNING",
        ]
        stack.enter_context(ro.process(emulator, emulator_url + "/_emulator/health"))
        config = Path(tmp) / "router-config.json"
        config.write_text(json.dumps(tierwise_config(emulator_url)))
        port, metrics_port = ro.free_port(), ro.free_port()
        router = stack.enter_context(
            ro.process(
                [
                    sys.executable,
                    "-m",
                    "tierwise.cli",
                    "router",
                    "--config",
                    str(config),
                    "--host",
                    ro.HOST,
                    "--port",
                    str(port),
                    "--metrics-host",
                    ro.HOST,
                    "--metrics-port",
                    str(metrics_port),
                    "--log-level",
                    "warning",
                ],
                f"http://{ro.HOST}:{metrics_port}/readyz",
                env={ro.TIER_KEY_ENV: ro.TIER_KEY},
            )
        )
        peer_config = Path(tmp) / "litellm.yaml"
        peer_config.write_text(litellm_config(emulator_url))
        peer_port = ro.free_port()
        lite = stack.enter_context(
            ro.process(
                [
                    str(peer),
                    "--config",
                    str(peer_config),
                    "--host",
                    ro.HOST,
                    "--port",
                    str(peer_port),
                    "--num_workers",
                    "1",
                ],
                f"http://{ro.HOST}:{peer_port}/health/liveliness",
                # Offline: the model price map ships with the package; no telemetry.
                env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
            )
        )
        paths = {
            "direct": (emulator_url + "/v1/messages", ro.MODEL, None),
            "tierwise": (f"http://{ro.HOST}:{port}/v1/messages", "tierwise/bench", router.pid),
            "litellm": (f"http://{ro.HOST}:{peer_port}/v1/messages", ro.MODEL, lite.pid),
        }
        results = asyncio.run(measure(args, paths))
    info["load_after"] = f"{os.getloadavg()[0]:.2f}"
    print(report(results, info, args))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
