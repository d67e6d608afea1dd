"""The saving of a batch cascade on the example dataset against the all-strong synchronous
baseline, measured end to end.

The model emulator answers the 200 labelled support emails (each model at its accuracy);
``tierwise render`` makes the router config of ``examples/`` (``--endpoint`` to the
emulator). Two runs through real routers, with the official ``anthropic`` SDK:

* baseline: every email synchronously on the triage route's strongest tier (Sonnet 5.5);
* batch cascade: the triage route in ``mode: batch`` (Haiku 5.5, escalating to Sonnet 5.5),
  all emails as one Message Batch, polled until it ends.

Costs are the router's own (``x-tierwise-cost-usd`` per request; per-item ``cost_usd`` in
the batch results), so they include what escalated items paid on both steps.

    .venv/bin/python bench/batch_cascade_saving.py
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from triage_hedging import BIN, DATASET, EXAMPLES, KEY, SYSTEM, free_port, process, wait_ok


def documents(emulator: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from tierwise.api import load_manifests
    from tierwise.render import render_all, with_endpoint

    [(_, result)] = render_all(load_manifests([str(EXAMPLES)]))
    base = with_endpoint(result.config, emulator).to_document()  # type: ignore[arg-type]
    base["cache"]["responseCache"]["enabled"] = False
    strong = json.loads(json.dumps(base))
    triage = next(r for r in strong["routes"] if r["name"] == "triage")
    triage["steps"] = [triage["steps"][-1]]
    batch = json.loads(json.dumps(base))
    next(r for r in batch["routes"] if r["name"] == "triage")["mode"] = "batch"
    return strong, batch


def start_router(doc: dict[str, Any], tmp: Path, name: str) -> Any:
    from tierwise.routerconfig import dump_document, parse

    config = tmp / f"{name}.json"
    config.write_text(dump_document(parse(doc).with_hash().to_document()))
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, **{t["apiKeyEnv"]: KEY for t in doc["tiers"].values() if t["apiKeyEnv"]}}
    argv = [str(BIN / "tierwise"), "router", "--config", str(config), "--port", str(port)]
    argv += ["--metrics-port", str(metrics_port), "--batch-state-dir", str(tmp / "state")]
    return process(argv, env), port, metrics_port


def main() -> int:
    lines = [line for line in DATASET.read_text().splitlines() if line.strip()]
    emails = [json.loads(line)["input"] for line in lines]
    port = free_port()
    emulator = f"http://127.0.0.1:{port}"
    argv = [str(BIN / "tierwise"), "emulator", "--port", str(port), "--dataset", str(DATASET)]
    with process([*argv, "--zero-latency"]), tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        wait_ok(f"{emulator}/_emulator/health")
        strong_doc, batch_doc = documents(emulator)

        context, api, metrics_port = start_router(strong_doc, tmp, "strong")
        with context:
            wait_ok(f"http://127.0.0.1:{metrics_port}/readyz")
            client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{api}", api_key="app")
            baseline = Decimal(0)
            for email in emails:
                raw = client.messages.with_raw_response.create(
                    model="tierwise/triage",
                    max_tokens=1024,
                    system=SYSTEM,
                    messages=[{"role": "user", "content": email}],
                )
                baseline += Decimal(raw.headers["x-tierwise-cost-usd"])

        context, api, metrics_port = start_router(batch_doc, tmp, "batch")
        with context:
            wait_ok(f"http://127.0.0.1:{metrics_port}/readyz")
            client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{api}", api_key="app")
            requests = [
                {
                    "custom_id": f"email-{i:03d}",
                    "params": {
                        "model": "tierwise/triage",
                        "max_tokens": 1024,
                        "system": SYSTEM,
                        "messages": [{"role": "user", "content": email}],
                    },
                }
                for i, email in enumerate(emails)
            ]
            started = time.perf_counter()
            batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
            while client.messages.batches.retrieve(batch.id).processing_status != "ended":
                time.sleep(0.2)
            results = list(client.messages.batches.results(batch.id))
            seconds = time.perf_counter() - started
    extra = [r.model_extra["tierwise"] for r in results]  # type: ignore[index]
    cascade = sum((Decimal(e["cost_usd"]) for e in extra), Decimal(0))
    tiers = Counter(e["tier"] for e in extra)
    saving = baseline - cascade
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {len(emails)} emails of examples/support-triage\n"
    )
    print("| run | cost | vs baseline | answered by |")
    print("|---|---|---|---|")
    print(
        f"| all-strong synchronous (Sonnet 5.5) | ${baseline:.4f} | 1.00x | sonnet {len(emails)} |"
    )
    by = ", ".join(f"{t} {n}" for t, n in sorted(tiers.items()))
    print(
        f"| batch cascade (Haiku 5.5 -> Sonnet 5.5) | ${cascade:.4f} | {cascade / baseline:.2f}x | {by} |"
    )
    print(f"\nsaving ${saving:.4f} ({saving / baseline:.1%}); batch ended in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
