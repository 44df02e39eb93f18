"""The served model behind one reference, and how it is replaced without failing a request.

`ModelRepository.current` is the one reference the routes read (through `lease`). A reload prepares a
candidate off the event loop (load, check against the served contract, warm up every batch shape,
self-test: service/model.py), swaps the reference in one assignment, and retires the old model in the
background once the requests that started on it have finished. A refused candidate changes nothing: the
old model keeps serving and readiness stays 200. Triggers: the KServe V2 repository routes, SIGHUP, and
polling MNIST_MODEL_PATH every MNIST_MODEL_POLL_S seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

from service import fleet, memory, metrics
from service.errors import Busy, Reason
from service.loading import prepare, verify
from service.model import ServedModel
from service.runtime import ModelLoadError, ModelRuntime
from service.settings import Settings

log = logging.getLogger(__name__)
RESULTS = ("loaded", "unchanged", "refused")


class ModelRepository:
    """The model this worker serves, its reloads and their outcome."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.current: ServedModel | None = None
        self.last_reload: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        for result in RESULTS:  # every series exists from the start: rates and dashboards read 0, not nothing
            metrics.RELOADS.labels(result)

    # --- what the routes use -------------------------------------------------------------------------

    def get(self) -> ServedModel:
        """The serving model; 503 until the first one is loaded and warm."""
        model = self.current
        if model is None:
            raise Busy("model is loading; retry shortly", Reason.NOT_READY)
        return model

    @contextlib.contextmanager
    def lease(self) -> Iterator[ServedModel]:
        """The serving model for the length of one request: a swap meanwhile does not take it away."""
        model = self.get().acquire()
        try:
            yield model
        finally:
            model.release()

    def status(self) -> dict[str, Any]:
        """What this worker serves and how its last reload ended (also published for the other workers)."""
        model = self.current
        serving = {"name": model.name, "version": model.version, "sha256": model.sha256} if model else {}
        return {"state": "READY" if model else "LOADING", **serving, "reload": self.last_reload}

    # --- lifecycle -----------------------------------------------------------------------------------

    async def start(self, runtime: ModelRuntime) -> None:
        """Verify the loaded model and serve it; then reload on SIGHUP and, if configured, on file changes."""
        await asyncio.to_thread(verify, runtime, self.settings)
        self._activate(runtime)
        if threading.current_thread() is threading.main_thread():  # a worker process (not an in-process test)
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, lambda: self._background(self.reload("signal"))
            )
            # mnist-serve starts workers with SIGHUP blocked (service/cli.py): one sent meanwhile runs now.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        if self.settings.model_poll_s:
            self._background(self._poll(self.settings.model_poll_s))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.current is not None:
            await self.current.stop()

    async def reload(self, trigger: str) -> dict[str, Any]:
        """Replace the model with what MNIST_MODEL_PATH holds now, if it passes every check."""
        requested = time.time()
        async with self._lock:
            started = time.perf_counter()
            served = self.get()
            try:
                if await asyncio.to_thread(_sha256, self.settings.model_path) == served.sha256:
                    result, error = "unchanged", None
                else:
                    self._activate(await asyncio.to_thread(prepare, self.settings, served.runtime))
                    result, error = "loaded", None
            except ModelLoadError as exc:
                result, error = "refused", str(exc)
                log.error(
                    "reload (%s) refused, still serving %s: %s",
                    trigger,
                    served.version,
                    exc,
                    extra={"event": "reload", "result": result, "trigger": trigger},
                )
            seconds = time.perf_counter() - started
            metrics.RELOADS.labels(result).inc()
            metrics.RELOAD_DURATION.labels(result).observe(seconds)
            self.last_reload = {
                "requested": requested,
                "trigger": trigger,
                "result": result,
                "error": error,
                "seconds": round(seconds, 3),
            }
            if result != "refused":
                log.info(
                    "reload (%s) %s: serving %s (%.2f s)",
                    trigger,
                    result,
                    self.get().version,
                    seconds,
                    extra={
                        "event": "reload",
                        "result": result,
                        "trigger": trigger,
                        "version": self.get().version,
                    },
                )
            fleet.publish(self.status())
            if result == "refused":  # the candidate's session lives on in the error's frames until collected
                await asyncio.to_thread(memory.release)
            return self.last_reload

    def _activate(self, runtime: ModelRuntime) -> None:
        """Swap in a prepared model: one assignment, so every request sees the old or the new one."""
        model = ServedModel(runtime, self.settings)
        model.start()
        old, self.current = self.current, model
        if old is not None:
            self._background(old.retire(2 * self.settings.request_timeout_s))
        fleet.publish(self.status())

    def _background(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll(self, interval_s: float) -> None:
        """Reload when the model file changed (a new inode, size or mtime: an atomic replace or a rewrite)
        and then stayed the same for one interval, so a file still being copied in place is not tried."""
        seen = last = _identity(self.settings.model_path)
        while True:
            await asyncio.sleep(interval_s)
            now = _identity(self.settings.model_path)
            if now is not None and now != seen and now == last:
                seen = now
                await self.reload("poll")
            last = now


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
