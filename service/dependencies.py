"""Per-request access to the served model, and the API and admin key checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractContextManager

from fastapi import Request

from service.auth import check_admin_key, check_api_key
from service.model import ServedModel
from service.repository import ModelRepository
from service.v2.core import check_model


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
        check_model(model, name)
        yield model


async def require_api_key(request: Request) -> None:
    """When MNIST_API_KEY is set, predict/infer routes need `Authorization: Bearer <key>`."""
    check_api_key(request.app.state.settings, request.headers.get("authorization"))


async def require_admin_key(request: Request) -> None:
    """The model repository routes: closed unless MNIST_ADMIN_KEY is set, then its Bearer key."""
    check_admin_key(request.app.state.settings, request.headers.get("authorization"))
