"""``tierwise emulator``: serve the model emulator until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from tierwise.emulator.config import EmulatorConfig

log = logging.getLogger("tierwise.emulator")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve an Anthropic-compatible model emulator: the Messages API (JSON, SSE streaming, "
        "count_tokens, message batches) with faithful usage and prompt-cache accounting, "
        "labelled-dataset answers at each model's configured accuracy, and an admin API "
        "under /_emulator/ for scripted answers and fault injection. For tests, demos and "
        "benchmarks; see docs/emulator.md."
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8090,
        help="port to listen on; 0 picks a free one (default: 8090)",
    )
    parser.add_argument(
        "--profiles",
        metavar="FILE",
        help="YAML or JSON file of model profiles ({models: {name: {field: value}}}) "
        "overriding or adding to the built-in profiles (Claude 5.5 and 4.5 models)",
    )
    parser.add_argument(
        "--dataset",
        metavar="FILE.jsonl",
        help='labelled items, one {"input": ..., "label": ...} per line; a prompt that '
        'contains an item\'s input is answered {"label", "confidence"}',
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the deterministic labelled answers (default: 0)",
    )
    parser.add_argument(
        "--zero-latency",
        action="store_true",
        help="answer immediately instead of simulating time to first token and output speed "
        "(for benchmarks of the router itself)",
    )
    parser.add_argument(
        "--api-key",
        dest="api_keys",
        action="append",
        metavar="KEY",
        help="accepted API key, sent as x-api-key or Authorization: Bearer (repeatable); "
        "by default any non-empty key is accepted",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level; requests are never logged one by one (default: INFO)",
    )


def build_config(args: argparse.Namespace) -> EmulatorConfig:
    return EmulatorConfig.from_files(
        profiles=args.profiles,
        dataset=args.dataset,
        seed=args.seed,
        zero_latency=args.zero_latency,
        api_keys=frozenset(args.api_keys) if args.api_keys else None,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = build_config(args)
    except (OSError, ValueError) as exc:
        print(f"tierwise emulator: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config, args.host, args.port))
    except OSError as exc:
        print(
            f"tierwise emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    return 0


async def _serve(config: EmulatorConfig, host: str, port: int) -> None:
    from tierwise.emulator.server import Emulator

    emulator = Emulator(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    base_url = await emulator.start(host, port)
    models = ", ".join(emulator.engine.profiles.names())
    dataset = f", dataset of {len(config.dataset)} items" if config.dataset else ""
    latency = "zero latency" if config.zero_latency else "simulated latency"
    log.info("emulator serving on %s (%s; %s%s)", base_url, models, latency, dataset)
    try:
        await stop.wait()
    finally:
        await emulator.stop()
        log.info("emulator stopped")
