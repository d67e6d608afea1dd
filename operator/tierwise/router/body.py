"""Reading and decoding a client's JSON body: strict, bounded, and off the event loop when large.

``BodyBudget`` bounds the bytes of request bodies the router holds at once (read, decoded,
and sent upstream), so the peak memory of any number of concurrent large requests stays
under the sidecar's limit: a request waits for its share before its body is read (the
bytes stay in the socket meanwhile), and gets the API's 429 if it waits too long.

Everything a hostile body can do is answered with the API's 400 (or 413), never a 500:
invalid JSON, `NaN`/`Infinity` and numbers that overflow to infinity, nesting deeper than
the decoder allows, lone UTF-16 surrogates (which cannot be re-encoded for the upstream),
a top level that is not an object, and more JSON structure than ``MAX_JSON_STRUCTURE``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import re
from typing import Any

from tierwise.router.errors import RouterError, invalid_request, too_large
from tierwise.routerconfig.sidecar import MAX_JSON_STRUCTURE, OFF_LOOP_DECODE_BYTES

_STRUCTURE_BYTES = (b"{", b"[", b",", b":")
# A separator's decoded cost (~75 bytes of objects) over a text byte's (~5 bytes).
BYTES_PER_SEPARATOR = 15
# A \uD800-\uDFFF escape in the raw text: only then can a decoded string hold a surrogate
# (the decoder joins valid pairs into one character; what is left alone is lone).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _BadNumber(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _BadNumber(f"{name} is not a valid JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _BadNumber(f"number {text[:40]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def structure_count(raw: bytes | bytearray) -> int:
    """The JSON separators (``{ [ , :``) in a body: what its decoded size grows with."""
    return sum(raw.count(b) for b in _STRUCTURE_BYTES)


def body_charge(raw: bytes | bytearray) -> int:
    """What a read body costs of the ``BodyBudget``, in bytes of a plain-text body.

    A text body's peak memory is about five times its size (the bytes, the decoded text,
    the upstream payload and buffers); a body of many small values decodes to far more
    (about 75 bytes per separator), so each separator is charged as the text bytes that
    would cost as much.
    """
    return max(len(raw), structure_count(raw) * BYTES_PER_SEPARATOR)


def decode_json_object(
    raw: bytes | bytearray, *, max_structure: int = MAX_JSON_STRUCTURE
) -> dict[str, Any]:
    """The body as a JSON object, or a ``RouterError`` saying what is wrong with it."""
    if len(raw) > max_structure:  # cheap: fewer bytes than the budget cannot exceed it
        structure = structure_count(raw)
        if structure > max_structure:
            raise RouterError(
                413,
                f"request body has {structure} JSON separators, more than the router's "
                f"limit of {max_structure}",
            )
    try:
        text = raw.decode("utf-8")
        body = _DECODER.decode(text)
        del text  # as large as the body: not kept for the checks below
    except UnicodeDecodeError as exc:
        raise invalid_request(f"The request body is not valid UTF-8: {exc.reason}") from exc
    except RecursionError as exc:
        raise invalid_request("The request body is nested too deeply") from exc
    except ValueError as exc:
        raise invalid_request(
            f"There was an error parsing the body of your request: {exc}"
        ) from exc
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object")
    if _SURROGATE_ESCAPE.search(raw) and _has_surrogate(body):
        raise invalid_request(
            "The request body contains a lone UTF-16 surrogate (\\ud800-\\udfff) in a string"
        )
    return body


async def read_body(content: Any, max_bytes: int) -> bytearray:
    """A request's body, read chunk by chunk into one buffer (no second whole copy).

    Not aiohttp's ``request.read()``: it keeps a second copy of the body on the request for
    as long as the request lives, and raises the socket read buffer to the body limit.
    Raises ``too_large`` past ``max_bytes``.
    """
    body = bytearray()
    while chunk := await content.readany():
        body += chunk
        if len(body) > max_bytes:
            raise too_large(max_bytes)
    return body


async def decode_json_object_async(raw: bytes | bytearray) -> dict[str, Any]:
    """``decode_json_object``, in a worker thread when the body is large."""
    if len(raw) <= OFF_LOOP_DECODE_BYTES:
        return decode_json_object(raw)
    return await asyncio.to_thread(decode_json_object, raw)


def _has_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:  # iterative: the body may be as deep as the decoder allowed
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class BodyBudget:
    """At most ``limit`` bytes of request bodies in the router at once, first come first served.

    A request holds its body's size (its ``Content-Length``; the router's body limit when it
    is not known in advance) from before the body is read until its answer is sent, since
    the decoded body and the upstream payload live that long. ``limit`` is raised to fit at
    least one body of the largest accepted size.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.free = limit
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def acquire(self, size: int, timeout: float) -> int | None:
        """Take ``size`` bytes (at most ``limit``): the bytes held, to ``release`` later;
        ``None`` when ``timeout`` passed first."""
        size = min(size, self.limit)
        if not self._waiters and size <= self.free:
            self.free -= size
            return size
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await future
            return size
        except (TimeoutError, asyncio.CancelledError) as exc:
            if future.done() and not future.cancelled():
                self.release(size)  # granted just as the waiter gave up: hand it back
            else:
                future.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
                self._wake()  # the next waiter may fit now that this one left the queue
            if isinstance(exc, TimeoutError):
                return None
            raise

    def try_acquire(self, size: int) -> bool:
        """Take ``size`` more bytes now if they are free (never waits, so a request that
        already holds bytes never waits for more: no two can wait on each other)."""
        if size > self.free:
            return False
        self.free -= size
        return True

    def release(self, size: int) -> None:
        self.free = min(self.limit, self.free + size)
        self._wake()

    def _wake(self) -> None:
        """Grant waiters in order while the first one fits (no overtaking: no starvation)."""
        while self._waiters and self._waiters[0][0] <= self.free:
            size, future = self._waiters.popleft()
            if future.done():
                continue
            self.free -= size
            future.set_result(None)
