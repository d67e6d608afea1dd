"""The Message Batches API through the real SDK."""

from __future__ import annotations

import anthropic
import pytest
from emulator_helpers import API_KEY, HAIKU, SONNET, user

from tierwise.emulator import EmulatorConfig, EmulatorThread

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
]


def requests() -> list[dict]:
    return [
        {
            "custom_id": "ok-1",
            "params": {"model": HAIKU, "max_tokens": 50, "messages": user("first")},
        },
        {"custom_id": "bad", "params": {"model": HAIKU, "messages": user("no max_tokens")}},
        {
            "custom_id": "ok-2",
            "params": {"model": SONNET, "max_tokens": 50, "messages": user("second")},
        },
        {
            "custom_id": "missing",
            "params": {"model": "claude-nope", "max_tokens": 5, "messages": user("x")},
        },
    ]


def test_batch_is_answered_with_normal_usage(
    emu: EmulatorThread, client: anthropic.Anthropic
) -> None:
    batch = client.messages.batches.create(requests=requests())
    assert batch.id.startswith("msgbatch_")
    assert batch.processing_status == "ended"
    counts = batch.request_counts
    assert (counts.succeeded, counts.errored, counts.processing) == (2, 2, 0)
    assert client.messages.batches.retrieve(batch.id).id == batch.id

    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert set(results) == {"ok-1", "bad", "ok-2", "missing"}
    assert results["ok-1"].type == "succeeded"
    message = results["ok-1"].message
    interactive = client.messages.create(model=HAIKU, max_tokens=50, messages=user("first"))
    assert message.content[0].text == interactive.content[0].text
    assert message.usage.input_tokens == interactive.usage.input_tokens
    assert message.usage.output_tokens == interactive.usage.output_tokens
    assert message.usage.service_tier == "batch"
    assert results["bad"].type == "errored"
    assert results["bad"].error.error.type == "invalid_request_error"
    assert results["missing"].error.error.type == "not_found_error"


def test_batch_in_progress_until_the_clock_moves() -> None:
    config = EmulatorConfig(zero_latency=True, batch_processing_seconds=60)
    with EmulatorThread(config) as thread:
        client = anthropic.Anthropic(base_url=thread.base_url, api_key=API_KEY, max_retries=0)
        batch = client.messages.batches.create(requests=requests()[:1])
        assert batch.processing_status == "in_progress"
        assert batch.request_counts.processing == 1 and batch.results_url is None
        thread.advance_clock(61)
        done = client.messages.batches.retrieve(batch.id)
        assert done.processing_status == "ended" and done.ended_at is not None
        assert [r.result.type for r in client.messages.batches.results(batch.id)] == ["succeeded"]

        other = client.messages.batches.create(requests=requests()[:1])
        canceling = client.messages.batches.cancel(other.id)
        # Cancelation is not instant: the batch is "canceling" until in-flight work stops.
        assert canceling.processing_status == "canceling"
        assert canceling.cancel_initiated_at is not None
        thread.advance_clock(2)
        canceled = client.messages.batches.retrieve(other.id)
        assert canceled.processing_status == "ended" and canceled.request_counts.canceled == 1
        assert [r.result.type for r in client.messages.batches.results(other.id)] == ["canceled"]


def test_list_and_delete(client: anthropic.Anthropic) -> None:
    ids = [client.messages.batches.create(requests=requests()[:1]).id for _ in range(3)]
    listed = [b.id for b in client.messages.batches.list(limit=10)]
    assert listed == list(reversed(ids))
    page = client.messages.batches.list(limit=2)
    assert len(page.data) == 2 and page.has_more
    deleted = client.messages.batches.delete(ids[0])
    assert deleted.id == ids[0] and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(ids[0])


def test_batch_items_consume_scripts(emu: EmulatorThread, client: anthropic.Anthropic) -> None:
    emu.script(HAIKU, [{"error": 529}])
    batch = client.messages.batches.create(requests=requests()[:1])
    (line,) = list(client.messages.batches.results(batch.id))
    assert line.result.type == "errored" and line.result.error.error.type == "overloaded_error"


def test_invalid_batch_is_rejected(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="duplicate custom_id"):
        client.messages.batches.create(requests=[requests()[0], requests()[0]])
