"""Client (blocking) and AsyncClient (asyncio) for the MNIST inference service: the same methods, the same
requests and results (built in mnist_client.protocol); only how the bytes travel differs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from mnist_client import protocol
from mnist_client.protocol import MAX_BATCH_ITEMS, Call, ImageInput, RetryPolicy
from mnist_client.results import ModelInfo, Prediction

__version__ = "0.1.0"
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_MODEL = "lenet5"


class _Options:
    """Arguments and connection setup of both clients (documented on Client)."""

    _http_class: type[httpx.Client] | type[httpx.AsyncClient]

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        max_retry_s: float = 30.0,
        model: str = DEFAULT_MODEL,
    ) -> None:
        headers = {"User-Agent": f"mnist-client/{__version__}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.retry = RetryPolicy(retries=retries, max_total_s=max_retry_s)
        self.model_name = model
        self._http = self._http_class(base_url=url, headers=headers, timeout=httpx.Timeout(timeout))


class Client(_Options):
    """A blocking client; thread-safe, reuses connections (use `with` or close()).

    `url` is the service's base URL (a path prefix behind a proxy is kept); `api_key` is sent as
    `Authorization: Bearer <key>`; `timeout` bounds each request (seconds to connect, and between bytes read
    or written); `retries` and `max_retry_s` bound the retries of what is safe to retry (RetryPolicy);
    `model` is the name model() asks for by default. Every failure raises MnistError; an invalid input
    (wrong shape or dtype) raises ValueError before anything is sent.
    """

    _http_class = httpx.Client
    _http: httpx.Client

    def _send(self, call: Call) -> httpx.Response:
        attempts = self.retry.start()
        while True:
            outcome: httpx.Response | httpx.HTTPError
            try:
                outcome = self._http.request(**call.arguments())
            except httpx.HTTPError as exc:
                outcome = exc
            delay = attempts.next_delay(outcome)
            if delay is None:
                return protocol.checked(outcome)
            time.sleep(delay)

    def predict(self, x: ImageInput) -> Prediction:
        """One digit from an image file (path or bytes), a PIL image, or 28x28 / 784 uint8 pixels."""
        return protocol.prediction(self._send(protocol.predict_call(x)))

    def predict_batch(self, images: Any, *, chunk_size: int = MAX_BATCH_ITEMS) -> list[Prediction]:
        """Predictions for uint8 pixels N x 28 x 28 or N x 784, in order, over the raw octet-stream path,
        `chunk_size` images a request (at most the server's MNIST_MAX_BATCH_ITEMS)."""
        results: list[Prediction] = []
        for call in protocol.batch_calls(images, chunk_size):
            results += protocol.predictions(self._send(call), call)
        return results

    def model(self, name: str | None = None) -> ModelInfo:
        """The served model's metadata (GET /v1/models/{name}; default name: the client's `model`)."""
        return protocol.model_info(self._send(protocol.model_call(name or self.model_name)))

    def ready(self) -> bool:
        """GET /readyz once, without retries: True when the model is loaded and warm, False while it is
        loading or when the server cannot be reached."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Options):
    """The asyncio twin of Client: the same arguments, methods (awaited), results and errors."""

    _http_class = httpx.AsyncClient
    _http: httpx.AsyncClient

    async def _send(self, call: Call) -> httpx.Response:
        attempts = self.retry.start()
        while True:
            outcome: httpx.Response | httpx.HTTPError
            try:
                outcome = await self._http.request(**call.arguments())
            except httpx.HTTPError as exc:
                outcome = exc
            delay = attempts.next_delay(outcome)
            if delay is None:
                return protocol.checked(outcome)
            await asyncio.sleep(delay)

    async def predict(self, x: ImageInput) -> Prediction:
        """See Client.predict."""
        return protocol.prediction(await self._send(protocol.predict_call(x)))

    async def predict_batch(self, images: Any, *, chunk_size: int = MAX_BATCH_ITEMS) -> list[Prediction]:
        """See Client.predict_batch; the chunks go one after the other."""
        results: list[Prediction] = []
        for call in protocol.batch_calls(images, chunk_size):
            results += protocol.predictions(await self._send(call), call)
        return results

    async def model(self, name: str | None = None) -> ModelInfo:
        """See Client.model."""
        return protocol.model_info(await self._send(protocol.model_call(name or self.model_name)))

    async def ready(self) -> bool:
        """See Client.ready."""
        try:
            return (await self._http.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
