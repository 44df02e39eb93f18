"""The one exception the client raises for anything that goes wrong talking to the service."""

from __future__ import annotations


class MnistError(Exception):
    """A refused request (the server's status and `{"error": ...}` message) or a request that got no
    answer (`status` None: connection refused, timeout). Catch this one type around every call."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status  # HTTP status, or None when the server never answered
        self.reason = reason  # HTTP reason phrase ("Unprocessable Entity"), or "connect error", "timeout"
        self.retry_after = retry_after  # seconds, from a 503's Retry-After
        self.request_id = request_id  # the server's X-Request-ID, to find the request in its logs

    def __str__(self) -> str:
        prefix = f"{self.status} {self.reason}" if self.status is not None else self.reason
        return f"{prefix}: {self.message}" if prefix else self.message
