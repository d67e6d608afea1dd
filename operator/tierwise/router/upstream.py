"""Calls to a tier's Messages API: keep-alive session, concurrency limit, timeout, retries.

One ``aiohttp.ClientSession`` per router is shared by all tiers (keep-alive connection
pools per endpoint). Each attempt is bounded by the tier's ``timeoutSeconds`` (waiting
for a concurrency slot included, so nothing waits forever); 429, 529, other 5xx,
timeouts, connection errors and a 2xx whose body is not the JSON object the endpoint
promises are retried with jittered exponential backoff, a ``retry-after`` header
overriding the backoff. A 429 without ``retry-after`` (a spend limit) and other 4xx
answers are final and passed through to the client, with the tier's API key scrubbed
from their body and headers (an upstream or proxy that echoes a request's key must not
hand it to a client or a log). A failure records whether
the router already retried, so the client's SDK can be told not to retry on top
(``x-should-retry: false``).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tierwise.router.errors import error_body
from tierwise.router.jsonutil import loads
from tierwise.routerconfig import RetryPolicy, Tier

# A retry-after longer than this is not waited for: the failure is returned (or falls back)
# at once instead of holding the client's request for minutes.
MAX_RETRY_AFTER_SECONDS = 60.0
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"

# Failure kinds: the `type` label of upstream_errors, and the `fallback.on` names they match.
OVERLOADED, RATE_LIMITED, SERVER_ERROR = "overloaded", "rate_limited", "server_error"

# The upstream API paths the router calls, and the batch ids it puts into them: an id goes
# into an upstream URL only when it has this shape, whoever supplied it.
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
BATCHES_PATH = "/v1/messages/batches"
BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
TIMEOUT, CONNECTION, CLIENT_ERROR = "timeout", "connection", "client_error"
FALLBACK_NAMES = {
    OVERLOADED: "overloaded",
    RATE_LIMITED: "rateLimited",
    SERVER_ERROR: "serverError",
    CONNECTION: "serverError",  # no answer at all is a server-side failure
    TIMEOUT: "timeout",
}


def classify_status(status: int) -> str | None:
    """The failure kind of an HTTP status, ``None`` for success."""
    if status < 400:
        return None
    if status == 529:
        return OVERLOADED
    if status == 429:
        return RATE_LIMITED
    if status >= 500:
        return SERVER_ERROR
    return CLIENT_ERROR


def retryable(failure: UpstreamFailure) -> bool:
    """Worth another attempt: not a client error, and not a 429 without ``retry-after``.

    The API sends ``retry-after`` with every rate-limit 429; one without it (a spend limit,
    say) will not clear by waiting, so retrying only delays the answer and adds load.
    """
    if failure.kind == CLIENT_ERROR:
        return False
    return not (failure.kind == RATE_LIMITED and failure.retry_after is None)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``retry-after`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_seconds(
    attempt: int, policy: RetryPolicy, rand: Callable[[], float] = random.random
) -> float:
    """Jittered exponential backoff before retry number ``attempt`` (0-based).

    "Equal jitter": half the exponential delay is fixed, half random, so retries of many
    clients spread out but none retries immediately.
    """
    ceiling = min(policy.max_backoff_seconds, policy.initial_backoff_seconds * (2**attempt))
    return ceiling / 2 + rand() * ceiling / 2


@dataclass
class UpstreamFailure(Exception):
    """An upstream call that did not succeed; carries what the client should get."""

    kind: str
    status: int
    body: bytes
    retry_after: float | None = None
    request_id: str | None = None
    retried: bool = False  # the router already made more than one attempt for this call

    def __str__(self) -> str:
        return f"upstream {self.kind} ({self.status})"


@dataclass
class Reply:
    """A buffered upstream answer (2xx)."""

    status: int
    body: bytes
    request_id: str | None
    content_type: str = "application/json"
    document: Any = None  # the decoded body, when the call expected a JSON object
    logprobs: Any = None  # token log-probabilities of an OpenAI-compatible tier's answer


REDACTED = "[redacted tier key]"


class TierClient:
    """One tier's endpoint, key and concurrency slots."""

    def __init__(
        self,
        tier: Tier,
        api_key: str | None,
        semaphore: asyncio.Semaphore,
        adapter: Any = None,
    ) -> None:
        self.tier = tier
        self.semaphore = semaphore
        # Translates calls for a tier that does not speak the Messages API (provider openai).
        self.adapter = adapter
        self.base_headers: dict[str, str] = {
            "content-type": "application/json",
            "accept": "application/json",
        }
        self._key = api_key.encode() if api_key else None
        if api_key and adapter is not None:
            self.base_headers["authorization"] = f"Bearer {api_key}"
        elif api_key:
            self.base_headers["x-api-key"] = api_key

    def scrub(self, data: bytes) -> bytes:
        """``data`` without this tier's API key (replaced by a marker)."""
        if self._key is None or self._key not in data:
            return data
        return data.replace(self._key, REDACTED.encode())

    def scrub_header(self, value: str | None) -> str | None:
        """An upstream header value without this tier's API key."""
        if value is None or self._key is None:
            return value
        return self.scrub(value.encode("utf-8", "surrogateescape")).decode(
            "utf-8", "surrogateescape"
        )

    def url(self, path: str) -> str:
        return self.tier.endpoint + path

    def headers(self, forwarded: Mapping[str, str]) -> dict[str, str]:
        headers = dict(self.base_headers)
        if self.adapter is None:
            headers.update(forwarded)
            headers.setdefault("anthropic-version", DEFAULT_ANTHROPIC_VERSION)
        return headers


