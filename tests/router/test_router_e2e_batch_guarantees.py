"""What a gateway trusted with several callers' batches must guarantee, each proved against
the emulator (with injected batch faults) and real routers, in threads or processes:

1. a batch is private to the caller that created it;
2. each item is counted exactly once, whatever happens between steps;
3. memory is bounded: nothing of a batch stays in memory, listing reads only its page,
   old batches are deleted;
4. a reload that removes a batch's step or route leaves the batch answerable;
5. later steps go out with the creator's ``anthropic-version`` and ``anthropic-beta``;
6. the API's contract on batch input: ``custom_id`` required, paging, the API's size limit;
7. input budgets are not bypassed by batching;
8. the eval's batch mode and the router run one batch cascade.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest
from router_builder import (
    HAIKU_MODEL,
    SONNET_MODEL,
    TIER_KEYS,
    config,
    route,
    step,
    tier_env,
    with_hash,
)
from router_helpers import (
    free_port,
    metric,
    metrics,
    raw_request,
    sdk,
    until_ended,
    user,
    wait_for,
)

from tierwise.router import RouterThread

pytestmark = pytest.mark.timeout(120)

SURE = '{"label": "bug", "confidence": 0.95}'
UNSURE = '{"label": "bug", "confidence": 0.3}'
SIGNAL = {"signal": "jsonFieldBelow", "field": "confidence", "threshold": 0.8}
ITEMS = 4
COST = "tierwise_router_cost_usd_total"
ESCALATIONS = "tierwise_router_escalations_total"


def doc(endpoint: str, *, steps: int = 2, budget: bool = False) -> dict[str, Any]:
    cascade = [step("haiku", 200, SIGNAL), step("sonnet", 200)][:steps]
    nightly = route("nightly", cascade, mode="batch")
    if budget:
        nightly["inputBudget"] = {"maxInputTokens": 50, "onExceed": "reject"}
    document = config(
        endpoint, [nightly, route("solo", [step("haiku", 200)], mode="batch")], default_route=None
    )
    document["retry"] = {"maxAttempts": 1}  # an injected fault is not retried away
    return document


def requests(model: str = "tierwise/nightly", n: int = ITEMS) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"email-{i:02d}",
            "params": {"model": model, "max_tokens": 300, "messages": user(f"Classify {i}")},
        }
        for i in range(n)
    ]


def script(emu: Any) -> None:
    """Two of four items are sure on haiku; the other two escalate once, to sonnet."""
    emu.script(HAIKU_MODEL, [{"text": SURE}] * 2 + [{"text": UNSURE}] * 2)
    emu.script(SONNET_MODEL, [{"text": SURE}] * 2)


def caller(router: Any, key: str, **options: Any) -> anthropic.Anthropic:
    options.setdefault("max_retries", 0)
    options.setdefault("timeout", 15.0)
    return anthropic.Anthropic(base_url=router.base_url, api_key=key, **options)


def upstream_batches(emu: Any) -> list[Any]:
    """Every batch the upstream holds, as the upstream lists it."""
    client = anthropic.Anthropic(base_url=emu.base_url, api_key=TIER_KEYS["haiku"])
    return list(client.messages.batches.list(limit=100).data)


def sizes(emu: Any) -> list[int]:
    """The item counts of the upstream's batches, oldest first."""
    found = []
    for batch in reversed(upstream_batches(emu)):
        counts = batch.request_counts
        found.append(
            counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
        )
    return found


def exactly_once(client: anthropic.Anthropic, batch_id: str) -> Decimal:
    """Results show each item once, escalated at most once, priced over its steps."""
    results = list(client.messages.batches.results(batch_id))
    assert sorted(r.custom_id for r in results) == [f"email-{i:02d}" for i in range(ITEMS)]
    assert all(r.result.type == "succeeded" for r in results)
    extra = [r.model_extra["tierwise"] for r in results]  # type: ignore[index]
    assert sorted(e["escalations"] for e in extra) == [0, 0, 1, 1]
    assert sorted(e["tier"] for e in extra) == ["haiku", "haiku", "sonnet", "sonnet"]
    for e in extra:
        assert [s["tier"] for s in e["steps"]] == ["haiku"] + ["sonnet"] * e["escalations"]
        assert Decimal(e["cost_usd"]) == sum(Decimal(s["cost"]) for s in e["steps"])
    return sum((Decimal(e["cost_usd"]) for e in extra), Decimal(0))


