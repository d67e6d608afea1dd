"""Fan out independent calls through the Tierwise sidecar: one email, many questions at once.

The app asks several independent questions per email (triage label, language, a one-line
summary, ...) and sends them concurrently. Each call goes through the sidecar at
ANTHROPIC_BASE_URL like any other; the sidecar routes each one to its tier and holds at most
the tier's ``limits.maxConcurrency`` in flight upstream, queueing the rest. When the
``tierwise_router_queue_wait_seconds`` histogram grows, the cap, not the model, is what the
app is waiting for (see docs/parallel-calls.md).

    python examples/parallel-calls/fanout.py --emails 40 --concurrency 32

Needs only the ``anthropic`` SDK; the API key is the app's and is never forwarded (the
sidecar uses each tier's own key).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path

import anthropic

DATASET = Path(__file__).resolve().parents[1] / "support-triage" / "dataset.jsonl"
# Independent questions about the same email: none needs another's answer, so all can run
# at once. Each names its route (a model alias the router resolves), as an app would.
QUESTIONS = {
    "triage": "Classify this support email.",
    "tone": "Is the customer upset? Answer yes or no.",
    "summary": "Summarise this email in one line.",
}


async def ask(
    client: anthropic.AsyncAnthropic, gate: asyncio.Semaphore, question: str, email: str
) -> dict[str, str]:
    async with gate:
        raw = await client.messages.with_raw_response.create(
            model="tierwise/triage" if question == "triage" else "claude-sonnet-5-5",
            max_tokens=256,
            messages=[{"role": "user", "content": f"{QUESTIONS[question]}\n\n{email}"}],
        )
        message = await raw.parse()
    text = "".join(block.text for block in message.content if block.type == "text")
    return {"question": question, "tier": raw.headers.get("x-tierwise-tier", "?"), "text": text}


async def fan_out(base_url: str, emails: list[str], concurrency: int) -> list[dict[str, str]]:
    client = anthropic.AsyncAnthropic(
        base_url=base_url, api_key=os.environ.get("ANTHROPIC_API_KEY", "app-key"), max_retries=2
    )
    # The app's own bound on calls in flight; the sidecar's per-tier caps come on top.
    gate = asyncio.Semaphore(concurrency)
    try:
        calls = [ask(client, gate, q, email) for email in emails for q in QUESTIONS]
        return await asyncio.gather(*calls)
    finally:
        await client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=20, help="emails to process (default 20)")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="calls the app keeps in flight (default 16)"
    )
    parser.add_argument(
        "--base-url",
        default=os.environ.get("ANTHROPIC_BASE_URL", "http://127.0.0.1:8080"),
        help="the sidecar (default: $ANTHROPIC_BASE_URL)",
    )
    args = parser.parse_args()
    lines = [line for line in DATASET.read_text().splitlines() if line.strip()]
    emails = [json.loads(line)["input"] for line in lines[: args.emails]]
    started = time.perf_counter()
    answers = asyncio.run(fan_out(args.base_url, emails, args.concurrency))
    seconds = time.perf_counter() - started
    tiers = Counter(a["tier"] for a in answers)
    print(f"{len(answers)} calls for {len(emails)} emails in {seconds:.1f} s")
    print("answered by " + ", ".join(f"{tier} {n}" for tier, n in tiers.most_common()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
