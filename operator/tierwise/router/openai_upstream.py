"""The upstream adapter of ``provider: openai`` tiers: the Messages API in, Chat Completions out.

``Upstream.call`` and ``Upstream.open_stream`` hand a call to this adapter when the tier's
client carries it (``runtime.build_runtime`` attaches it to OpenAI-compatible tiers). The
adapter translates the request (``openai_translate``), makes the same retried call to the
server's ``/v1/chat/completions`` and translates the answer, the stream or the error back,
so the cascade, pricing and escalation see a Messages API answer like any other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from tierwise.router.errors import ERROR_TYPES, error_body
from tierwise.router.jsonutil import dumps, loads
from tierwise.router.openai_translate import (
    BadAnswer,
    StreamError,
    StreamTranslator,
    TranslationError,
    error_message,
    from_chat_response,
    prompt_text,
    response_format,
    to_chat_request,
)
from tierwise.router.request import estimate_prompt_tokens
from tierwise.router.sse import error_event
from tierwise.router.upstream import (
    CLIENT_ERROR,
    CONNECTION,
    COUNT_TOKENS_PATH,
    SERVER_ERROR,
    TIMEOUT,
    Reply,
    Stream,
    TierClient,
    Upstream,
    UpstreamFailure,
)
from tierwise.routerconfig import RetryPolicy

CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"
# Tokenizer endpoints, tried in order: llama-cpp-python's, then vLLM's (llama.cpp's
# ``llama-server`` and Ollama have none that counts a chat); otherwise the router's estimate.
TOKENIZERS = ("/extras/tokenize", "/tokenize")


class OpenAIAdapter:
    """Translates one tier's calls; stateless but for which tokenizer endpoint answered."""

    def __init__(self) -> None:
        self._tokenizer: str | bool | None = False  # False: not probed yet; None: none

    async def call(
        self,
        upstream: Upstream,
        client: TierClient,
        path: str,
        payload: bytes | None,
        retry: RetryPolicy,
        *,
        attempts: int | None,
        logprobs: bool,
        schema: Mapping[str, Any] | None = None,
        deadline: float | None = None,
    ) -> Reply:
        if path not in (MESSAGES_PATH, COUNT_TOKENS_PATH):
            # Checked first: a batch's payload may be a spooled file, never read here.
            message = f"tier {client.tier.name!r} is an OpenAI-compatible server: it has no {path}"
            raise _refused(message)
        body = _request(payload)
        if path == MESSAGES_PATH:
            chat = _chat(client, body, stream=False, logprobs=logprobs, schema=schema)
            reply = await _raw(upstream.call(client, CHAT_PATH, dumps(chat), {}, retry,
                                             attempts=attempts, deadline=deadline, raw=True), client)  # fmt: skip
            try:
                answer = from_chat_response(
                    reply.document,
                    model=client.tier.model,
                    stop_sequences=body.get("stop_sequences") or (),
                )
            except BadAnswer as exc:
                raise _bad_answer(client, exc) from exc
            return Reply(
                200, dumps(answer.message), reply.request_id,
                document=answer.message, logprobs=answer.logprobs,
            )  # fmt: skip
        count = await self._count_tokens(upstream, client, body, retry)
        document = {"input_tokens": count}
        return Reply(200, dumps(document), None, document=document)

    async def open_stream(
        self,
        upstream: Upstream,
        client: TierClient,
        payload: bytes,
        retry: RetryPolicy,
        *,
        attempts: int | None,
        deadline: float | None = None,
    ) -> Stream:
        body = _request(payload)
        chat = _chat(client, body, stream=True, logprobs=False)
        stream = await _raw(
            upstream.open_stream(client, CHAT_PATH, dumps(chat), {}, retry,
                                 attempts=attempts, deadline=deadline, raw=True), client,
        )  # fmt: skip
        translator = StreamTranslator(
            model=client.tier.model,
            estimated_input=estimate_prompt_tokens(body),
            stop_sequences=body.get("stop_sequences") or (),
        )
        return TranslatedStream(stream, translator)

    async def _count_tokens(
        self, upstream: Upstream, client: TierClient, body: Mapping[str, Any], retry: RetryPolicy
    ) -> int:
        """The server's tokenizer count where it has one, else the router's estimate."""
        chat = _chat(client, body, stream=False, logprobs=False)
        candidates = TOKENIZERS if self._tokenizer is False else (self._tokenizer,)
        for path in candidates:
            if path is None:
                break
            request = _tokenize_request(path, client.tier.model, chat)
            try:
                reply = await upstream.call(client, path, dumps(request), {}, retry, raw=True)
            except UpstreamFailure as failure:
                if failure.status in (404, 405) and self._tokenizer is False:
                    continue
                raise _translated_failure(client, failure) from None
            count = _token_count(reply.document)
            if count is not None:
                self._tokenizer = path
                return count
        self._tokenizer = None
        return estimate_prompt_tokens(body)


