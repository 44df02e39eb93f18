"""Liveness, readiness, Prometheus metrics and model metadata."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse, Response

from service import metrics
from service.dependencies import ready_model, served_model
from service.errors import Busy, NotFound
from service.model import ServedModel
from service.openapi import error_responses

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (it may still be loading the model)."""
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(Busy))
async def readyz(model: Annotated[ServedModel, Depends(ready_model)]) -> dict[str, str]:
    """200 once the model is loaded and every batch shape warmed up, else 503; stays 200 during reloads."""
    return {"status": "ready"}


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text exposition format"}},
)
async def prometheus_metrics() -> Response:
    """Prometheus text format, summed over all worker processes."""
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)


@router.get("/v1/models/{name}", responses=error_responses(NotFound, Busy))
async def model_metadata(model: Annotated[ServedModel, Depends(served_model)]) -> dict[str, Any]:
    """Name, version, SHA-256, test accuracy (from the model card), active providers, input/output spec."""
    return model.describe()
