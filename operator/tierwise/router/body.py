"""Decoding a client's JSON body: strict, bounded, and off the event loop when large.

Everything a hostile body can do is answered with the API's 400 (or 413), never a 500:
invalid JSON, `NaN`/`Infinity` and numbers that overflow to infinity, nesting deeper than
the decoder allows, lone UTF-16 surrogates (which cannot be re-encoded for the upstream),
a top level that is not an object, and more JSON structure than ``MAX_JSON_STRUCTURE``.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any

from tierwise.router.errors import RouterError, invalid_request
from tierwise.routerconfig.sidecar import MAX_JSON_STRUCTURE, OFF_LOOP_DECODE_BYTES

_STRUCTURE_BYTES = (b"{", b"[", b",", b":")
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


def decode_json_object(raw: bytes, *, max_structure: int = MAX_JSON_STRUCTURE) -> dict[str, Any]:
    """The body as a JSON object, or a ``RouterError`` saying what is wrong with it."""
    if len(raw) > max_structure:  # cheap: fewer bytes than the budget cannot exceed it
        structure = sum(raw.count(b) for b in _STRUCTURE_BYTES)
        if structure > max_structure:
            raise RouterError(
                413,
                f"request body has {structure} JSON separators, more than the router's "
                f"limit of {max_structure}",
            )
    try:
        text = raw.decode("utf-8")
        body = _DECODER.decode(text)
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


async def decode_json_object_async(raw: bytes) -> dict[str, Any]:
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