def assert_counted_once(router: Any, emu: Any, client: anthropic.Anthropic, batch_id: str) -> None:
    """Results, metrics and the upstream agree: each item counted once, one upstream batch
    per step (4 items, then the 2 that escalated)."""
    total = exactly_once(client, batch_id)
    samples = metrics(router.metrics_url)
    assert metric(samples, ESCALATIONS, route="nightly") == 2
    assert metric(samples, COST, route="nightly") == pytest.approx(float(total))
    assert sizes(emu) == [4, 2]


# --- 1. caller isolation -----------------------------------------------------------------


def test_batches_are_private_to_their_caller(emu: Any, make_router: Any) -> None:
    router = make_router(doc(emu.base_url))
    alice, bob = caller(router, "alice-key"), caller(router, "bob-key")
    emu.script("*", [{"text": SURE}] * 20)
    a_cascade = alice.messages.batches.create(requests=requests())  # type: ignore[arg-type]
    a_single = alice.messages.batches.create(requests=requests("tierwise/solo"))  # type: ignore[arg-type]
    b_cascade = bob.messages.batches.create(requests=requests())  # type: ignore[arg-type]
    # Each lists only its own (the SDK's auto-pagination included).
    assert {b.id for b in alice.messages.batches.list()} == {a_cascade.id, a_single.id}
    assert [b.id for b in bob.messages.batches.list()] == [b_cascade.id]
    until_ended(alice, a_cascade.id)
    until_ended(alice, a_single.id)
    for batch_id in (a_cascade.id, a_single.id):
        with pytest.raises(anthropic.NotFoundError):
            bob.messages.batches.retrieve(batch_id)
        with pytest.raises(anthropic.NotFoundError):
            list(bob.messages.batches.results(batch_id))
        with pytest.raises(anthropic.NotFoundError):
            bob.messages.batches.cancel(batch_id)
        with pytest.raises(anthropic.NotFoundError):
            bob.messages.batches.delete(batch_id)
        # Without any key, and asking the results path directly: the same 404.
        for headers in ({"x-api-key": ""}, {"x-api-key": "bob-key"}):
            status, _, raw = raw_request(
                router.base_url,
                f"/v1/messages/batches/{batch_id}/results",
                method="GET",
                headers=headers,
            )
            assert status == 404 and json.loads(raw)["error"]["type"] == "not_found_error"
    # The owner still has everything (the same key as a bearer token is the same caller).
    assert len(list(alice.messages.batches.results(a_cascade.id))) == ITEMS
    assert len(list(alice.messages.batches.results(a_single.id))) == ITEMS
    bearer = anthropic.Anthropic(
        base_url=router.base_url, auth_token="alice-key", api_key=None, max_retries=0
    )
    assert bearer.messages.batches.retrieve(a_single.id).id == a_single.id
    assert bob.messages.batches.cancel(b_cascade.id).id == b_cascade.id
    alice.messages.batches.delete(a_cascade.id)
    assert [b.id for b in alice.messages.batches.list()] == [a_single.id]


# --- 2. each item counted exactly once ---------------------------------------------------


def test_each_item_counted_once_through_an_upstream_outage_between_steps(
    emu: Any, make_router: Any
) -> None:
    router = make_router(doc(emu.base_url))
    client = sdk(router)
    script(emu)
    batch = client.messages.batches.create(requests=requests())  # type: ignore[arg-type]
    # The first step's results fail once; then every submission of the next step fails.
    emu.fail_batches("results", [500])
    emu.fail_batches("create", [529, 529, 503])
    for _ in range(4):  # each poll meets the outage; the batch stays valid, in progress
        polled = client.messages.batches.retrieve(batch.id)
        assert polled.processing_status == "in_progress"
    ended = until_ended(client, batch.id)
    assert ended.request_counts.succeeded == ITEMS
    assert_counted_once(router, emu, client, batch.id)


