"""Reading the router sidecars' own figures from their metrics port.

The shadow stage's samples and the spend budgets' totals are counted in the routers, which
expose them at ``/metrics`` (``PodView.metrics_url``). The operator reads them there rather
than through the API server's pod proxy: the proxy would need ``pods/proxy`` rights (every
port of every pod) and would route every read through the API server. A NetworkPolicy in an
application namespace must therefore let the operator reach the sidecars' metrics port.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("tierwise.router_metrics")

READ_TIMEOUT_SECONDS = 2.0
MAX_BYTES = 8 * 2**20  # a router's exposition is a few hundred kB at most
_PARALLEL_READS = 8

Sample = tuple[str, dict[str, str], float]  # name, labels, value


def read_metrics(url: str) -> str | None:
    """One sidecar's exposition; None when it does not answer (left out, never fatal)."""
    try:
        with urllib.request.urlopen(url, timeout=READ_TIMEOUT_SECONDS) as response:
            return response.read(MAX_BYTES).decode("utf-8", "replace")
    except (OSError, urllib.error.URLError, ValueError) as exc:
        log.info("router metrics at %s not read: %s", url, exc)
        return None


def read_all(urls: Iterable[str]) -> list[str | None]:
    """Several sidecars' expositions, read in parallel (a slow pod costs one timeout)."""
    targets = list(urls)
    if len(targets) <= 1:
        return [read_metrics(u) for u in targets]
    with ThreadPoolExecutor(min(_PARALLEL_READS, len(targets))) as pool:
        return list(pool.map(read_metrics, targets))


def samples(text: str, prefix: str) -> Iterator[Sample]:
    """The samples of the metric families named ``prefix``…; nothing from a text that is not
    an exposition."""
    try:
        for family in text_string_to_metric_families(text):
            if family.name.startswith(prefix):
                for sample in family.samples:
                    yield sample.name, dict(sample.labels), float(sample.value)
    except ValueError as exc:
        log.info("unreadable router metrics: %s", exc)
