"""KServe V2 model repository extension over REST: list the model and reload it (service/v2/repository.py).
Closed unless MNIST_ADMIN_KEY is set."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from service.dependencies import repository, require_admin_key
from service.errors import BadRequest, Busy, Forbidden, NotFound, Timeout, Unauthorized
from service.openapi import error_responses
from service.v2 import repository as extension

router = APIRouter(
    prefix="/v2/repository",
    tags=["KServe V2 model repository"],
    dependencies=[Depends(require_admin_key)],
    responses=error_responses(Unauthorized, Forbidden),
)


@router.get("/index")
@router.post("/index")
async def index(request: Request) -> list[dict[str, Any]]:
    """The one model, its version and state (READY, or LOADING before the first load); `reason` holds
    why the last reload was refused, if it was."""
    return extension.index(repository(request))


@router.post("/models/{name}/load", responses=error_responses(BadRequest, NotFound, Busy, Timeout))
async def load(name: str, request: Request) -> dict[str, Any]:
    """Reload the model from MNIST_MODEL_PATH in every worker, and answer once all have finished: 200 with
    what each worker serves, 400 if the candidate was refused (the old model keeps serving), 504 if not
    every worker finished within MNIST_RELOAD_TIMEOUT_S."""
    return await extension.load(repository(request), name, "http")
