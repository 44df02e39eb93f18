"""The errors a client can get: one class per status, one set of reason labels.

Every refusal is `{"error": "<message>", "request_id": "..."}` (`body`) with the status of its class;
`reason` is the stable label of the `mnist_errors` metric. Raise e.g. `Busy("server busy: ...",
Reason.QUEUE_FULL)`: the status, Retry-After and the metric label follow from the class and the reason, never
from literals at the raise.
"""

from __future__ import annotations

from enum import Enum
from typing import ClassVar

import orjson
from starlette.responses import Response
from starlette.types import Scope

from service import metrics


class Reason(str, Enum):
    """Labels of `mnist_errors{reason=...}`; one per distinct cause a client or operator acts on."""

    INVALID_REQUEST = "invalid_request"  # malformed V2 request or query parameter
    INVALID_JSON = "invalid_json"
    INVALID_PIXELS = "invalid_pixels"
    INVALID_MULTIPART = "invalid_multipart"
    CORRUPT_IMAGE = "corrupt_image"
    NO_DIGIT = "no_digit"
    EMPTY_BATCH = "empty_batch"
    VALIDATION = "validation"  # FastAPI's own parameter validation
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    UNKNOWN_MODEL = "unknown_model"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    BODY_TOO_LARGE = "body_too_large"
    BATCH_TOO_LARGE = "batch_too_large"
    IMAGE_TOO_LARGE = "image_too_large"
    REQUEST_TOO_LARGE = "request_too_large"  # the images of one request hold too many pixels in all
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    MODEL_REFUSED = "model_refused"  # a reload candidate failed its checks
    NOT_READY = "not_ready"
    QUEUE_FULL = "queue_full"
    DECODE_QUEUE_FULL = "decode_queue_full"
    SHUTDOWN = "shutdown"
    TIMEOUT = "timeout"
    INVALID_HTTP = "invalid_http"  # the HTTP parser refused the bytes (service/http_limits.py, as below)
    HEAD_TOO_LARGE = "head_too_large"
    HEAD_TIMEOUT = "head_timeout"
    BODY_TIMEOUT = "body_timeout"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    CLIENT_CLOSED = "client_closed"  # the client left before its answer: its work was stopped
    HTTP = "http"  # any other HTTP status Starlette raises
    INTERNAL = "internal"


class ApiError(Exception):
    """A request the service refuses. Subclasses fix the status (and a default reason); `headers` adds
    response headers."""

    status: ClassVar[int] = 500
    default_reason: ClassVar[Reason] = Reason.INTERNAL

    def __init__(
        self, message: str, reason: Reason | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400
    default_reason = Reason.INVALID_REQUEST


class Unauthorized(ApiError):
    status = 401
    default_reason = Reason.UNAUTHORIZED

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status = 403
    default_reason = Reason.FORBIDDEN


class NotFound(ApiError):
    status = 404
    default_reason = Reason.NOT_FOUND


class MethodNotAllowed(ApiError):
    status = 405
    default_reason = Reason.METHOD_NOT_ALLOWED


class RequestTimeout(ApiError):
    status = 408


class TooLarge(ApiError):
    status = 413


class Unsupported(ApiError):
    status = 415
    default_reason = Reason.UNSUPPORTED_MEDIA_TYPE


class Unprocessable(ApiError):
    """422: well-formed HTTP whose content is wrong (JSON, pixels, an image, no digit)."""

    status = 422


class HeadTooLarge(ApiError):
    status = 431
    default_reason = Reason.HEAD_TOO_LARGE


class Busy(ApiError):
    """503: the client should come back; Retry-After says when."""

    status = 503

    def __init__(self, message: str, reason: Reason, retry_after_s: int = 1) -> None:
        super().__init__(message, reason, {"Retry-After": str(retry_after_s)})


class Timeout(ApiError):
    status = 504
    default_reason = Reason.TIMEOUT


class ClientClosed(ApiError):
    """499 (nginx's "client closed request"): nobody receives it; it counts work stopped for a client gone."""

    status = 499
    default_reason = Reason.CLIENT_CLOSED


class Internal(ApiError):
    status = 500


BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (BadRequest, Forbidden, NotFound, MethodNotAllowed, TooLarge, Unprocessable, Internal)
}


def from_status(status: int, message: str, headers: dict[str, str] | None = None) -> ApiError:
    """An HTTP error raised by Starlette/FastAPI (404 route, 405 method, ...) in our vocabulary."""
    reason = {404: Reason.NOT_FOUND, 405: Reason.METHOD_NOT_ALLOWED}.get(status, Reason.HTTP)
    error = BY_STATUS.get(status, ApiError)(message, reason, headers)
    if type(error) is ApiError:  # a status without its own class keeps the one Starlette chose
        error.status = status  # type: ignore[misc]
    return error


def body(error: ApiError, request_id: str | None = None) -> bytes:
    """The JSON body of every error response, from the app (`response`) and the HTTP-limits protocol alike."""
    content = {"error": error.message}
    if request_id is not None:
        content["request_id"] = request_id
    return orjson.dumps(content)


def count(error: ApiError, protocol: str = "http") -> None:
    """Every refusal is counted by reason, status and protocol, whether or not an answer can still be sent
    (a gRPC refusal under the HTTP status of the same error)."""
    metrics.ERRORS.labels(error.reason.value, str(error.status), protocol).inc()


def response(error: ApiError, scope: Scope) -> Response:
    """The error as the app answers it, counted: the request's ID in the body, and its reason on the
    request's state for the access record."""
    count(error)
    state = scope.get("state", {})
    state["reason"] = error.reason.value
    return Response(body(error, state.get("request_id")), error.status, error.headers, "application/json")
