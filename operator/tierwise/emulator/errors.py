"""Anthropic-shaped API errors."""

from __future__ import annotations

from typing import Any

# HTTP status -> the API's error type, as documented for the Messages API.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

DEFAULT_MESSAGES: dict[str, str] = {
    "rate_limit_error": "Number of requests has exceeded your rate limit. Please try again later.",
    "overloaded_error": "Overloaded",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
}


class ApiError(Exception):
    """An error response: status, the API's error type and a message for people."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        error_type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.error_type = error_type or ERROR_TYPES.get(status, "api_error")
        self.message = message or DEFAULT_MESSAGES.get(self.error_type, self.error_type)
        self.retry_after = retry_after
        super().__init__(f"{status} {self.error_type}: {self.message}")

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": "error",
            "error": {"type": self.error_type, "message": self.message},
        }
        if request_id is not None:
            doc["request_id"] = request_id
        return doc


def invalid(message: str) -> ApiError:
    return ApiError(400, message)
