"""The V2 model repository extension, whatever carried the call: the index of the one model, and its reload
in every worker (what tritonclient's `get_model_repository_index` and `load_model` send, over REST or gRPC).
The admin key is the transport's to check first (service/auth.py)."""

from __future__ import annotations

import os
import time
from typing import Any

from service import fleet
from service.errors import BadRequest, Reason, Timeout
from service.repository import ModelRepository
from service.v2.core import check_model


def index(models: ModelRepository) -> list[dict[str, Any]]:
    """The one model, its version and state (READY, or LOADING before the first load); `reason` holds
    why the last reload was refused, if it was."""
    status = models.status()
    refused = status["reload"].get("result") == "refused"
    return [
        {
            "name": status.get("name", ""),
            "version": status.get("version", ""),
            "state": status["state"],
            "reason": status["reload"]["error"] if refused else "",
        }
    ]


async def load(models: ModelRepository, name: str, trigger: str) -> dict[str, Any]:
    """Reload the model from MNIST_MODEL_PATH in every worker and answer once all have finished: what each
    worker serves; 400 if the candidate was refused (the old model keeps serving), 504 if not every worker
    finished within MNIST_RELOAD_TIMEOUT_S. `trigger` (the transport) labels a single worker's reload."""
    served = models.get()
    check_model(served, name)
    settings = models.settings
    if fleet.supervised():
        requested = time.time()
        fleet.request_reload()  # the supervisor relays it to every worker, this one included
        workers = await fleet.wait_for_reloads(requested, settings.workers, settings.reload_timeout_s)
        done = [w for w in workers if w.get("reload", {}).get("requested", 0) >= requested]
    else:
        await models.reload(trigger)
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
