"""Issue 17 point 2: the eval replays the request path the router serves.

One config and one dataset, two ways: ``run_eval`` (the eval's engine) and a real router
(aiohttp server) called with the official SDK. For every item both give the same HTTP
status, answering tier, escalations and cost. The config has what an eval used to skip or
could get wrong: input budgets that refuse (``reject``) and trim (``dropOldestTurns``),
effort on the steps, and the fallback tier taking over an overloaded step.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import anthropic
import pytest
from router_builder import config, route, step, tier, tier_env, triage_signals
from router_helpers import sdk

from tierwise.emulator import Dataset as EmulatorDataset
from tierwise.evals.dataset import Dataset, parse_dataset
from tierwise.evals.gate import GateSpec
from tierwise.evals.graders import GraderSpec
from tierwise.evals.plan import EvalPlan, RoutePlan
from tierwise.evals.runner import run_eval

pytestmark = pytest.mark.timeout(120)

LABELS = ["billing", "bug", "other"]
SONNET = "claude-sonnet-5-5"
BUDGET_TRIAGE = 400  # tokens: the long emails are refused
BUDGET_AGENT = 600  # tokens: long conversations lose their oldest turns


def parity_config(base_url: str) -> dict[str, Any]:
    triage = {
        **route(
            "triage",
            [
                {**step("haiku", 256, *triage_signals()), "effort": "low"},
                {**step("sonnet", 512), "effort": "medium"},
            ],
            format_instruction='Answer with JSON only: {"label": ..., "confidence": ...}',
        ),
        "inputBudget": {"maxInputTokens": BUDGET_TRIAGE, "onExceed": "reject"},
    }
    agent = {
        **route("agent", [{**step("haiku", 256), "effort": "medium"}]),
        "inputBudget": {"maxInputTokens": BUDGET_AGENT, "onExceed": "dropOldestTurns"},
    }
    tiers = {
        "haiku": tier("claude-haiku-5-5", base_url, name="haiku"),
        "sonnet": tier(SONNET, base_url, name="sonnet"),
        "opus": tier("claude-opus-5-5", base_url, name="opus"),
    }
    return config(
        base_url,
        [triage, agent],
        tiers=tiers,
        fallback={"tier": "opus", "on": ["overloaded"]},
        retry={"maxAttempts": 1, "initialBackoffSeconds": "0.01", "maxBackoffSeconds": "0.01"},
    )


# A distinct word per item: items differing only in their numbers are one item to the eval
# (duplicates are replayed once), and parity is checked item by item.
NAMES = [
    "amber",
    "birch",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "grove",
    "heron",
    "iris",
    "juniper",
    "kestrel",
    "lumen",
    "maple",
    "nectar",
    "onyx",
    "pine",
    "quartz",
    "raven",
    "sable",
    "thistle",
    "umber",
    "violet",
    "willow",
    "yarrow",
]


def triage_records() -> list[dict[str, Any]]:
    records = []
    for i in range(24):
        topic = ["invoice", "login page", "office"][i % 3]
        text = f"Ticket {i}: the {topic} issue reported by the {NAMES[i]} team."
        if i % 4 == 0:  # far over the triage budget: the router refuses it
            text += " Details follow. " + " ".join(f"word{i}-{n}" for n in range(500))
        records.append({"id": f"t{i}", "input": text, "label": LABELS[i % 3]})
    return records


def agent_records() -> list[dict[str, Any]]:
    records = []
    for i in range(12):
        turns = 8 if i % 3 == 0 else 1  # every third conversation is over the agent budget
        messages: list[dict[str, Any]] = []
        for t in range(turns - 1):
            filler = " ".join(f"history{i}-{t}-{n}" for n in range(60))
            messages += [
                {"role": "user", "content": f"Earlier question {t}: {filler}"},
                {"role": "assistant", "content": f"Earlier answer {t}."},
            ]
        question = f"Conversation {i}: where is my refund for the {NAMES[i]} order?"
        messages.append({"role": "user", "content": question})
        records.append({"id": f"a{i}", "messages": messages, "label": LABELS[i % 3]})
    return records


def as_dataset(records: list[dict[str, Any]], name: str) -> Dataset:
    return parse_dataset("\n".join(json.dumps(r) for r in records), name)


def eval_outcomes(doc: dict[str, Any], datasets: dict[str, Dataset]) -> dict[str, Any]:
    plan = EvalPlan(
        policy="support/email-triage",
        routes=tuple(RoutePlan(name, name, GraderSpec()) for name in datasets),
        gate=GateSpec.from_document({"minQuality": 0.0, "minItems": 1}),
        judge_tiers={},
        concurrency=4,
        timeout_seconds=60,
    )
    report = asyncio.run(run_eval(plan, doc, None, datasets, tier_env()))
    return {
        r.item.id: (r.outcome.status, r.outcome.tier, r.outcome.escalations, r.outcome.cost)
        for route in report.routes
        for r in route.candidate.results
    }


def router_outcome(client: anthropic.Anthropic, body: dict[str, Any]) -> tuple[Any, ...]:
    try:
        raw = client.messages.with_raw_response.create(**body)
        status, headers = raw.status_code, raw.headers
    except anthropic.APIStatusError as exc:
        status, headers = exc.status_code, exc.response.headers
    return (
        status,
        headers["x-tierwise-tier"],
        int(headers["x-tierwise-escalations"]),
        Decimal(headers["x-tierwise-cost-usd"]),
    )


def test_point2_eval_outcomes_equal_the_routers_over_http(emu: Any, make_router: Any) -> None:
    records = {"triage": triage_records(), "agent": agent_records()}
    emu.load_dataset(EmulatorDataset.from_records([*records["triage"], *records["agent"]]))
    emu.set_faults(SONNET, rate_529=1.0)  # the escalation step is overloaded: opus answers
    doc = parity_config(emu.base_url)
    datasets = {name: as_dataset(items, name) for name, items in records.items()}

    from_eval = eval_outcomes(doc, datasets)

    router = make_router(doc)
    client = sdk(router, max_retries=0)
    from_router = {
        item.id: router_outcome(client, item.request(f"tierwise/{name}"))
        for name, dataset in datasets.items()
        for item in dataset.items
    }
    assert from_eval == from_router
    # The config exercised what it is for: refusals, trims, effort and the fallback.
    statuses = [status for status, *_ in from_eval.values()]
    assert statuses.count(400) == 6  # the long triage emails
    assert {t for _, t, _, _ in from_eval.values()} >= {"haiku", "opus"}  # opus: the fallback
    trimmed = [r for r in emu.recorded_requests(path="/v1/messages") if "Earlier" in str(r.body)]
    assert trimmed and all(len(r.body["messages"]) < 15 for r in trimmed)
    assert all(
        r.body.get("output_config", {}).get("effort") in ("low", "medium")
        for r in emu.recorded_requests(path="/v1/messages")
    )