def test_each_item_counted_once_when_the_client_leaves_while_the_next_step_is_submitted(
    emu: Any, make_router: Any
) -> None:
    router = make_router(doc(emu.base_url))
    script(emu)
    batch = sdk(router).messages.batches.create(requests=requests())  # type: ignore[arg-type]
    emu.fail_batches("create", create_delay=1.5)  # the next step's create answers late
    impatient = sdk(router, timeout=0.3)
    with pytest.raises(anthropic.APITimeoutError):
        impatient.messages.batches.retrieve(batch.id)  # disconnects mid-submission
    time.sleep(1.8)
    emu.fail_batches("create", create_delay=0)
    client = sdk(router)
    until_ended(client, batch.id)
    assert_counted_once(router, emu, client, batch.id)


class RouterProcess:
    """``tierwise router`` as a real process (to be killed between two steps)."""

    def __init__(self, config_path: Path, state: Path) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tierwise.cli",
                "router",
                "--config",
                str(config_path),
                "--port",
                str(self.port),
                "--metrics-host",
                "127.0.0.1",
                "--metrics-port",
                str(self.metrics_port),
                "--batch-state-dir",
                str(state),
            ],
            env={**os.environ, **tier_env()},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}"
        wait_for(self._ready, timeout=30, interval=0.1)

    def _ready(self) -> bool:
        try:
            return raw_request(self.metrics_url, "/readyz", method="GET")[0] == 200
        except OSError:
            return False

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


def poll_quietly(router: Any, batch_id: str) -> None:
    """A poll whose answer never comes (its router is killed under it)."""
    with contextlib.suppress(anthropic.APIError):
        sdk(router).messages.batches.retrieve(batch_id)


def test_each_item_counted_once_when_the_router_is_killed_between_create_and_record(
    emu: Any, tmp_path: Path
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc(emu.base_url)))
    state = tmp_path / "batches"
    script(emu)
    first = RouterProcess(path, state)
    try:
        client = sdk(first)
        batch = client.messages.batches.create(requests=requests())  # type: ignore[arg-type]
        emu.fail_batches("create", create_delay=5.0)
        poll = threading.Thread(target=poll_quietly, args=(first, batch.id), daemon=True)
        poll.start()
        wait_for(lambda: sizes(emu) == [4, 2], timeout=10)  # the next step exists upstream
        before = metrics(first.metrics_url)
    finally:
        first.kill()  # ... and the router dies before it could record its id
    emu.fail_batches("create", create_delay=0)
    second = RouterProcess(path, state)
    try:
        client = sdk(second)
        until_ended(client, batch.id)
        total = exactly_once(client, batch.id)
        after = metrics(second.metrics_url)
    finally:
        second.kill()
    assert sizes(emu) == [4, 2]  # the orphan was adopted, not submitted again
    # The first process counted the first step, the second only the second step.
    counted = metric(before, COST, route="nightly") + metric(after, COST, route="nightly")
    assert counted == pytest.approx(float(total))
    assert metric(before, ESCALATIONS) + metric(after, ESCALATIONS) == 2


def test_a_passthrough_batch_is_counted_once_across_a_restart(emu: Any, tmp_path: Path) -> None:
    state = tmp_path / "batches"
    first = RouterThread(doc(emu.base_url), env=tier_env(), batch_state_dir=state).start()
    try:
        client = sdk(first)
        batch = client.messages.batches.create(requests=requests("tierwise/solo"))  # type: ignore[arg-type]
        until_ended(client, batch.id)
        assert len(list(client.messages.batches.results(batch.id))) == ITEMS
        assert metric(metrics(first.metrics_url), COST, route="solo") > 0
    finally:
        first.stop()
    second = RouterThread(doc(emu.base_url), env=tier_env(), batch_state_dir=state).start()
    try:
        client = sdk(second)
        assert len(list(client.messages.batches.results(batch.id))) == ITEMS
        assert metric(metrics(second.metrics_url), COST, route="solo") == 0
    finally:
        second.stop()


# --- 3. bounded memory -------------------------------------------------------------------


def entry_of(state: Path, batch_id: str) -> Path:
    (found,) = state.glob(f"o-*/*-{batch_id}")
    return found


