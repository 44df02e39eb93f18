"""The FastAPI application: lifespan (load, warm up, serve HTTP and then gRPC), routers, middleware, JSON
error handlers."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from uvicorn.config import STARTUP_FAILURE

from service import errors, logs, openapi, tracing
from service.errors import ApiError, Internal, Reason, Unprocessable
from service.images.pool import DecodePool
from service.loading import load
from service.middleware import BodyLimit, Observe, Traced
from service.repository import ModelRepository
from service.routers import health, page, predict, repository, v2
from service.settings import Settings
from service.v2 import grpc_server

log = logging.getLogger("service")


async def _api_error(request: Request, exc: ApiError) -> Response:
    return errors.response(exc, request.scope)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # Starlette's Allow names the methods of one route; a path can have several
        headers["Allow"] = ", ".join(_methods(request))
    return errors.response(errors.from_status(exc.status_code, str(exc.detail), headers), request.scope)


HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _methods(request: Request) -> list[str]:
    """Every method some route serves at this request's path (asked of the router, whose included
    routers hold their own routes)."""
    routes = request.app.router.routes
    return [
        method
        for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    )
    return errors.response(Unprocessable(problems or "invalid request", Reason.VALIDATION), request.scope)


async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
    """The client left, or service/http_limits.py answered 408 for its body, while the app read it: there
    is nobody to answer, and nothing went wrong here. 499 (nginx's "client closed request") labels it in
    the request metrics instead of a logged 500."""
    return Response(status_code=499)


async def _unexpected(request: Request, exc: Exception) -> Response:
    """Starlette sends this response outside every middleware, so it sets X-Request-ID itself."""
    request_id = request.scope.get("state", {}).get("request_id", "")
    log.exception(
        "unexpected error on %s %s", request.method, request.url.path, extra={"request_id": request_id}
    )
    response = errors.response(Internal("internal server error", Reason.INTERNAL), request.scope)
    response.headers["x-request-id"] = request_id
    return response


async def _prepare(app: FastAPI) -> float:
    """Load, warm up and self-test the model; the seconds the warm-up and self-test took. A model that fails
    would leave the worker unready for good: stop the worker instead, with the reason."""
    settings: Settings = app.state.settings
    try:
        runtime = await asyncio.to_thread(load, settings)
        started = time.perf_counter()
        await app.state.models.start(runtime)
    except Exception as exc:
        _stop_worker(f"cannot serve {settings.model_path}: {exc}")
    # Startup objects live forever: keep them out of the collector's way, so full collections stay short.
    gc.collect()
    gc.freeze()
    return time.perf_counter() - started


def _stop_worker(reason: str) -> NoReturn:
    """A worker that cannot serve would stay unready for good: stop it instead, with the reason."""
    log.critical("%s; stopping", reason, extra={"event": "startup_failed"})
    logging.shutdown()
    os._exit(STARTUP_FAILURE)  # uvicorn's supervisor stops the server on this code instead of restarting


async def _start_accepting(app: FastAPI, warm_up_s: float) -> None:
    """The one place where this worker starts taking work, called once its model is loaded, warm and
    self-tested. HTTP: uvicorn listens on the worker's socket as soon as the lifespan yields, right after
    this; until then the kernel hands the worker no connection (service/supervisor.py), and the other
    workers serve. The gRPC server (service/v2/grpc_server.py) starts here, for the same reason; a gRPC
    port it cannot bind stops the worker."""
    try:
        app.state.grpc = await grpc_server.start(app.state.models, app.state.settings, app.version)
    except OSError as exc:
        _stop_worker(str(exc))
    log.info(
        "warmed up batch sizes 1..%d in %.2f s; ready",
        app.state.settings.max_batch_size,
        warm_up_s,
        extra={"event": "ready"},
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Prepare the model, then start accepting: a worker that takes a connection can serve it, so a 200
    from /readyz holds for every connection (a start, a replaced worker). On shutdown: drain gRPC, stop the
    model, flush the traces."""
    settings: Settings = app.state.settings
    app.state.decode_pool = DecodePool(
        max_pixels=settings.max_image_pixels,
        max_request_pixels=settings.max_request_pixels,
        max_waiting=settings.max_image_queue,
        timeout_s=settings.request_timeout_s,
        threads=settings.image_threads,
    )
    await _start_accepting(app, await _prepare(app))
    try:
        yield
    finally:
        if app.state.grpc is not None:  # calls in flight finish (each within its inference deadline)
            await app.state.grpc.stop(settings.request_timeout_s)
        await app.state.models.stop()
        tracing.shutdown()  # export the last spans


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application; `uvicorn --factory service.app:create_app` and the CLI call this in each worker."""
    settings = settings or Settings()
    logs.configure(settings.log_format, settings.log_level)
    app = FastAPI(
        title="MNIST digit recognition",
        summary="LeNet-5 on onnxruntime with dynamic batching. "
        'Errors are JSON: {"error": "...", "request_id": "..."}.',
        version="1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.models = ModelRepository(settings)  # empty (503) until the lifespan has loaded the model
    app.state.grpc = None  # the gRPC server, once the model is ready
    tracing.configure(settings, app.version)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(predict.router)
    app.include_router(health.router)
    app.include_router(v2.router)
    app.include_router(repository.router)
    app.include_router(page.router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Observe, access_log=logs.access_enabled(settings.log_format))
    if tracing.active:  # outermost: the access record is written inside the request's span
        app.add_middleware(Traced)
    openapi.document(app)
    return app
