"""Per-request access to the served model, and the API and admin key checks."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager

from fastapi import Request
from pydantic import SecretStr

from service.errors import Forbidden, NotFound, Reason, Unauthorized
from service.model import ServedModel
from service.repository import ModelRepository


def repository(request: Request) -> ModelRepository:
    return request.app.state.models


def lease(request: Request) -> AbstractContextManager[ServedModel]:
    """`with lease(request) as model:` the serving model for the whole request (503 while loading): a
    reload meanwhile swaps what later requests get, never this one's."""
    return repository(request).lease()


async def ready_model(request: Request) -> ServedModel:
    """The serving model; 503 while the worker is still loading or warming up."""
    return repository(request).get()


async def served_model(name: str, request: Request) -> AsyncIterator[ServedModel]:
    """The serving model, held for the whole request, if the path's {name} names it; 404 for any other
    name, 503 while loading. (async: FastAPI would run a plain def in the threadpool, a hop per request.)"""
    with lease(request) as model:
        if name != model.name:
            raise NotFound(f"unknown model {name!r}; this server serves {model.name!r}", Reason.UNKNOWN_MODEL)
        yield model


def _bearer_matches(request: Request, key: SecretStr) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), key.get_secret_value().encode()
    )


async def require_api_key(request: Request) -> None:
    """When MNIST_API_KEY is set, predict/infer routes need `Authorization: Bearer <key>`."""
    key = request.app.state.settings.api_key
    if key is not None and not _bearer_matches(request, key):
        raise Unauthorized("missing or invalid API key (Authorization: Bearer <key>)")


async def require_admin_key(request: Request) -> None:
    """The model repository routes change what is served: closed unless MNIST_ADMIN_KEY is set, and then
    they need `Authorization: Bearer <admin key>`."""
    key = request.app.state.settings.admin_key
    if key is None:
        raise Forbidden("the model repository API is disabled: set MNIST_ADMIN_KEY to enable it")
    if not _bearer_matches(request, key):
        raise Unauthorized("missing or invalid admin key (Authorization: Bearer <MNIST_ADMIN_KEY>)")