class TranslatedStream(Stream):
    """An upstream OpenAI stream whose body reads as the Messages API's SSE events.

    The relay reads ``response.content.readany()`` and ``response.headers``, as for an
    Anthropic stream; this object is both the response and its content.
    """

    def __init__(self, raw: Stream, translator: StreamTranslator) -> None:
        self._raw = raw
        self._translator = translator
        self._ended = False
        self.response = self  # type: ignore[assignment]
        self.content = self
        self.headers = raw.response.headers

    @property
    def request_id(self) -> str | None:
        return self._raw.request_id

    async def readany(self) -> bytes:
        """The next translated events; ``b""`` once the stream (and its closing events) ended."""
        while not self._ended:
            try:
                chunk = await self._raw.response.content.readany()
                if not chunk:
                    self._ended = True
                    return self._translator.finish()
                events = self._translator.feed(chunk)
            except (StreamError, BadAnswer) as exc:
                # Like the API's own mid-stream failure: an ``error`` event ends the stream.
                self._ended = True
                return error_event("api_error", f"the tier's stream failed: {exc}")
            if events:
                return events
        return b""

    async def chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.readany():
            yield chunk

    def scrub(self, chunk: bytes) -> bytes:
        return self._raw.scrub(chunk)

    def close(self, *, abort: bool = False) -> None:
        self._raw.close(abort=abort)


def _request(payload: bytes | None) -> dict[str, Any]:
    body = loads(payload or b"{}")
    return body if isinstance(body, dict) else {}


def _chat(
    client: TierClient,
    body: Mapping[str, Any],
    *,
    stream: bool,
    logprobs: bool,
    schema: Mapping[str, Any] | None = None,
) -> dict:
    """The translated request; with the step's answer ``schema`` as a ``response_format``
    when the tier's ``structuredOutput`` says how to send one."""
    wanted = response_format(client.tier.structured_output, schema)
    try:
        chat = to_chat_request(body, stream=stream, logprobs=logprobs, response_format=wanted)
    except TranslationError as exc:
        raise _refused(f"tier {client.tier.name!r}: {exc}") from exc
    chat["model"] = client.tier.model
    return chat


async def _raw(call: Any, client: TierClient) -> Any:
    """Await an upstream call, its failure in the Messages API's error shape."""
    try:
        return await call
    except UpstreamFailure as failure:
        raise _translated_failure(client, failure) from None


def _translated_failure(client: TierClient, failure: UpstreamFailure) -> UpstreamFailure:
    """The server's error body (OpenAI, FastAPI or Ollama shape) as the API's error body;
    the status, and with it the retry class, stays the server's."""
    if failure.kind in (TIMEOUT, CONNECTION):
        return failure  # the router wrote these bodies itself
    detail = error_message(failure.body) or "no error message"
    error_type = ERROR_TYPES.get(failure.status)
    if error_type is None:
        error_type = "invalid_request_error" if failure.kind == CLIENT_ERROR else "api_error"
    message = f"tier {client.tier.name!r} answered HTTP {failure.status}: {detail}"
    failure.body = client.scrub(error_body(error_type, message[:2000]))
    return failure


def _refused(message: str) -> UpstreamFailure:
    return UpstreamFailure(CLIENT_ERROR, 400, error_body("invalid_request_error", message))


def _bad_answer(client: TierClient, exc: Exception) -> UpstreamFailure:
    message = f"tier {client.tier.name!r} answered 2xx with a broken Chat Completion: {exc}"
    return UpstreamFailure(SERVER_ERROR, 502, error_body("api_error", message))


def _tokenize_request(path: str, model: str, chat: Mapping[str, Any]) -> dict[str, Any]:
    if path == "/extras/tokenize":
        return {"model": model, "input": prompt_text(chat)}
    return {"model": model, "messages": chat["messages"]}


def _token_count(document: Any) -> int | None:
    if not isinstance(document, Mapping):
        return None
    count = document.get("count")
    if isinstance(count, int) and not isinstance(count, bool):
        return count
    tokens = document.get("tokens")
    return len(tokens) if isinstance(tokens, list) else None
