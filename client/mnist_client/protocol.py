"""What goes over the wire, shared by Client and AsyncClient: requests built from inputs, answers parsed into
results or MnistError, and when to retry. No I/O happens here, so the two clients differ only in transport."""

from __future__ import annotations

import io
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np

from mnist_client.errors import MnistError
from mnist_client.results import ModelInfo, Prediction

SIDE = 28
PIXELS = SIDE * SIDE
# The server's default MNIST_MAX_BATCH_ITEMS: a larger batch request gets 413, so batches go in chunks.
MAX_BATCH_ITEMS = 1024
# A path, the bytes of an image file (PNG, JPEG, ...), a PIL image, or 28x28 / 784 integers 0..255.
ImageInput = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray | Any
T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """One HTTP request to make; `expected` is how many predictions its answer must hold."""

    method: str
    path: str
    json: Any = None
    content: bytes | None = None
    files: dict[str, tuple[str, bytes]] | None = None
    headers: dict[str, str] | None = None
    expected: int = 1

    def arguments(self) -> dict[str, Any]:
        """Keyword arguments of httpx's Client.request / AsyncClient.request."""
        return {
            "method": self.method,
            "url": self.path,
            "json": self.json,
            "content": self.content,
            "files": self.files,
            "headers": self.headers,
        }


