"""Helpers for router tests: raw HTTP, metrics parsing, expected costs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
from prometheus_client.parser import text_string_to_metric_families

from tierwise.pricing import Prices, Usage, catalog_prices, cost_usd

CLIENT_KEY = "client-key-never-forwarded"


def sdk(router: Any, **options: Any) -> anthropic.Anthropic:
    """The real sync SDK pointed at a router, with the client's own (never forwarded) key."""
    options.setdefault("max_retries", 0)
    options.setdefault("timeout", 15.0)
    return anthropic.Anthropic(base_url=router.base_url, api_key=CLIENT_KEY, **options)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raw_request(
    base_url: str,
    path: str,
    body: Any = None,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP call, for what the SDK would refuse to send (or to see raw bytes)."""
    sent = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
    sent.update(headers or {})
    payload = (
        data if data is not None else (json.dumps(body).encode() if body is not None else None)
    )
    if payload is not None:
        sent.setdefault("content-type", "application/json")
    request = urllib.request.Request(base_url + path, data=payload, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def metrics(metrics_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics as {(name, labels): value}."""
    with urllib.request.urlopen(metrics_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def metric(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


MODEL_PRICES: dict[str, Prices] = {
    m: catalog_prices(m)  # type: ignore[misc]
    for m in ("claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6")
}


def recorded_cost(records: list[Any]) -> Decimal:
    """What the emulator's recorded (successful) responses cost, priced per model."""
    total = Decimal(0)
    for record in records:
        if record.usage:
            total += cost_usd(Usage.from_anthropic(record.usage), MODEL_PRICES[record.model])
    return total


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def until_ended(client: anthropic.Anthropic, batch_id: str) -> Any:
    """Poll a Message Batch until it has ended (15 s at most)."""
    for _ in range(300):
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        time.sleep(0.05)
    raise AssertionError("the batch did not end")


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def sse_comments(raw: bytes) -> list[str]:
    return [line[2:].decode() for line in raw.split(b"\n") if line.startswith(b": ")]


# The router with the optional accelerators hidden: importing them raises ImportError, so it
# runs on the standard library's json and asyncio's loop, as an install without them would.
PLAIN_LAUNCHER = (
    "import sys; sys.modules['uvloop'] = None; sys.modules['orjson'] = None; "
    "from tierwise.cli import main; sys.exit(main(sys.argv[1:]))"
)


@dataclass
class RouterProcess:
    base_url: str
    metrics_url: str
    pid: int
    log: Path


@contextlib.contextmanager
def router_process(
    document: dict[str, Any], workdir: Path, env: dict[str, str], *, plain: bool = False
) -> Iterator[RouterProcess]:
    """A ``tierwise router`` process (not a thread) serving ``document``; stopped after."""
    config = workdir / "router-config.json"
    config.write_text(json.dumps(document))
    port, metrics_port = free_port(), free_port()
    launcher = ["-c", PLAIN_LAUNCHER] if plain else ["-m", "tierwise.cli"]
    log = workdir / "router.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                *launcher,
                "router",
                f"--config={config}",
                f"--port={port}",
                "--metrics-host=127.0.0.1",
                f"--metrics-port={metrics_port}",
                "--log-level=info",
            ],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    metrics_url = f"http://127.0.0.1:{metrics_port}"
    try:
        ready = wait_for(lambda: proc.poll() is not None or _ok(metrics_url + "/readyz"), 30)
        assert ready and proc.poll() is None, log.read_text()
        yield RouterProcess(f"http://127.0.0.1:{port}", metrics_url, proc.pid, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory now (VmRSS) or at its peak so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for process {pid}")
