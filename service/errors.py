"""One error type for everything a client can get wrong: `{"error": "..."}` with the right status."""

from __future__ import annotations


class ApiError(Exception):
    """A request the service refuses; `reason` is a short stable label for the errors metric."""

    def __init__(self, status: int, message: str, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.headers = headers or {}