# Client headers passed upstream; everything else (x-api-key, authorization, cookies,
# x-tierwise-*) stays in the router.
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name in FORWARDED_HEADERS if (value := headers.get(name, ""))}


OnFailure = Callable[[str, str], None]  # (tier name, failure kind)
OnRetry = Callable[[str], None]  # tier name
OnQueueWait = Callable[[str, float], None]  # tier name, seconds waited for a concurrency slot


class Upstream:
    """Sends requests to tiers with retries; reports failures and retries to callbacks."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        on_failure: OnFailure,
        on_retry: OnRetry,
        sleep: Callable[[float], Any] = asyncio.sleep,
        on_queue_wait: OnQueueWait | None = None,
    ) -> None:
        self.session = session
        self._on_failure = on_failure
        self._on_retry = on_retry
        self._sleep = sleep
        self._on_queue_wait = on_queue_wait

    async def _acquire(self, client: TierClient) -> None:
        """Take one of the tier's ``maxConcurrency`` slots, reporting how long that took."""
        started = time.perf_counter()
        await client.semaphore.acquire()
        if self._on_queue_wait is not None:
            self._on_queue_wait(client.tier.name, time.perf_counter() - started)

    async def call(
        self,
        client: TierClient,
        path: str,
        payload: bytes | Path | None,
        headers: Mapping[str, str],
        retry: RetryPolicy,
        *,
        attempts: int | None = None,
        method: str = "POST",
        expect_json: bool = True,
        deadline: float | None = None,
        logprobs: bool = False,
        schema: Mapping[str, Any] | None = None,
        raw: bool = False,
    ) -> Reply:
        """A buffered request with retries; raises ``UpstreamFailure`` when it gives up.

        With ``expect_json`` a 2xx must carry a JSON object (``Reply.document``); anything
        else is a server error, retried and eligible for fallback like a 5xx. ``deadline``
        (``time.monotonic()``) ends the first attempt earlier than the tier's timeout when
        the request already spent part of it (see ``Exchange.deadline``). A tier with an
        adapter gets the call translated (``raw``: the adapter's own, untranslated call);
        ``logprobs`` asks it for the answer's token log-probabilities, ``schema`` for an
        answer matching that JSON schema (where the tier's ``structuredOutput`` allows).
        """
        if client.adapter is not None and not raw:
            return await client.adapter.call(
                self, client, path, payload, retry,
                attempts=attempts, logprobs=logprobs, schema=schema, deadline=deadline,
            )  # fmt: skip
        max_attempts = attempts or retry.max_attempts
        for attempt in range(max_attempts):
            try:
                timeout = attempt_timeout(client, deadline if attempt == 0 else None)
                return await self._buffered_attempt(
                    client, path, payload, headers, method, expect_json, timeout
                )
            except UpstreamFailure as failure:
                await self._after_failure(client, failure, attempt, max_attempts, retry)
        raise AssertionError("unreachable")  # pragma: no cover

    async def open_stream(
        self,
        client: TierClient,
        path: str,
        payload: bytes,
        headers: Mapping[str, str],
        retry: RetryPolicy,
        *,
        attempts: int | None = None,
        deadline: float | None = None,
        raw: bool = False,
    ) -> Stream:
        """A streaming request whose response started with 200; retried before that."""
        if client.adapter is not None and not raw:
            return await client.adapter.open_stream(
                self, client, payload, retry, attempts=attempts, deadline=deadline
            )
        max_attempts = attempts or retry.max_attempts
        for attempt in range(max_attempts):
            try:
                timeout = attempt_timeout(client, deadline if attempt == 0 else None)
                return await self._stream_attempt(client, path, payload, headers, timeout)
            except UpstreamFailure as failure:
                await self._after_failure(client, failure, attempt, max_attempts, retry)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _after_failure(
        self,
        client: TierClient,
        failure: UpstreamFailure,
        attempt: int,
        max_attempts: int,
        retry: RetryPolicy,
    ) -> None:
        """Count the failure, then re-raise it or sleep before the next attempt."""
        self._on_failure(client.tier.name, failure.kind)
        failure.retried = attempt > 0
        if not retryable(failure) or attempt + 1 >= max_attempts:
            raise failure
        delay = failure.retry_after
        if delay is None:
            delay = backoff_seconds(attempt, retry)
        elif delay > MAX_RETRY_AFTER_SECONDS:
            raise failure
        self._on_retry(client.tier.name)
        await self._sleep(delay)

    async def _buffered_attempt(
        self,
        client: TierClient,
        path: str,
        payload: bytes | Path | None,
        headers: Mapping[str, str],
        method: str = "POST",
        expect_json: bool = True,
        timeout: float | None = None,
    ) -> Reply:
        timeout = client.tier.limits.timeout_seconds if timeout is None else timeout
        try:
            async with asyncio.timeout(timeout):
                await self._acquire(client)
                # A file payload (a large batch body) is streamed, reopened for each attempt.
                data = payload.open("rb") if isinstance(payload, Path) else payload
                try:
                    async with self.session.request(
                        method, client.url(path), data=data, headers=client.headers(headers)
                    ) as response:
                        body = await response.read()
                        status = response.status
                        request_id = client.scrub_header(response.headers.get("request-id"))
                        retry_after = response.headers.get("retry-after")
                        content_type = response.content_type
                finally:
                    client.semaphore.release()
                    if data is not payload and data is not None:
                        data.close()  # type: ignore[union-attr]
        except TimeoutError as exc:
            raise _timeout_failure(client, timeout) from exc
        except aiohttp.ClientError as exc:
            raise _connection_failure(client, exc) from exc
        kind = classify_status(status)
        if kind is None:
            if not expect_json:
                return Reply(status, body, request_id, content_type)
            return Reply(status, body, request_id, content_type, _json_object(client, body))
        failure_body = client.scrub(body)
        raise UpstreamFailure(
            kind, status, failure_body, parse_retry_after(retry_after), request_id
        )

    async def _stream_attempt(
        self,
        client: TierClient,
        path: str,
        payload: bytes,
        headers: Mapping[str, str],
        timeout: float | None = None,
    ) -> Stream:
        tier_timeout = client.tier.limits.timeout_seconds
        # Between chunks a stream may be quiet, but never longer than the tier timeout.
        read_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=tier_timeout, sock_read=tier_timeout
        )
        open_timeout = tier_timeout if timeout is None else timeout
        acquired = False
        response: aiohttp.ClientResponse | None = None
        try:
            async with asyncio.timeout(open_timeout):
                await self._acquire(client)
                acquired = True
                response = await self.session.post(
                    client.url(path),
                    data=payload,
                    headers=client.headers(headers),
                    timeout=read_timeout,
                )
                kind = classify_status(response.status)
                if kind is None:
                    stream = Stream(response, client.semaphore, client)
                    acquired = False  # the stream releases the slot when it closes
                    return stream
                body = await response.read()
        except TimeoutError as exc:
            raise _timeout_failure(client, open_timeout) from exc
        except aiohttp.ClientError as exc:
            raise _connection_failure(client, exc) from exc
        finally:
            if acquired:
                client.semaphore.release()
                if response is not None:
                    response.release()
        raise UpstreamFailure(
            kind,
            response.status,
            client.scrub(body),
            parse_retry_after(response.headers.get("retry-after")),
            client.scrub_header(response.headers.get("request-id")),
        )


