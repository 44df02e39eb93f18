"""Per-request access to the app's shared objects, and the optional API key check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from service.batching import Batcher
from service.errors import Busy, NotFound, Reason, Unauthorized
from service.runtime import ModelRuntime


async def get_runtime(request: Request) -> ModelRuntime:
    """The loaded model; 503 while the worker is still loading or warming up."""
    if not request.app.state.ready:
        raise Busy("model is loading; retry shortly", Reason.NOT_READY)
    return request.app.state.runtime


async def served_model(name: str, runtime: Annotated[ModelRuntime, Depends(get_runtime)]) -> ModelRuntime:
    """The loaded model if the path's {name} names it; 404 for any other name, 503 while loading.
    (async: FastAPI would run a plain def in the threadpool, a hop per request.)"""
    if name != runtime.name:
        raise NotFound(f"unknown model {name!r}; this server serves {runtime.name!r}", Reason.UNKNOWN_MODEL)
    return runtime


async def get_batcher(request: Request) -> Batcher:
    await get_runtime(request)
    return request.app.state.batcher


async def require_api_key(request: Request) -> None:
    """When MNIST_API_KEY is set, predict/infer routes need `Authorization: Bearer <key>`."""
    key = request.app.state.settings.api_key
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    expected = key.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise Unauthorized("missing or invalid API key (Authorization: Bearer <key>)")
