"""Every worker process on the same model.

A reload asked of one worker (HTTP) goes to the supervisor as SIGHUP, and the supervisor relays SIGHUP to
every worker (service/cli.py), as it does for an operator's `kill -HUP`. Each worker reloads from
MNIST_MODEL_PATH and publishes what it serves as `<pid>.json` in a folder the CLI shares with its workers,
so the worker that took the HTTP call can wait for all of them and answer for all. A single-worker server
has no supervisor: its one process gets SIGHUP itself and reloads.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

SUPERVISOR_ENV = "MNIST_SUPERVISOR_PID"
STATUS_DIR_ENV = "MNIST_STATUS_DIR"
HOST_ENV = "MNIST_BIND_HOST"  # the CLI's --host, for the workers' gRPC server (service/v2/grpc_server.py)


def supervised() -> bool:
    """Whether a supervisor relays reloads to several workers."""
    return bool(os.environ.get(SUPERVISOR_ENV))


def request_reload() -> None:
    """Ask the supervisor to have every worker reload (this one included)."""
    os.kill(int(os.environ[SUPERVISOR_ENV]), signal.SIGHUP)


def publish(status: dict[str, Any]) -> None:
    """This worker's model and last reload, replaced atomically for readers in other workers."""
    folder = os.environ.get(STATUS_DIR_ENV)
    if not folder:
        return
    path = Path(folder) / f"{os.getpid()}.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"pid": os.getpid(), **status}))
    os.replace(temporary, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def statuses() -> list[dict[str, Any]]:
    """What each live worker serves; files of dead workers are removed."""
    folder = os.environ.get(STATUS_DIR_ENV)
    found = []
    for path in sorted(Path(folder).glob("*.json")) if folder else []:
        if not _alive(int(path.stem)):
            path.unlink(missing_ok=True)
            continue
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):  # replaced or removed while read: the next poll sees it
            continue
    return found


async def wait_for_reloads(since: float, workers: int, timeout_s: float) -> list[dict[str, Any]]:
    """The live workers' statuses once `workers` of them have finished a reload requested at or after
    `since` (wall clock), or what there is when `timeout_s` runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = statuses()
        done = [status for status in found if status.get("reload", {}).get("requested", 0) >= since]
        if len(done) >= workers or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)