class Stream:
    """An open upstream SSE response holding a concurrency slot until ``close``."""

    def __init__(
        self, response: aiohttp.ClientResponse, semaphore: asyncio.Semaphore, client: TierClient
    ) -> None:
        self.response = response
        self._semaphore = semaphore
        self._client = client
        self._closed = False

    @property
    def request_id(self) -> str | None:
        return self._client.scrub_header(self.response.headers.get("request-id"))

    async def chunks(self) -> Any:
        async for chunk in self.response.content.iter_any():
            yield chunk

    def scrub(self, chunk: bytes) -> bytes:
        """A chunk of the stream without the tier's key (an ``error`` event could echo it)."""
        return self._client.scrub(chunk)

    def close(self, *, abort: bool = False) -> None:
        """Release the slot; ``abort`` drops the connection so upstream stops generating."""
        if self._closed:
            return
        self._closed = True
        if abort:
            self.response.close()
        else:
            self.response.release()
        self._semaphore.release()


def attempt_timeout(client: TierClient, deadline: float | None) -> float:
    """An attempt's timeout: the tier's, or less when ``deadline`` comes first (at least a
    moment, so the attempt fails as a timeout instead of not being made)."""
    timeout = client.tier.limits.timeout_seconds
    if deadline is None:
        return timeout
    return max(0.001, min(timeout, deadline - time.monotonic()))


