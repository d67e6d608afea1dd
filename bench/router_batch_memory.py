"""Router memory under batch cascades: RSS across finished cascades, after a restart with
them on disk, and the peak for a maximal batch body.

Processes, all on ``127.0.0.1``: the emulator (``tierwise emulator --zero-latency``, batches
end as soon as they are created) and the router (``tierwise router --batch-state-dir``) with
one two-step batch route, haiku then sonnet, whose signal escalates every item (the
emulator's answers are not the JSON it asks for), so each cascade is two upstream batches of
``--items`` items each — the most a cascade of that size can hold.

1. ``--cascades`` cascades, one after the other: create (one body of ``--items`` requests),
   poll until ended, read the results; the router's RSS (``VmRSS``) after each.
2. The router is restarted on the same state directory: RSS after start, after
   ``GET /v1/messages/batches?limit=1``, after paging through every batch with the SDK's
   page size, and after reading one batch's results again.
3. A maximal batch body (``--body-mb`` MB, the API's 256 MB by default) is posted to a fresh
   router; its peak RSS (``VmHWM``) before and after.

    .venv/bin/python bench/router_batch_memory.py             # the run in docs/benchmarks.md
    .venv/bin/python bench/router_batch_memory.py --quick     # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from router_overhead import HOST, TIER_KEY, TIER_KEY_ENV, free_port, process, router_config, rss_mib

SONNET = "claude-sonnet-4-6"
DEADLINE_SECONDS = 1800.0


def cascade_config(emulator_url: str) -> dict[str, Any]:
    from tierwise.pricing import catalog_prices
    from tierwise.routerconfig import content_hash

    doc = router_config(emulator_url)
    doc.pop("hash")
    sonnet = json.loads(json.dumps(doc["tiers"]["haiku"]))
    sonnet.update(model=SONNET, pricing=catalog_prices(SONNET).to_document())  # type: ignore[union-attr]
    doc["tiers"]["sonnet"] = sonnet
    signal = {"signal": "jsonFieldBelow", "field": "confidence", "threshold": "0.8"}
    doc["routes"][0].update(
        mode="batch",
        steps=[
            {"tier": "haiku", "maxTokens": 64, "escalateWhen": [signal]},
            {"tier": "sonnet", "maxTokens": 64, "escalateWhen": []},
        ],
    )
    doc["hash"] = content_hash(doc)
    return doc


def call(url: str, method: str = "GET", body: bytes | None = None) -> Any:
    headers = {"x-api-key": "bench-client", "anthropic-version": "2023-06-01"}
    if body is not None:
        headers["content-type"] = "application/json"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=600) as response:
        data = response.read()
    return data if method == "GET" and url.endswith("/results") else json.loads(data)


def batch_body(items: int, text: str = "Classify: my invoice shows a double charge.") -> bytes:
    requests = [
        {
            "custom_id": f"item-{i}",
            "params": {
                "model": "tierwise/bench",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": text}],
            },
        }
        for i in range(items)
    ]
    return json.dumps({"requests": requests}).encode()


def run_cascade(base: str, body: bytes) -> str:
    batch = call(base + "/v1/messages/batches", "POST", body)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while batch["processing_status"] != "ended":
        if time.monotonic() > deadline:
            raise RuntimeError("the cascade did not end in time")
        time.sleep(0.2)
        batch = call(f"{base}/v1/messages/batches/{batch['id']}")
    results = call(f"{base}/v1/messages/batches/{batch['id']}/results")
    assert results.count(b"\n") == batch["request_counts"]["succeeded"]
    return str(batch["id"])


def start_router(config: Path, state: Path) -> tuple[Any, str]:
    port, metrics_port = free_port(), free_port()
    args = [
        sys.executable,
        "-m",
        "tierwise.cli",
        "router",
        "--config",
        str(config),
        "--port",
        str(port),
        "--metrics-host",
        HOST,
        "--metrics-port",
        str(metrics_port),
        "--batch-state-dir",
        str(state),
    ]
    ready = f"http://{HOST}:{metrics_port}/readyz"
    return process(args, ready, {TIER_KEY_ENV: TIER_KEY}), f"http://{HOST}:{port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cascades", type=int, default=20)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--body-mb", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="3 cascades of 500, a 20 MB body")
    args = parser.parse_args(argv)
    if args.quick:
        args.cascades, args.items, args.body_mb = 3, 500, 20
    print(f"machine: {platform.machine()}, python {platform.python_version()}")
    emulator_port = free_port()
    emulator_url = f"http://{HOST}:{emulator_port}"
    emulator = [
        sys.executable,
        "-m",
        "tierwise.cli",
        "emulator",
        "--zero-latency",
        "--port",
        str(emulator_port),
        "--log-level",
        "WARNING",
    ]
    with process(emulator, emulator_url + "/_emulator/health"), tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        config = tmp / "config.json"
        config.write_text(json.dumps(cascade_config(emulator_url)))
        state = tmp / "state"
        body = batch_body(args.items)
        print(f"\n{args.cascades} cascades of {args.items} items (body {len(body) / 1e6:.1f} MB)")
        manager, base = start_router(config, state)
        with manager as router:
            print(f"router RSS at start: {rss_mib(router.pid):.1f} MiB")
            ids = []
            for n in range(args.cascades):
                started = time.monotonic()
                ids.append(run_cascade(base, body))
                print(
                    f"after cascade {n + 1:2d}: RSS {rss_mib(router.pid):6.1f} MiB, "
                    f"peak {rss_mib(router.pid, 'VmHWM'):6.1f} MiB "
                    f"({time.monotonic() - started:.0f} s)"
                )
        on_disk = sum(p.stat().st_size for p in state.rglob("*") if p.is_file()) / 2**20
        print(f"\nrestart with {len(ids)} finished cascades on disk ({on_disk:.0f} MiB)")
        manager, base = start_router(config, state)
        with manager as router:
            print(f"router RSS at start: {rss_mib(router.pid):.1f} MiB")
            call(base + "/v1/messages/batches?limit=1")
            print(f"after GET ?limit=1: {rss_mib(router.pid):.1f} MiB")
            after, seen = "", 0
            while True:
                page = call(f"{base}/v1/messages/batches?limit=20{after}")
                seen += len(page["data"])
                if not page["has_more"]:
                    break
                after = f"&after_id={page['last_id']}"
            assert seen == len(ids), (seen, len(ids))
            print(f"after listing all {seen}: {rss_mib(router.pid):.1f} MiB")
            call(f"{base}/v1/messages/batches/{ids[0]}/results")
            print(f"after reading one batch's results: {rss_mib(router.pid):.1f} MiB")
            print(f"peak: {rss_mib(router.pid, 'VmHWM'):.1f} MiB")
        print(f"\na maximal batch body: {args.body_mb} MB")
        text = "x " * 500_000  # about 1 MB per request
        per_item = len(batch_body(1, text))
        big = batch_body(max(1, args.body_mb * 10**6 // per_item), text)
        big = big[:-2] + b" " * (args.body_mb * 10**6 - len(big)) + big[-2:]  # exactly the size
        manager, base = start_router(config, tmp / "state-big")
        with manager as router:
            before = rss_mib(router.pid, "VmHWM")
            started = time.monotonic()
            created = call(base + "/v1/messages/batches", "POST", big)
            print(
                f"accepted {len(big) / 1e6:.0f} MB as {created['id']} in "
                f"{time.monotonic() - started:.0f} s; router peak RSS {before:.1f} -> "
                f"{rss_mib(router.pid, 'VmHWM'):.1f} MiB, now {rss_mib(router.pid):.1f} MiB"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
