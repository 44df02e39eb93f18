"""Dynamic batching: concurrent requests become one onnxruntime run in a worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service import metrics
from service.errors import Busy, Invalid, Reason, Timeout
from service.runtime import PROBABILITIES, ModelRuntime


@dataclass
class _Pending:
    x: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Merges queued inputs into batches of at most `max_batch_size` images.

    The loop takes whatever is queued when the previous run finishes (so load batches itself without
    adding latency when idle), optionally waiting up to `max_wait_ms` for a batch to fill. At most
    `max_queue` images wait; beyond that callers get 503 with Retry-After instead of unbounded waiting.
    """

    def __init__(
        self,
        runtime: ModelRuntime,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        timeout_s: float,
    ) -> None:
        self.runtime = runtime
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._pending: deque[_Pending] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        # One thread: onnxruntime parallelises inside a run with its own intra-op threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime")
        self._task: asyncio.Task | None = None
        labels = (runtime.name, runtime.version)
        self._queue_depth = metrics.QUEUE_DEPTH.labels(*labels)
        self._queue_wait = metrics.QUEUE_WAIT.labels(*labels)
        self._batch_size = metrics.BATCH_SIZE.labels(*labels)
        self._inference = metrics.INFERENCE_DURATION.labels(*labels, runtime.provider)
        self._confidence = metrics.CONFIDENCE.labels(*labels)
        self._predictions = [metrics.PREDICTIONS.labels(*labels, str(digit)) for digit in range(10)]

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._fail(self._pending, self._shutting_down())
        self._queue_depth.set(0)
        self._pending.clear()
        self._queued = 0
        self._executor.shutdown(wait=True)

    @staticmethod
    def _shutting_down() -> Busy:
        return Busy("server is shutting down; retry shortly", Reason.SHUTDOWN)

    @staticmethod
    def _fail(items: Iterable[_Pending], exc: BaseException) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(exc)

    async def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs for `x` [k, *item_shape]; inputs above max_batch_size run as several batches."""
        k = len(x)
        if not k:
            raise Invalid("no images to predict", Reason.EMPTY_BATCH)
        if self._queued + k > self.max_queue:
            raise Busy(
                f"server busy: {self._queued} images queued (limit {self.max_queue}); retry shortly",
                Reason.QUEUE_FULL,
            )
        loop = asyncio.get_running_loop()
        futures = []
        for start in range(0, k, self.max_batch_size):
            future = loop.create_future()
            self._pending.append(_Pending(x[start : start + self.max_batch_size], future))
            futures.append(future)
        self._queued += k
        self._wake.set()
        if self._queued >= self.max_batch_size:
            self._full.set()
        timer = loop.call_later(self.timeout_s, self._expire, futures)
        try:
            if len(futures) == 1:
                return await futures[0]
            parts = await asyncio.gather(*futures)
        finally:
            timer.cancel()
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def _expire(self, futures: list[asyncio.Future]) -> None:
        """The per-request deadline: the caller stops waiting; queued parts are skipped, not run."""
        for future in futures:
            if not future.done():
                future.set_exception(Timeout(f"inference did not finish within {self.timeout_s:g} s"))

    def _take(self) -> list[_Pending]:
        """Whole queued parts up to max_batch_size images; parts whose caller gave up are dropped."""
        batch: list[_Pending] = []
        size = 0
        while self._pending:
            item = self._pending[0]
            n = len(item.x)
            if batch and size + n > self.max_batch_size:
                break
            self._pending.popleft()
            self._queued -= n
            if not item.future.done():
                batch.append(item)
                size += n
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            # Sampled as work arrives and as each batch leaves: cheaper than per request, and it shows
            # what waits while a batch fills.
            self._queue_depth.set(self._queued)
            if self.max_wait and self._queued < self.max_batch_size:
                self._full.clear()
                remaining = self._pending[0].enqueued + self.max_wait - time.perf_counter()
                if remaining > 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._full.wait(), remaining)
            batch = self._take()
            self._queue_depth.set(self._queued)
            if not batch:
                continue
            started = time.perf_counter()
            for item in batch:
                self._queue_wait.observe(started - item.enqueued)
            x = batch[0].x if len(batch) == 1 else np.concatenate([item.x for item in batch])
            try:
                outputs, seconds = await loop.run_in_executor(self._executor, self._timed_run, x)
                self._observe(outputs, seconds)
            except asyncio.CancelledError:  # stop() during a run: its callers must not wait for the deadline
                self._fail(batch, self._shutting_down())
                raise
            except Exception as exc:  # a failed run fails its requests, never the loop
                self._fail(batch, exc)
                continue
            start = 0
            for item in batch:
                end = start + len(item.x)
                if not item.future.done():
                    item.future.set_result({name: value[start:end] for name, value in outputs.items()})
                start = end

    def _timed_run(self, x: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
        """In the worker thread: the onnxruntime run and nothing else."""
        started = time.perf_counter()
        outputs = self.runtime.run(x)
        return outputs, time.perf_counter() - started

    def _observe(self, outputs: dict[str, np.ndarray], seconds: float) -> None:
        """Per-batch metrics on the event loop: Python work in the worker thread would contend for the GIL."""
        self._inference.observe(seconds)
        self._batch_size.observe(len(outputs[PROBABILITIES]))
        probabilities = outputs[PROBABILITIES]
        for digit, count in enumerate(np.bincount(probabilities.argmax(axis=1), minlength=10).tolist()):
            if count:
                self._predictions[digit].inc(count)
        for confidence in probabilities.max(axis=1).tolist():
            self._confidence.observe(confidence)
