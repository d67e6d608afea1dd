"""`tierwise router`: run the router sidecar from a config file."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from tierwise.router.batch_cascade import DEFAULT_MAX_STORE_BYTES
from tierwise.router.capture import CaptureSettings, parse_redactions
from tierwise.router.jsonutil import JSON_BACKEND
from tierwise.router.server import DEFAULT_MAX_BODY_BYTES, DEFAULT_RELOAD_INTERVAL, Router
from tierwise.routerconfig import ConfigError
from tierwise.routerconfig.sidecar import HEADER_TIMEOUT_SECONDS

EXIT_BAD_CONFIG = 2
EXIT_CANNOT_LISTEN = 3


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve the Anthropic Messages API (/v1/messages, streaming, count_tokens) in front "
        "of the model tiers of a router config document: routing, cheap-first cascades, "
        "prompt-caching breakpoints, response cache, retries and fallback. Metrics, "
        "/healthz and /readyz are served on a separate port. The config file is watched and "
        "hot-reloaded; an invalid file at startup exits with status 2."
    )
    parser.add_argument(
        "--config",
        required=True,
        metavar="FILE",
        help="the router config document (JSON, docs/router-config.md); "
        "watched for changes, e.g. a mounted ConfigMap",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address of the Messages API (default: %(default)s, only the pod itself can reach it)",
    )
    parser.add_argument(
        "--port", type=int, default=8080, help="port of the Messages API (default: %(default)s)"
    )
    parser.add_argument(
        "--metrics-host",
        default="0.0.0.0",
        help="address of /metrics, /healthz and /readyz (default: %(default)s, "
        "so Prometheus and kubelet probes reach it; it serves no API)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=9090,
        help="port of /metrics, /healthz and /readyz (default: %(default)s)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        metavar="BYTES",
        help="largest accepted request body; larger ones get a 413 "
        "request_too_large error (default: %(default)s = 32 MiB, the Messages API's own "
        "limit; the injected sidecar's memory limit is sized for it)",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=HEADER_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="close a connection that has not sent a complete request head within this "
        "time, or that stays idle this long between requests (default: %(default)s)",
    )
    parser.add_argument(
        "--reload-interval",
        type=float,
        default=DEFAULT_RELOAD_INTERVAL,
        metavar="SECONDS",
        help="how often the config file is checked for changes; 0 disables "
        "reloading (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-state-dir",
        metavar="DIR",
        default=os.environ.get("TIERWISE_BATCH_STATE_DIR") or None,
        help="where batch cascades keep their state (a volume, so a router restart between "
        "steps loses nothing; env TIERWISE_BATCH_STATE_DIR); without it, in memory only",
    )
    parser.add_argument(
        "--batch-state-max-bytes",
        type=int,
        metavar="BYTES",
        default=DEFAULT_MAX_STORE_BYTES,
        help="disk the batches may use in --batch-state-dir: beyond it the oldest ended batch "
        "cascades are deleted early, then new batches are refused with a 429 "
        "(default: %(default)s, under the injected sidecar's 2 GiB volume)",
    )
    parser.add_argument(
        "--capture-dir",
        metavar="DIR",
        default=os.environ.get("TIERWISE_CAPTURE_DIR") or None,
        help="capture a sample of answered requests, redacted, as eval dataset items in "
        "DIR (a volume the platform team controls; env TIERWISE_CAPTURE_DIR); off without it",
    )
    parser.add_argument(
        "--capture-rate",
        type=float,
        metavar="SHARE",
        default=float(os.environ.get("TIERWISE_CAPTURE_RATE") or 0.01),
        help="share of answered requests captured, above 0 and at most 1 (default: %(default)s)",
    )
    parser.add_argument(
        "--capture-redact",
        action="append",
        default=[],
        metavar="NAME=REGEX",
        help="a redaction rule on top of the defaults (email, phone, key); repeatable; every "
        "match is replaced by [REDACTED:NAME] before anything is written",
    )
    parser.add_argument(
        "--capture-max-bytes-per-day",
        type=int,
        metavar="BYTES",
        default=100 * 2**20,
        help="stop capturing for the day when its file reaches this size (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: %(default)s); no level logs API keys or request bodies",
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        capture = _capture_settings(args)
    except ValueError as exc:
        print(f"tierwise router: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        router = Router(
            args.config,
            capture=capture,
            max_body_bytes=args.max_body_bytes,
            reload_interval=args.reload_interval,
            header_timeout=args.header_timeout,
            batch_state_dir=args.batch_state_dir,
            batch_state_max_bytes=args.batch_state_max_bytes,
        )
    except ConfigError as exc:
        print(f"tierwise router: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    _install_uvloop()
    return asyncio.run(_serve(args, router))


def _capture_settings(args: argparse.Namespace) -> CaptureSettings | None:
    if not args.capture_dir:
        return None
    if not 0 < args.capture_rate <= 1:
        raise ValueError("--capture-rate must be above 0 and at most 1")
    return CaptureSettings(
        Path(args.capture_dir),
        args.capture_rate,
        parse_redactions(args.capture_redact),
        args.capture_max_bytes_per_day,
    )


def _install_uvloop() -> None:
    # uvloop's faster event loop (a default dependency where it builds); the router is correct
    # without it, and tests run it both ways.
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _serve(args: argparse.Namespace, router: Router) -> int:
    log = logging.getLogger("tierwise.router")
    try:
        await router.start(args.host, args.port, args.metrics_host, args.metrics_port)
    except OSError as exc:
        print(f"tierwise router: cannot listen: {exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    log.info(
        "router serving policy %s (config %s) on %s, metrics on %s; event loop %s, json %s",
        router.config.policy.label,
        router.config.hash,
        router.base_url,
        router.metrics_url,
        type(asyncio.get_running_loop()).__module__.split(".")[0],
        JSON_BACKEND,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await router.stop()
    return 0
