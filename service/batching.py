"""Dynamic batching: concurrent requests become one model run in a worker thread. Generic: arrays in,
named output arrays out; what the outputs mean is the caller's business (service/model.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service import metrics
from service.errors import Busy, Invalid, Reason, Timeout

Outputs = dict[str, np.ndarray]


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
        run: Callable[[np.ndarray], Outputs],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        timeout_s: float,
        labels: tuple[str, str] = ("", ""),
        provider: str = "",
        on_batch: Callable[[Outputs], None] | None = None,
    ) -> None:
        """`run` computes a batch (in the worker thread); `on_batch` sees each batch's outputs on the event
        loop (per-batch metrics); `labels` (model, version) and `provider` label the batching metrics."""
        self.run = run
        self.on_batch = on_batch
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
        self._running = False
        self._idle = asyncio.Event()  # set whenever nothing is queued or running
        self._idle.set()
        self._queue_depth = metrics.QUEUE_DEPTH.labels(*labels)
        self._queue_wait = metrics.QUEUE_WAIT.labels(*labels)
        self._batch_size = metrics.BATCH_SIZE.labels(*labels)
        self._inference = metrics.INFERENCE_DURATION.labels(*labels, provider)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def drain(self) -> None:
        """Wait until every queued request has run (or expired): a retired model finishes its work."""
        while self._pending or self._running:
            self._idle.clear()
            await self._idle.wait()

    async def stop(self) -> None:
        """Stop now: queued and running requests get 503 (shutting down)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._fail(self._pending, self._shutting_down())
        self._queue_depth.set(0)
        self._pending.clear()
        self._queued = 0
        self._executor.shutdown(wait=True)

    def check_room(self, images: int) -> None:
        """503 + Retry-After unless `images` more fit in the queue now. Routes call it before reading a
        body whose image count the headers tell, so a refusal under overload costs no read or parse."""
        if self._queued + images > self.max_queue:
            raise Busy(
                f"server busy: {self._queued} images queued (limit {self.max_queue}); retry shortly",
                Reason.QUEUE_FULL,
            )

    @staticmethod
    def _shutting_down() -> Busy:
        return Busy("server is shutting down; retry shortly", Reason.SHUTDOWN)

    @staticmethod
    def _fail(items: Iterable[_Pending], exc: BaseException) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(exc)

    async def predict(self, x: np.ndarray) -> Outputs:
        """Outputs for `x` [k, *item_shape]; inputs above max_batch_size run as several batches."""
        k = len(x)
        if not k:
            raise Invalid("no images to predict", Reason.EMPTY_BATCH)
        self.check_room(k)
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
                self._idle.set()
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
            self._running = True
            started = time.perf_counter()
            for item in batch:
                self._queue_wait.observe(started - item.enqueued)
            x = batch[0].x if len(batch) == 1 else np.concatenate([item.x for item in batch])
            try:
                outputs, seconds = await loop.run_in_executor(self._executor, self._timed_run, x)
            except asyncio.CancelledError:  # stop() during a run: its callers must not wait for the deadline
                self._fail(batch, self._shutting_down())
                raise
            except Exception as exc:  # a failed run fails its requests, never the loop
                self._fail(batch, exc)
                continue
            finally:
                self._running = False
            self._inference.observe(seconds)
            self._batch_size.observe(len(x))
            if self.on_batch is not None:
                self.on_batch(outputs)
            start = 0
            for item in batch:
                end = start + len(item.x)
                if not item.future.done():
                    item.future.set_result({name: value[start:end] for name, value in outputs.items()})
                start = end

    def _timed_run(self, x: np.ndarray) -> tuple[Outputs, float]:
        """In the worker thread: the model run and nothing else (Python here would contend for the GIL)."""
        started = time.perf_counter()
        outputs = self.run(x)
        return outputs, time.perf_counter() - started