def as_rows(x: Any, *, batch: bool) -> np.ndarray:
    """Integer pixels 0..255 (0 = background) as uint8 rows [n, 784]; a clear ValueError for anything else,
    rather than a silent wrap-around or a guess at what floats mean."""
    array = np.asarray(x)
    wanted = "N x 28 x 28 or N x 784" if batch else "28 x 28 or 784"
    if array.dtype.kind not in "ui":
        raise ValueError(f"pixels must be integers 0..255 (uint8), got dtype {array.dtype}")
    if batch:
        fits = (array.ndim == 3 and array.shape[1:] == (SIDE, SIDE)) or (
            array.ndim == 2 and array.shape[1] == PIXELS
        )
    else:
        fits = array.shape in ((SIDE, SIDE), (PIXELS,))
    if not fits:
        raise ValueError(f"expected {wanted} pixels, got an array of shape {array.shape}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"pixels must be 0..255, got values from {array.min()} to {array.max()}")
    return array.astype(np.uint8, copy=False).reshape(-1, PIXELS)


def _pil_png(image: Any) -> bytes | None:
    """A PIL image as PNG bytes, or None if `image` is not one (PIL is only looked at if already imported)."""
    pil = sys.modules.get("PIL.Image")
    if pil is None or not isinstance(image, pil.Image):
        return None
    if image.mode not in {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}:  # what PNG can hold
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def predict_call(x: ImageInput) -> Call:
    """POST /predict: image files as multipart `file` (the server reads the format from the bytes, so a file
    without a known type is fine); arrays as JSON pixels."""
    if isinstance(x, (str, os.PathLike)):
        path = Path(x)
        return Call("POST", "/predict", files={"file": (path.name, path.read_bytes())})
    if isinstance(x, (bytes, bytearray, memoryview)):
        return Call("POST", "/predict", files={"file": ("image", bytes(x))})
    png = _pil_png(x)
    if png is not None:
        return Call("POST", "/predict", files={"file": ("image.png", png)})
    return Call("POST", "/predict", json={"pixels": as_rows(x, batch=False).reshape(SIDE, SIDE).tolist()})


def batch_calls(images: Any, chunk_size: int = MAX_BATCH_ITEMS) -> Iterator[Call]:
    """POST /predict/batch over the raw uint8 path (N x 784 bytes, no JSON), `chunk_size` images a request.
    The array is checked before the first request, so a bad one sends nothing."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    rows = as_rows(images, batch=True)
    headers = {"Content-Type": "application/octet-stream"}
    for start in range(0, len(rows), chunk_size):
        chunk = rows[start : start + chunk_size]
        yield Call("POST", "/predict/batch", content=chunk.tobytes(), headers=headers, expected=len(chunk))


def model_call(name: str) -> Call:
    return Call("GET", f"/v1/models/{name}")


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date), None if absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _request_text(exc: httpx.HTTPError) -> str:
    try:
        return f" ({exc.request.method} {exc.request.url})"
    except RuntimeError:  # httpx raises this when the error carries no request
        return ""


def transport_error(exc: httpx.HTTPError) -> MnistError:
    """No answer from the server."""
    if isinstance(exc, httpx.TimeoutException):
        reason = "timeout"
    elif isinstance(exc, httpx.ConnectError):
        reason = "connect error"
    else:
        reason = "transport error"
    return MnistError(f"{exc or type(exc).__name__}{_request_text(exc)}", reason=reason)


def response_error(response: httpx.Response) -> MnistError:
    """A refusal: the server's `{"error": ...}` message, or the start of whatever body a proxy sent."""
    try:
        body = response.json()
        message = body["error"] if isinstance(body, dict) and isinstance(body.get("error"), str) else None
    except ValueError:
        message = None
    return MnistError(
        message or response.text.strip()[:500] or "(empty body)",
        status=response.status_code,
        reason=response.reason_phrase,
        retry_after=retry_after(response),
        request_id=response.headers.get("x-request-id"),
    )


def checked(outcome: httpx.Response | httpx.HTTPError) -> httpx.Response:
    """The response if it is a success; MnistError otherwise."""
    if isinstance(outcome, httpx.HTTPError):
        raise transport_error(outcome) from outcome
    if not outcome.is_success:
        raise response_error(outcome)
    return outcome


def _parsed(response: httpx.Response, build: Callable[[Any], T]) -> T:
    try:
        return build(response.json())
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        message = f"unexpected answer from {response.request.url}: {type(exc).__name__}: {exc}"
        raise MnistError(message, status=response.status_code, reason="invalid response") from exc


def prediction(response: httpx.Response) -> Prediction:
    return _parsed(response, Prediction.from_json)


def predictions(response: httpx.Response, call: Call) -> list[Prediction]:
    """A batch answer, which must hold one prediction per image sent, in order."""
    results = _parsed(response, lambda body: [Prediction.from_json(item) for item in body["predictions"]])
    if len(results) != call.expected:
        message = f"sent {call.expected} images, got {len(results)} predictions"
        raise MnistError(message, status=response.status_code, reason="invalid response")
    return results


def model_info(response: httpx.Response) -> ModelInfo:
    return _parsed(response, ModelInfo.from_json)


# The connection broke before a whole answer came: reset or closed while the request was sent or its answer
# read (a worker killed with the request in flight, a keep-alive connection closed as it was reused).
BROKEN = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries only what is safe to send again: a connection that never opened; 503 with Retry-After (the
    server's "busy, come back"); and a connection that broke before the whole answer came (BROKEN). Every
    call this client makes is idempotent (a prediction or a read changes nothing on the server), so one
    whose answer was lost may be sent again. Never a timeout (the server may still be working on it), a
    504 or a 4xx.

    At most `retries` retries, and none that would end later than `max_total_s` after the first try.
    Waits grow from `backoff_s` (doubling), are at least the Retry-After, and carry random jitter so that
    clients refused together do not all come back together.
    """

    retries: int = 3
    max_total_s: float = 30.0
    backoff_s: float = 0.25

    def start(self) -> Attempts:
        """The retry state of one call."""
        return Attempts(self)

    def delay(self, attempt: int, outcome: httpx.Response | httpx.HTTPError, elapsed: float) -> float | None:
        """Seconds to wait before retry number `attempt + 1`, or None to stop here."""
        if attempt >= self.retries:
            return None
        backoff = self.backoff_s * 2**attempt
        if isinstance(outcome, (httpx.ConnectError, httpx.ConnectTimeout, *BROKEN)):
            wait = backoff
        elif isinstance(outcome, httpx.Response) and outcome.status_code == 503:
            after = retry_after(outcome)
            if after is None:
                return None
            wait = max(after, backoff)
        else:
            return None
        wait += random.uniform(0, backoff)
        return wait if elapsed + wait <= self.max_total_s else None


class Attempts:
    """The tries of one call: how many were made and since when."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.started = time.monotonic()
        self.retries = 0

    def next_delay(self, outcome: httpx.Response | httpx.HTTPError) -> float | None:
        """Seconds to wait before trying again, or None: `outcome` is final."""
        delay = self.policy.delay(self.retries, outcome, time.monotonic() - self.started)
        if delay is not None:
            self.retries += 1
        return delay
