"""Image decoding off the event loop, one request at a time per worker, with a bounded wait."""

from __future__ import annotations

import anyio
import numpy as np

from service import codecs
from service.errors import Busy, Reason, Timeout


class ImageDecoder:
    """Decodes and MNIST-normalizes uploaded image files in a thread.

    One request decodes at a time per worker: decoding is Python and small-array numpy holding the GIL, so
    more threads only contend (bench/run.py, 28x28 PNG at c=32: 40 threads 296 req/s and 4.2 ms of server CPU
    each, 2 threads 325, 1 thread 467 req/s and 2.3 ms); worker processes give the parallelism. One large
    photo holds the turn for a good part of a second, so the wait is bounded like the batcher's queue: beyond
    `max_waiting` requests 503 + Retry-After at once, and a request not started within `timeout_s` gets 504.
    """

    def __init__(self, *, max_pixels: int, max_waiting: int, timeout_s: float) -> None:
        self.max_pixels = max_pixels
        self.max_waiting = max_waiting
        self.timeout_s = timeout_s
        self._turn = anyio.CapacityLimiter(1)

    @property
    def waiting(self) -> int:
        """Requests queued for their turn (not counting the one decoding)."""
        return self._turn.statistics().tasks_waiting

    async def decode(self, files: list[bytes], *, batch: bool = False) -> np.ndarray:
        """Encoded image files -> uint8 [len(files), 28, 28], MNIST convention; in a `batch`, an image
        without a digit is blank rather than an error."""
        if self.waiting >= self.max_waiting:
            raise Busy(
                f"server busy: image requests waiting to be decoded: {self.waiting} "
                f"(limit {self.max_waiting}); retry shortly",
                Reason.DECODE_QUEUE_FULL,
            )
        with anyio.move_on_after(self.timeout_s) as wait:
            await self._turn.acquire()
        if wait.cancelled_caught:
            raise Timeout(f"image decoding did not start within {self.timeout_s:g} s (server busy)")
        try:
            return await anyio.to_thread.run_sync(self._decode, files, batch)
        finally:
            self._turn.release()

    def _decode(self, files: list[bytes], batch: bool) -> np.ndarray:
        return np.concatenate(
            [codecs.image(data, self.max_pixels, blank_if_no_digit=batch) for data in files]
        )
