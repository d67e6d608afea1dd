"""JSON encoding for the hot path: orjson when installed, the standard library otherwise.

The router parses every request and response body once; orjson does that several times
faster than ``json``. Both give the same values, so behaviour never depends on which one
is present.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

try:  # pragma: no cover - depends on the environment
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None

__all__ = ["JSON_BACKEND", "JSONDecodeError", "dumps", "loads", "sha256_hex"]

JSON_BACKEND = "json" if _orjson is None else "orjson"  # which one this process uses

JSONDecodeError = ValueError  # both json.JSONDecodeError and orjson.JSONDecodeError subclass it


if _orjson is not None:

    def loads(data: bytes | str) -> Any:
        return _orjson.loads(data)

    def dumps(value: Any) -> bytes:
        """Compact JSON bytes (separators `,` and `:`).

        orjson parses up to 1,024 levels of nesting but encodes only 255: a body between
        the two raises ``RecursionError`` here, as the standard library does past its own
        limit, so the router answers both backends' "too deep" with the same 400.
        """
        try:
            return _orjson.dumps(value)
        except _orjson.JSONEncodeError as exc:
            if "Recursion limit" in str(exc):
                raise RecursionError(str(exc)) from None
            raise

else:  # pragma: no cover

    def loads(data: bytes | str) -> Any:
        return json.loads(data)

    def dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