def test_memory_is_bounded_finished_batches_leave_memory_and_listing_reads_its_page_only(
    emu: Any, tmp_path: Path, make_router: Any
) -> None:
    state = tmp_path / "batches"
    router = make_router(doc(emu.base_url), batch_state_dir=state)
    client = sdk(router)
    emu.script("*", [{"text": SURE}] * 40)
    ids = [client.messages.batches.create(requests=requests()).id for _ in range(3)]  # type: ignore[arg-type]
    for batch_id in ids:
        until_ended(client, batch_id)
        list(client.messages.batches.results(batch_id))
    # Listing one batch reads that batch only: the older ones' files can be anything.
    for batch_id in ids[:2]:
        (entry_of(state, batch_id) / "state.json").write_text("not json")
    page = client.messages.batches.list(limit=1)
    assert [b.id for b in page.data] == [ids[2]] and page.has_more
    # A finished batch, once read, is served from disk, not from memory.
    (entry_of(state, ids[2]) / "state.json").unlink()
    with pytest.raises(anthropic.APIStatusError):
        client.messages.batches.retrieve(ids[2])


def test_memory_is_bounded_batches_are_deleted_after_the_retention(tmp_path: Path) -> None:
    from tierwise.router.batch_cascade import RETENTION, BatchStore

    store = BatchStore(tmp_path)
    fresh, old = store.incoming(), store.incoming()
    kept = store.add("caller", "msgbatch_kept", fresh)
    gone = store.add("caller", "msgbatch_gone", old)
    (gone.path / "state.json").write_text(json.dumps({"route": "r", "tier": "t"}))
    store.claim("msgbatch_gone", gone)
    aged = int((time.time() - RETENTION.total_seconds() - 60) * 1000)
    gone.path.rename(gone.path.with_name(f"{aged:013d}-msgbatch_gone"))
    assert store.sweep(force=True) == 1
    assert [e.id for e in store.entries("caller")] == [kept.id]
    assert not store.claimed("msgbatch_gone")


# --- 4. reloads ----------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["step removed", "route removed"])
def test_a_reload_that_removes_a_step_or_route_leaves_its_batches_answerable(
    emu: Any, make_router: Any, tmp_path: Path, change: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(with_hash(doc(emu.base_url))))
    router = make_router(str(path), reload_interval=0.05)
    client = sdk(router)
    script(emu)
    batch = client.messages.batches.create(requests=requests())  # type: ignore[arg-type]
    # Polled: the first step has ended and the second is out.
    wait_for(lambda: client.messages.batches.retrieve(batch.id) and sizes(emu) == [4, 2])
    changed = doc(emu.base_url, steps=1)
    if change == "route removed":
        changed["routes"] = [r for r in changed["routes"] if r["name"] != "nightly"]
    path.write_text(json.dumps(with_hash(changed)))
    wait_for(
        lambda: metric(metrics(router.metrics_url), "tierwise_router_config_reloads_total") >= 2
    )
    ended = until_ended(client, batch.id)
    assert ended.request_counts.succeeded + ended.request_counts.errored == ITEMS
    results = list(client.messages.batches.results(batch.id))
    assert len(results) == ITEMS
    # Items answered before the reload keep their answers; the two in flight end errored.
    failed = [r for r in results if r.result.type == "errored"]
    assert len(failed) == 2
    for r in failed:
        message = r.result.error.error.message  # type: ignore[union-attr]
        assert "while this batch ran" in message


# --- 5. the creator's headers -----------------------------------------------------------


def test_later_steps_use_the_creators_anthropic_version_and_beta(
    emu: Any, make_router: Any
) -> None:
    router = make_router(doc(emu.base_url))
    script(emu)
    creator = sdk(router, default_headers={"anthropic-beta": "output-128k-2025-02-19"})
    batch = creator.messages.batches.create(requests=requests())  # type: ignore[arg-type]
    poller = {"anthropic-version": "2023-01-01", "anthropic-beta": "computer-use-2025-01-24"}
    for _ in range(100):
        status, _, raw = raw_request(
            router.base_url, f"/v1/messages/batches/{batch.id}", method="GET", headers=poller
        )
        assert status == 200
        if json.loads(raw)["processing_status"] == "ended":
            break
        time.sleep(0.05)
    created = [
        r
        for r in emu.recorded_requests()
        if r.path == "/v1/messages/batches" and r.method == "POST"
    ]
    assert len(created) == 2
    first = created[0]
    assert first.headers["anthropic-version"] != "2023-01-01"  # the SDK's own version
    for record in created:
        assert record.headers["anthropic-beta"] == "output-128k-2025-02-19"
        assert record.headers["anthropic-version"] == first.headers["anthropic-version"]


# --- 6. the API's contract on batch input ---------------------------------------------------


