"""The FastAPI application: lifespan (load, warm up, batch), middleware, JSON error handlers."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import errors, metrics
from service.batching import Batcher
from service.decoding import ImageDecoder
from service.errors import ApiError, Internal, Invalid, Reason, TooLarge
from service.routers import health, page, predict, v2
from service.runtime import ModelRuntime
from service.settings import Settings

log = logging.getLogger("service")

def error_response(exc: ApiError) -> JSONResponse:
    """`{"error": message}` with the status and headers, counted by reason."""
    metrics.ERRORS.labels(exc.reason.value, str(exc.status)).inc()
    return JSONResponse({"error": exc.message}, exc.status, headers=exc.headers)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return error_response(errors.from_status(exc.status_code, str(exc.detail), dict(exc.headers or {})))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    )
    return error_response(Invalid(problems or "invalid request", Reason.VALIDATION))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(Internal("internal server error", Reason.INTERNAL))


class BodyLimit:
    """Refuses bodies above max_bytes: by Content-Length before reading, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> TooLarge:
        return TooLarge(f"request body exceeds {self.max_bytes} bytes", Reason.BODY_TOO_LARGE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await error_response(self._too_large())(scope, receive, send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise self._too_large()
            return message

        await self.app(scope, limited, send)


class Observe:
    """Request duration by route template, method and status; requests in flight."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics.IN_FLIGHT.dec()
            route = scope.get("route")
            metrics.REQUEST_DURATION.labels(
                getattr(route, "path", "unmatched"), scope["method"], str(status)
            ).observe(time.perf_counter() - started)


async def _warm_up(app: FastAPI) -> None:
    """Run every batch shape once in a thread, then report ready."""
    settings: Settings = app.state.settings
    runtime: ModelRuntime = app.state.runtime
    started = time.perf_counter()
    await asyncio.to_thread(runtime.warm_up, settings.max_batch_size)
    # Startup objects live forever: keep them out of the collector's way, so full collections stay short.
    gc.collect()
    gc.freeze()
    app.state.ready = True
    log.info(
        "warmed up batch sizes 1..%d in %.2f s; ready", settings.max_batch_size, time.perf_counter() - started
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the model (a failure stops startup), start the batcher, warm up in the background."""
    settings: Settings = app.state.settings
    runtime = await asyncio.to_thread(
        ModelRuntime, settings.model_path, settings.providers, settings.threads_per_worker
    )
    metrics.MODEL_INFO.labels(runtime.name, runtime.version, runtime.sha256, runtime.provider).set(1)
    batcher = Batcher(
        runtime,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_batch_wait_ms,
        max_queue=settings.max_queue,
        timeout_s=settings.request_timeout_s,
    )
    app.state.runtime = runtime
    app.state.batcher = batcher
    app.state.decoder = ImageDecoder(
        max_pixels=settings.max_image_pixels,
        max_request_pixels=settings.max_request_pixels,
        max_waiting=settings.max_image_queue,
        timeout_s=settings.request_timeout_s,
        threads=settings.image_threads,
    )
    batcher.start()
    warm_up = asyncio.create_task(_warm_up(app))
    try:
        yield
    finally:
        warm_up.cancel()
        await asyncio.gather(warm_up, return_exceptions=True)
        app.state.ready = False
        await batcher.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application; `uvicorn --factory service.app:create_app` and the CLI call this in each worker."""
    settings = settings or Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    app = FastAPI(
        title="MNIST digit recognition",
        summary='LeNet-5 on onnxruntime with dynamic batching. Errors are JSON: {"error": "..."}.',
        version="1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.ready = False
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(predict.router)
    app.include_router(health.router)
    app.include_router(v2.router)
    app.include_router(page.router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Observe)
    return app
