"""Retry policy pieces: classification, backoff, retry-after (no network)."""

from __future__ import annotations

import email.utils

import pytest

from tierwise.router.upstream import (
    FALLBACK_NAMES,
    SERVER_ERROR,
    UpstreamFailure,
    backoff_seconds,
    classify_status,
    created_batch_id,
    forwarded_headers,
    parse_retry_after,
)
from tierwise.routerconfig import RetryPolicy


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, None),
        (400, "client_error"),
        (401, "client_error"),
        (429, "rate_limited"),
        (500, "server_error"),
        (503, "server_error"),
        (529, "overloaded"),
    ],
)
def test_classify(status: int, kind: str | None) -> None:
    assert classify_status(status) == kind


def test_fallback_names_match_the_documented_failures() -> None:
    assert set(FALLBACK_NAMES.values()) == {"overloaded", "rateLimited", "serverError", "timeout"}


def test_backoff_grows_is_capped_and_jittered() -> None:
    policy = RetryPolicy(5, 0.25, 1.0)
    assert backoff_seconds(0, policy, rand=lambda: 0.0) == pytest.approx(0.125)
    assert backoff_seconds(0, policy, rand=lambda: 1.0) == pytest.approx(0.25)
    assert backoff_seconds(2, policy, rand=lambda: 1.0) == pytest.approx(1.0)
    assert backoff_seconds(10, policy, rand=lambda: 1.0) == pytest.approx(1.0)
    assert backoff_seconds(10, policy, rand=lambda: 0.0) == pytest.approx(0.5)


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert parse_retry_after(date, now=1_000_000.0) == pytest.approx(30.0)


def test_only_protocol_headers_are_forwarded() -> None:
    sent = {
        "x-api-key": "client",
        "authorization": "Bearer c",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "b1",
        "x-tierwise-route": "r",
        "cookie": "c",
    }
    assert forwarded_headers(sent) == {"anthropic-version": "2023-06-01", "anthropic-beta": "b1"}


@pytest.mark.parametrize("document", [{}, {"id": 7}, {"id": "../admin"}, {"id": "a/b"}, []])
def test_a_created_batch_without_a_valid_id_is_an_upstream_error(document: object) -> None:
    # The id goes into later upstream URLs: only the API's id shape is taken.
    with pytest.raises(UpstreamFailure) as info:
        created_batch_id(document, "haiku")
    assert info.value.status == 502 and info.value.kind == SERVER_ERROR
    assert b"haiku" in info.value.body


def test_a_created_batch_id_is_returned() -> None:
    assert created_batch_id({"id": "msgbatch_01AbC-d_9"}, "haiku") == "msgbatch_01AbC-d_9"
