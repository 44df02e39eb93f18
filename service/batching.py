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

from service import metrics, tracing
from service.errors import Busy, Reason, Timeout, Unprocessable

Outputs = dict[str, np.ndarray]


@dataclass
class _Pending:
    x: np.ndarray
    future: asyncio.Future
    trace: tracing.SpanContext | None  # the request's span, when tracing is on
    enqueued: float = field(default_factory=time.perf_counter)
    enqueued_ns: int = 0  # wall clock, for its queue-wait span (only when traced)


class Batcher:
    """Merges queued inputs into batches of at most `max_batch_size` images.

    The loop takes whatever is queued when the previous run finishes (so load batches itself without
    adding latency when idle), optionally waiting up to `max_wait_ms` for a batch to fill. At most
    `max_queue` images wait; beyond that callers get 503 with Retry-After instead of unbounded waiting.

    Small requests (up to a quarter of a batch: single images) queue apart from the chunks of large ones,
    and every run takes small ones first, up to that quarter, then the oldest parts of either queue. So a
    single image waits at most about one run behind a flood of big batches, instead of behind all of them,
    and big batches still get three quarters of every run.
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], Outputs],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        timeout_s: float,
        queue_wait_s: float = 0.0,
        inline_max: int = 0,
        labels: tuple[str, str] = ("", ""),
        provider: str = "",
        on_batch: Callable[[Outputs], None] | None = None,
    ) -> None:
        """`run` computes a batch in the worker thread, or on the event loop when it has at most
        `inline_max` images (the thread hand-off costs more than such a run); `on_batch` sees each batch's
        outputs on the event loop (per-batch metrics); `labels` (model, version) and `provider` label the
        batching metrics."""
        self.run = run
        self.inline_max = inline_max
        self.on_batch = on_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.queue_wait_s = queue_wait_s
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()  # requests waiting for room, in order
        self.timeout_s = timeout_s
        self.reserve = max(1, max_batch_size // 4)  # images of every run kept for small requests
        self._chunk = max(1, max_batch_size - self.reserve)  # large requests queue in parts of this size
        self._small: deque[_Pending] = deque()
        self._large: deque[_Pending] = deque()
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
        self._span_attributes = {
            "mnist.model.name": labels[0],
            "mnist.model.version": labels[1],
            "mnist.provider": provider,
        }

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def drain(self) -> None:
        """Wait until every queued request has run (or expired): a retired model finishes its work."""
        while self._small or self._large or self._running:
            self._idle.clear()
            await self._idle.wait()

    async def stop(self) -> None:
        """Stop now: queued and running requests get 503 (shutting down)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._fail([*self._small, *self._large], self._shutting_down())
        for _, future in self._waiting:  # requests waiting for room before reading their body
            if not future.done():
                future.set_exception(self._shutting_down())
        self._queue_depth.set(0)
        self._small.clear()
        self._large.clear()
        self._queued = 0
        self._executor.shutdown(wait=True)

    async def room(self, images: int, *, admitted: bool = False) -> None:
        """Wait, first come first served and at most `queue_wait_s`, until `images` more fit in the queue;
        then 503 + Retry-After. Routes call it before reading a body whose image count the headers tell:
        a request that does not fit yet waits with its body still in the socket (TCP holds the client back
        at no cost here), so overload neither burns CPU on reading bodies it refuses nor turns clients that
        ignore Retry-After into a busy loop of refusals. `admitted` (predict, body read): it goes ahead of
        the requests still waiting to be admitted, and waits only while queued images leave no room, which
        the batcher's next run frees."""
        if (admitted or not self._waiting) and self._queued + images <= self.max_queue:
            return
        future = asyncio.get_running_loop().create_future()
        if admitted:
            self._waiting.appendleft((images, future))
        else:
            self._waiting.append((images, future))
        try:
            if images > self.max_queue:
                raise asyncio.TimeoutError  # can never fit
            await asyncio.wait_for(future, self.queue_wait_s)
        except asyncio.TimeoutError:
            raise Busy(
                f"server busy: {self._queued} images queued (limit {self.max_queue}), "
                f"{len(self._waiting)} requests waiting; retry shortly",
                Reason.QUEUE_FULL,
            ) from None
        finally:
            if (images, future) in self._waiting:
                self._waiting.remove((images, future))
                self._let_in()

    def _let_in(self) -> None:
        """Wake the waiting requests, in order, that the queue has room for now."""
        free = self.max_queue - self._queued
        while self._waiting and self._waiting[0][0] <= free:
            images, future = self._waiting.popleft()
            if not future.done():
                future.set_result(None)
                free -= images

    @staticmethod
    def _shutting_down() -> Busy:
        return Busy("server is shutting down; retry shortly", Reason.SHUTDOWN)

    @staticmethod
    def _fail(items: Iterable[_Pending], exc: BaseException) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(exc)

    async def predict(self, x: np.ndarray) -> Outputs:
        """Outputs for `x` [k, *item_shape]; large inputs run in parts, over several batches."""
        k = len(x)
        if not k:
            raise Unprocessable("no images to predict", Reason.EMPTY_BATCH)
        await self.room(k, admitted=True)
        loop = asyncio.get_running_loop()
        futures = []
        queue, part = (self._small, k) if k <= self.reserve else (self._large, self._chunk)
        traced = tracing.current()
        for start in range(0, k, part):
            future = loop.create_future()
            pending = _Pending(x[start : start + part], future, traced)
            if traced is not None:
                pending.enqueued_ns = tracing.now()
            queue.append(pending)
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

    def _oldest(self) -> deque[_Pending] | None:
        """The queue whose first part has waited longest."""
        if not (self._small and self._large):
            return self._small or self._large or None
        return self._small if self._small[0].enqueued <= self._large[0].enqueued else self._large

    def _take(self) -> list[_Pending]:
        """Whole queued parts up to max_batch_size images: small ones first up to the reserve, then the
        oldest of either queue; parts whose caller gave up are dropped."""
        batch: list[_Pending] = []
        size = 0

        def take(queue: deque[_Pending], limit: int) -> bool:
            """Move the first part of `queue` into the batch if the batch stays within `limit`."""
            nonlocal size
            n = len(queue[0].x)
            if batch and size + n > limit:
                return False
            item = queue.popleft()
            self._queued -= n
            if not item.future.done():
                batch.append(item)
                size += n
            return True

        while self._small and take(self._small, self.reserve):
            pass
        while (queue := self._oldest()) is not None and take(queue, self.max_batch_size):
            pass
        self._let_in()
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not (self._small or self._large):
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            # Sampled as work arrives and as each batch leaves: cheaper than per request, and it shows
            # what waits while a batch fills.
            self._queue_depth.set(self._queued)
            if self.max_wait and self._queued < self.max_batch_size:
                self._full.clear()
                remaining = self._oldest()[0].enqueued + self.max_wait - time.perf_counter()
                if remaining > 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._full.wait(), remaining)
            batch = self._take()
            self._queue_depth.set(self._queued)
            if not batch:
                continue
            self._running = True
            started = time.perf_counter()
            started_ns = tracing.now() if tracing.active else 0
            for item in batch:
                self._queue_wait.observe(started - item.enqueued)
            x = batch[0].x if len(batch) == 1 else np.concatenate([item.x for item in batch])
            try:
                if len(x) <= self.inline_max:
                    outputs, seconds = self._timed_run(x)
                else:
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
            self._deliver(batch, outputs)
            if started_ns:
                self._trace(batch, len(x), started_ns)

    @staticmethod
    def _deliver(batch: list[_Pending], outputs: Outputs) -> None:
        """Each request's rows of the batch's outputs."""
        start = 0
        for item in batch:
            end = start + len(item.x)
            if not item.future.done():
                item.future.set_result({name: value[start:end] for name, value in outputs.items()})
            start = end

    def _trace(self, batch: list[_Pending], images: int, started_ns: int) -> None:
        """The batch's span and each traced request's queue-wait and run spans (service/tracing.py)."""
        requests = [(item.trace, item.enqueued_ns) for item in batch if item.trace is not None]
        if requests:
            attributes = {
                **self._span_attributes,
                "mnist.batch.size": images,
                "mnist.batch.requests": len(batch),
            }
            tracing.record_batch(requests, started_ns, tracing.now(), attributes)

    def _timed_run(self, x: np.ndarray) -> tuple[Outputs, float]:
        """The model run and nothing else (in the worker thread, Python would contend for the GIL)."""
        started = time.perf_counter()
        outputs = self.run(x)
        return outputs, time.perf_counter() - started
