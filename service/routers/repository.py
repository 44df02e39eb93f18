"""KServe V2 model repository extension: list the model and reload it (what tritonclient's
`get_model_repository_index` and `load_model` send). Closed unless MNIST_ADMIN_KEY is set."""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from service import fleet
from service.dependencies import repository, require_admin_key
from service.errors import BadRequest, Busy, Forbidden, NotFound, Reason, Timeout, Unauthorized
from service.openapi import error_responses

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
    status = repository(request).status()
    refused = status["reload"].get("result") == "refused"
    return [
        {
            "name": status.get("name", ""),
            "version": status.get("version", ""),
            "state": status["state"],
            "reason": status["reload"]["error"] if refused else "",
        }
    ]


@router.post("/models/{name}/load", responses=error_responses(BadRequest, NotFound, Busy, Timeout))
async def load(name: str, request: Request) -> dict[str, Any]:
    """Reload the model from MNIST_MODEL_PATH in every worker, and answer once all have finished: 200 with
    what each worker serves, 400 if the candidate was refused (the old model keeps serving), 504 if not
    every worker finished within MNIST_RELOAD_TIMEOUT_S."""
    models = repository(request)
    served = models.get()
    if name != served.name:
        raise NotFound(f"unknown model {name!r}; this server serves {served.name!r}", Reason.UNKNOWN_MODEL)
    settings = request.app.state.settings
    if fleet.supervised():
        requested = time.time()
        fleet.request_reload()  # the supervisor relays it to every worker, this one included
        workers = await fleet.wait_for_reloads(requested, settings.workers, settings.reload_timeout_s)
        done = [w for w in workers if w.get("reload", {}).get("requested", 0) >= requested]
    else:
        await models.reload("http")
        workers = done = [{"pid": os.getpid(), **models.status()}]
    refused = [w["reload"]["error"] for w in done if w["reload"]["result"] == "refused"]
    if refused:
        message = f"model refused, still serving version {served.version}: {refused[0]}"
        raise BadRequest(message, Reason.MODEL_REFUSED)
    if len(done) < settings.workers:
        waited = f"{settings.reload_timeout_s:g} s"
        raise Timeout(f"{len(done)} of {settings.workers} workers finished the reload within {waited}")
    return {
        "name": name,
        "workers": [
            {key: worker.get(key) for key in ("pid", "version", "sha256", "state")}
            | {"result": worker["reload"]["result"]}
            for worker in workers
        ],
    }
