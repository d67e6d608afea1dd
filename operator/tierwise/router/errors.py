"""Errors in the Messages API's shape: ``{"type": "error", "error": {"type", "message"}}``.

Every failure the router answers (bad request, unknown route, upstream trouble) uses this
body with the status the API would use, so SDKs raise their usual exception classes.
"""

from __future__ import annotations

import traceback

from tierwise.router.jsonutil import dumps, loads

# Error type per HTTP status, as the Messages API uses them.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_body(error_type: str, message: str) -> bytes:
    return dumps({"type": "error", "error": {"type": error_type, "message": message}})


class RouterError(Exception):
    """A request the router answers with an error itself (not passed through from upstream).

    ``outcome`` is the ``outcome`` label of the request metric.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        outcome: str = "rejected",
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers or {}  # e.g. retry-after
        self.status = status
        self.message = message
        self.outcome = outcome
        self.error_type = error_type or ERROR_TYPES.get(status, "api_error")

    def body(self) -> bytes:
        return error_body(self.error_type, self.message)


def invalid_request(message: str) -> RouterError:
    return RouterError(400, message)


def not_found(message: str) -> RouterError:
    return RouterError(404, message)


def too_large(limit: int) -> RouterError:
    return RouterError(413, f"request body exceeds the router's limit of {limit} bytes")


def upstream_error_body(status: int, body: bytes) -> bytes:
    """An upstream error body for the client: as is when Anthropic-shaped, else a generic
    one (a proxy's HTML 502 page must not reach an SDK that expects JSON)."""
    try:
        parsed = loads(body)
        if isinstance(parsed, dict) and parsed.get("type") == "error":
            return body
    except ValueError:
        pass
    return error_body(ERROR_TYPES.get(status, "api_error"), f"upstream answered HTTP {status}")


def forget_frames(exc: BaseException) -> None:
    """Clear the locals of the finished frames in ``exc``'s tracebacks (its causes included).

    A handled exception's traceback keeps every frame it passed through alive, with its
    locals, and a frame that holds the exception itself (``except ... as e``, a parameter)
    makes a cycle that only the garbage collector breaks, at a time of its choosing. For a
    request, those locals are its body and upstream payload: up to the body limit each.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__