def _json_object(client: TierClient, body: bytes) -> dict[str, Any]:
    """A 2xx body as the JSON object it must be; otherwise a (retryable) server error."""
    try:
        document = loads(body)
    except (ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        message = f"tier {client.tier.name!r} answered 2xx with a body that is not a JSON object"
        raise UpstreamFailure(SERVER_ERROR, 502, error_body("api_error", message))
    return document


def _timeout_failure(client: TierClient, timeout: float) -> UpstreamFailure:
    message = f"tier {client.tier.name!r} did not answer within {timeout:g}s"
    return UpstreamFailure(TIMEOUT, 504, error_body("timeout_error", message))


def _connection_failure(client: TierClient, exc: BaseException) -> UpstreamFailure:
    message = f"tier {client.tier.name!r} unreachable: {type(exc).__name__}"
    return UpstreamFailure(CONNECTION, 502, error_body("api_error", message))


def created_batch_id(document: Any, tier_name: str) -> str:
    """The id of a batch the upstream just created; a missing or malformed one is a 502."""
    batch_id = document.get("id") if isinstance(document, dict) else None
    if not isinstance(batch_id, str) or not BATCH_ID.fullmatch(batch_id):
        message = f"tier {tier_name!r} created a batch without a valid id"
        raise UpstreamFailure(SERVER_ERROR, 502, error_body("api_error", message))
    return batch_id
