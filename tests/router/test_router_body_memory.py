"""Point 9: a real router process keeps its memory bounded under maximal request bodies.

The bodies are the largest the router accepts (32 MiB of one long text), refused by the
upstream with 413: the router's resident memory must not grow request after request, and
its peak with several such bodies at once must stay under the sidecar's memory limit with
margin. Figures are read from ``/proc/<pid>/status`` of a ``tierwise router`` process.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from recording_upstream import Answer, recording_upstream
from router_builder import config, route, step, tier, tier_env
from router_helpers import free_port, raw_request

from tierwise.routerconfig.sidecar import MAX_BODY_BYTES, MEMORY_LIMIT

pytestmark = pytest.mark.timeout(240)

TOO_LARGE = Answer(
    status=413,
    body=json.dumps(
        {
            "type": "error",
            "error": {"type": "request_too_large", "message": "Request exceeds the maximum size"},
        }
    ).encode(),
)
LIMIT_MIB = int(MEMORY_LIMIT.removesuffix("Mi"))
MARGIN_MIB = 64  # what the rest of the pod's sidecar life (metrics, caches) may need


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def maximal_body() -> bytes:
    head = b'{"model": "tierwise/big", "max_tokens": 16, "messages": [{"role": "user", "content": "'
    tail = b'"}]}'
    return head + b"x" * (MAX_BODY_BYTES - 4096 - len(head) - len(tail)) + tail


@pytest.fixture
def router_process(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """(API base URL, pid) of a ``tierwise router`` process in front of a 413 upstream."""
    with recording_upstream(TOO_LARGE) as upstream:
        tiers = {"haiku": tier("claude-haiku-4-5", upstream.base_url, name="haiku")}
        doc = config(
            upstream.base_url,
            [route("big", [step("haiku")], counterfactual=None)],
            tiers=tiers,
            default_route=None,
        )
        doc["retry"] = {
            "maxAttempts": 1,
            "initialBackoffSeconds": "0.01",
            "maxBackoffSeconds": "0.05",
        }
        from router_builder import with_hash

        path = tmp_path / "router.json"
        path.write_text(json.dumps(with_hash(doc)))
        port, metrics_port = free_port(), free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tierwise.cli",
                "router",
                "--config",
                str(path),
                "--port",
                str(port),
                "--metrics-host",
                "127.0.0.1",
                "--metrics-port",
                str(metrics_port),
                "--log-level",
                "error",
            ],
            env={**os.environ, **tier_env()},
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=1)
                    break
                except OSError:
                    assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}", proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def send(base_url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    status, _headers, raw = raw_request(base_url, "/v1/messages", data=body)
    return status, json.loads(raw)


def test_point9_refused_maximal_bodies_do_not_grow_rss_and_concurrent_ones_stay_bounded(
    router_process: tuple[str, int],
) -> None:
    base_url, pid = router_process
    body = maximal_body()
    idle = rss_mib(pid)
    after = []
    for _ in range(4):
        status, error = send(base_url, body)
        assert status == 413 and error["error"]["type"] == "request_too_large"
        after.append(rss_mib(pid))
    # Flat: each refused body's memory is given back (before: +~100 MiB per request).
    assert max(after) - idle < 48, (idle, after)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: send(base_url, body), range(4)))
    assert [status for status, _ in results] == [413] * 4
    peak = rss_mib(pid, "VmHWM")
    # Bounded: four maximal bodies at once (before: 567 MiB) stay under the sidecar's
    # limit with margin, because the router holds a bounded amount of body bytes at once.
    assert peak < LIMIT_MIB - MARGIN_MIB, peak
    assert rss_mib(pid) - idle < 48