def test_api_contract_an_item_without_custom_id_is_a_400(emu: Any, make_router: Any) -> None:
    router = make_router(doc(emu.base_url))
    items = requests()
    del items[1]["custom_id"]
    status, _, raw = raw_request(router.base_url, "/v1/messages/batches", {"requests": items})
    assert status == 400
    error = json.loads(raw)["error"]
    assert error["type"] == "invalid_request_error" and "requests.1.custom_id" in error["message"]
    assert emu.recorded_requests() == []


def test_api_contract_cascades_page_by_limit_before_id_and_after_id(
    emu: Any, make_router: Any
) -> None:
    router = make_router(doc(emu.base_url))
    client = sdk(router)
    emu.script("*", [{"text": SURE}] * 40)
    created = [client.messages.batches.create(requests=requests()).id for _ in range(5)]  # type: ignore[arg-type]
    newest_first = created[::-1]
    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2] and page.has_more
    assert page.first_id == newest_first[0] and page.last_id == newest_first[1]
    # The SDK's auto-pagination sees every batch once.
    assert [b.id for b in client.messages.batches.list(limit=2)] == newest_first
    after = client.messages.batches.list(limit=2, after_id=newest_first[3])
    assert [b.id for b in after.data] == newest_first[4:] and not after.has_more
    before = client.messages.batches.list(limit=2, before_id=newest_first[3])
    assert [b.id for b in before.data] == newest_first[1:3] and before.has_more


def test_api_contract_a_batch_body_over_a_message_limit_is_accepted(
    emu: Any, make_router: Any, tmp_path: Path
) -> None:
    """The API takes batches up to 256 MB; a 40 MB one (over the 32 MiB message limit) is
    received to disk and submitted from there."""
    state = tmp_path / "batches"
    router = make_router(doc(emu.base_url), batch_state_dir=state)
    text = "x " * 500_000  # 1 MB per item
    items = [
        {
            "custom_id": f"big-{i}",
            "params": {"model": "tierwise/solo", "max_tokens": 5, "messages": user(text)},
        }
        for i in range(40)
    ]
    body = json.dumps({"requests": items}).encode()
    assert len(body) > 40 * 10**6
    status, _, raw = raw_request(router.base_url, "/v1/messages/batches", data=body)
    assert status == 200, raw[:300]
    batch = json.loads(raw)
    created = [r for r in emu.recorded_requests() if r.path == "/v1/messages/batches"]
    assert len(created[-1].body["requests"]) == 40
    assert list(state.glob(f"o-*/*-{batch['id']}/state.json"))
    status, _, raw = raw_request(
        router.base_url, "/v1/messages/batches", data=b'{"requests": [' + b" " * 10 + b"]"
    )
    assert status == 400  # cut short: the API's 400, nothing kept


# --- 7. input budgets ------------------------------------------------------------------------


def test_input_budget_a_route_with_a_budget_refuses_batches_and_says_why(
    emu: Any, make_router: Any
) -> None:
    router = make_router(doc(emu.base_url, budget=True))
    long = requests()
    long[0]["params"]["messages"] = user("word " * 5000)
    status, _, raw = raw_request(router.base_url, "/v1/messages/batches", {"requests": long})
    assert status == 400
    message = json.loads(raw)["error"]["message"]
    assert "input budget" in message and "nightly" in message
    assert emu.recorded_requests() == []


# --- 8. one batch cascade ----------------------------------------------------------------------


