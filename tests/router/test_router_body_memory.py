"""Point 9: a real router process keeps its memory bounded under maximal request bodies.

The bodies are the largest the router accepts (32 MiB of one long text), refused by the
upstream with 413: the router's resident memory must not grow request after request, and
its peak with several such bodies at once must stay under the sidecar's memory limit with
margin. Figures are read from ``/proc/<pid>/status`` of a ``tierwise router`` process.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from recording_upstream import Answer, recording_upstream
from router_builder import config, route, step, tier, tier_env
from router_helpers import RouterProcess, raw_request, router_process, rss_mib

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


def maximal_body() -> bytes:
    head = b'{"model": "tierwise/big", "max_tokens": 16, "messages": [{"role": "user", "content": "'
    tail = b'"}]}'
    return head + b"x" * (MAX_BODY_BYTES - 4096 - len(head) - len(tail)) + tail


@pytest.fixture
def big_router(tmp_path: Path) -> Iterator[RouterProcess]:
    """A ``tierwise router`` process in front of an upstream that refuses with 413."""
    with recording_upstream(TOO_LARGE) as upstream:
        tiers = {"haiku": tier("claude-haiku-4-5", upstream.base_url, name="haiku")}
        routes = [route("big", [step("haiku")], counterfactual=None)]
        retry = {"maxAttempts": 1, "initialBackoffSeconds": "0.01", "maxBackoffSeconds": "0.05"}
        doc = config(upstream.base_url, routes, tiers=tiers, default_route=None, retry=retry)
        with router_process(doc, tmp_path, tier_env()) as process:
            yield process


def send(base_url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    status, _headers, raw = raw_request(base_url, "/v1/messages", data=body)
    return status, json.loads(raw)


def test_point9_refused_maximal_bodies_do_not_grow_rss_and_concurrent_ones_stay_bounded(
    big_router: RouterProcess,
) -> None:
    base_url, pid = big_router.base_url, big_router.pid
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