def test_one_batch_cascade_for_the_eval_and_the_router(
    emu: Any, make_router: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from tierwise.evals.batch import BatchCascadeEngine
    from tierwise.router import batch_cascade
    from tierwise.routerconfig import parse

    runs: list[str] = []
    original = batch_cascade.BatchCascadeRun.advance

    async def advance(self: Any) -> Any:
        runs.append(self.entry.id)
        return await original(self)

    monkeypatch.setattr(batch_cascade.BatchCascadeRun, "advance", advance)
    # The router's batch routes ...
    router = make_router(doc(emu.base_url))
    client = sdk(router)
    script(emu)
    batch = client.messages.batches.create(requests=requests())  # type: ignore[arg-type]
    until_ended(client, batch.id)
    router_cost = exactly_once(client, batch.id)
    assert batch.id in runs
    # ... and the eval's useBatchAPI mode, on the same items and answers: the same machine,
    # the same requests upstream, the same figures.
    runs.clear()
    emu.reset()
    script(emu)
    bodies = [r["params"] for r in requests()]

    async def go() -> Any:
        config_ = parse(doc(emu.base_url))
        async with BatchCascadeEngine(config_, tier_env(), poll_seconds=0.01) as engine:
            return await engine.run_all("nightly", bodies)

    results = asyncio.run(go())
    assert runs  # the eval drove the router's machine
    assert sorted(r.escalations for r in results) == [0, 0, 1, 1]
    assert sum((r.cost for r in results), Decimal(0)) == router_cost
    assert sizes(emu) == [4, 2]


GOOD = json.dumps({"model": "tierwise/nightly", "max_tokens": 5, "messages": user("x")}).encode()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[]", "requests"),
        (b'{"requests": []}', "non-empty"),
        (b'{"requests": [{"custom_id": "a", "params": {}}] ', "max_tokens"),
        (b'{"requests": [{"custom_id": "a"}]}', "requests.0.params"),
        (b'{"requests": [{"custom_id": "' + b"x" * 65 + b'", "params": {}}]}', "custom_id"),
        (b'{"requests": [1]}', "requests.0"),
        (b'{"requests": [], "other": 1}', "other"),
        (b'{"requests": [{"custom_id": "a", "params": {"max_tokens": NaN}}]}', "requests.0"),
        (b'{"requests": [{"custom_id": "a", "params": ' + GOOD + b"}]} x", "JSON"),
        (b'{"requests": [{"custom_id": "a", "params": ' + GOOD + b"}", "JSON"),
    ],
)
def test_api_contract_a_bad_batch_body_is_a_400_naming_what_is_wrong(
    emu: Any, make_router: Any, tmp_path: Path, body: bytes, says: str
) -> None:
    state = tmp_path / "batches"
    router = make_router(doc(emu.base_url), batch_state_dir=state)
    status, _, raw = raw_request(router.base_url, "/v1/messages/batches", data=body)
    assert status == 400, raw
    error = json.loads(raw)["error"]
    assert error["type"] == "invalid_request_error" and says in error["message"], error
    assert emu.recorded_requests() == []
    assert not [p for p in state.rglob("*") if p.is_file()]  # nothing kept


def test_memory_is_bounded_on_disk_too_the_batch_storage_has_a_budget(
    emu: Any, make_router: Any, tmp_path: Path
) -> None:
    """The state directory is a size-limited volume (its overflow evicts the pod): ended
    batches make room early, then new batches are refused, saying why."""
    router = make_router(
        doc(emu.base_url), batch_state_dir=tmp_path / "b", batch_state_max_bytes=200_000
    )
    client = sdk(router)
    emu.script("*", [{"text": SURE}] * 40)

    def body(kb: int) -> bytes:
        items = requests()
        items[0]["params"]["metadata"] = {"user_id": "u" * 10}
        items[0]["params"]["messages"] = user("w " * (kb * 500))
        return json.dumps({"requests": items}).encode()

    status, _, raw = raw_request(router.base_url, "/v1/messages/batches", data=body(200))
    assert status == 413 and b"--batch-state-max-bytes" in raw
    first = json.loads(raw_request(router.base_url, "/v1/messages/batches", data=body(60))[2])
    until_ended(client, first["id"])
    for _ in range(2):  # each needs twice its size while it is checked: the first goes
        status, _, raw = raw_request(router.base_url, "/v1/messages/batches", data=body(60))
        assert status == 200, raw
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(first["id"])
    # The batches left are in progress (never polled): nothing may be deleted for a new one.
    status, _, raw = raw_request(router.base_url, "/v1/messages/batches", data=body(60))
    assert status == 429 and b"in progress" in raw


def test_each_item_counted_once_under_concurrent_polls(emu: Any, make_router: Any) -> None:
    router = make_router(doc(emu.base_url))
    script(emu)
    batch = sdk(router).messages.batches.create(requests=requests())  # type: ignore[arg-type]
    emu.fail_batches("create", create_delay=0.3)  # polls pile up on the next step's create

    def poll() -> None:
        client = sdk(router)
        for _ in range(10):
            client.messages.batches.retrieve(batch.id)

    threads = [threading.Thread(target=poll) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    emu.fail_batches("create", create_delay=0)
    client = sdk(router)
    until_ended(client, batch.id)
    assert_counted_once(router, emu, client, batch.id)
