"""Image decoding off the event loop: a few requests at a time per worker, a bounded wait, bounded work, and
the pipeline's refusals in the service's error vocabulary."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

import anyio
import numpy as np
from PIL import Image

from service import memory
from service.contract import SIDE
from service.errors import ApiError, Busy, ClientClosed, Reason, Timeout, TooLarge, Unprocessable, Unsupported
from service.images.decode import open_image, to_grey
from service.images.errors import (
    Checkpoint,
    ImageError,
    ImageTooLarge,
    NoDigitFound,
    Stopped,
    UnsupportedFormat,
    never_stop,
)
from service.images.normalize import to_mnist
from service.offload import INLINE_BYTES

T = TypeVar("T")
Disconnected = Callable[[], Awaitable[bool]]  # Starlette's request.is_disconnected
Work = Callable[[Image.Image, Checkpoint], T]  # an opened image -> what the caller wants of it
POLL_S = 0.05  # how often a decoding request checks that its client is still connected
# A small file (<= INLINE_BYTES) of at most this many pixels (an MNIST-style 28x28 PNG) is decoded on the
# event loop: ~0.3 ms, about what the hop to a thread and back costs (bench/images.py).
INLINE_PIXELS = 64 * 64
LARGE_PIXELS = 4_000_000  # after an image this large, freed heap memory is handed back to the OS
MMAP_THRESHOLD = 1 << 20  # allocations from this size on are mmap()ed: freed, they leave the process at once


class DecodePool:
    """Decodes uploaded image files in `threads` threads per worker.

    Decoding is Pillow and OpenCV, which release the GIL, so two requests overlap, and a large photo does not
    hold up the small images behind it (bench/images.py measures threads). The wait for a thread is bounded
    like the batcher's queue: beyond `max_waiting` waiting requests 503 + Retry-After at once, and a request
    not done within `timeout_s` gets 504. The work is bounded too: all headers are read and the request's
    pixels checked against `max_request_pixels` (413) before anything is decoded, and the deadline and the
    client's connection are checked between images and while a large one decodes, so a request whose client
    has gone stops within about POLL_S plus one decode step. A single tiny image skips all that: it is
    decoded on the event loop in less time than the hop to a thread takes.
    """

    def __init__(
        self, *, max_pixels: int, max_request_pixels: int, max_waiting: int, timeout_s: float, threads: int
    ) -> None:
        self.max_pixels = max_pixels
        self.max_request_pixels = max_request_pixels
        self.max_waiting = max_waiting
        self.timeout_s = timeout_s
        self._turn = anyio.CapacityLimiter(threads)
        memory.mmap_large_allocations(MMAP_THRESHOLD)

    @property
    def waiting(self) -> int:
        """Requests queued for a thread (not counting those decoding)."""
        return self._turn.statistics().tasks_waiting

    async def digits(
        self, files: list[bytes], disconnected: Disconnected | None = None, *, batch: bool = False
    ) -> np.ndarray:
        """Encoded image files -> uint8 [len(files), 28, 28], MNIST convention. In a `batch`, an image
        without a digit is blank rather than an error."""
        return np.stack(await self.run(files, partial(digit, blank_if_none=batch), disconnected))

    async def run(
        self, files: list[bytes], work: Work[T], disconnected: Disconnected | None = None
    ) -> list[T]:
        """`work` on each file's image, in order. `disconnected` says whether the client has gone; the work
        then stops (499, which nobody receives)."""
        if len(files) == 1 and len(files[0]) <= INLINE_BYTES:
            (image,) = self._open(files, never_stop)
            if image.width * image.height <= INLINE_PIXELS:  # cheaper than the hop to a thread: no wait
                return [_mapped(work, image, never_stop)]
        if self.waiting >= self.max_waiting:
            raise Busy(
                f"server busy: image requests waiting to be decoded: {self.waiting} "
                f"(limit {self.max_waiting}); retry shortly",
                Reason.DECODE_QUEUE_FULL,
            )
        deadline = time.monotonic() + self.timeout_s
        with anyio.move_on_after(self.timeout_s) as wait:
            await self._turn.acquire()
        if wait.cancelled_caught:
            raise Timeout(f"image decoding did not start within {self.timeout_s:g} s (server busy)")
        gone = threading.Event()
        watcher = asyncio.create_task(_watch(disconnected, gone)) if disconnected else None
        try:
            return await anyio.to_thread.run_sync(self._run, files, work, gone, deadline)
        except Stopped:
            if gone.is_set():
                raise ClientClosed("client closed the connection: decoding stopped") from None
            raise Timeout(f"image decoding did not finish within {self.timeout_s:g} s") from None
        finally:
            if watcher:
                watcher.cancel()
            self._turn.release()

    def _run(self, files: list[bytes], work: Work[T], gone: threading.Event, deadline: float) -> list[T]:
        def checkpoint() -> None:
            if gone.is_set() or time.monotonic() > deadline:
                raise Stopped

        results = []
        for image in self._open(files, checkpoint):
            checkpoint()
            results.append(self._each(work, image, checkpoint))
        return results

    def _each(self, work: Work[T], image: Image.Image, checkpoint: Checkpoint) -> T:
        """`work` on one opened image; the memory a large one took goes back to the OS."""
        try:
            return _mapped(work, image, checkpoint)
        finally:
            if image.width * image.height >= LARGE_PIXELS:
                memory.trim()

    def _open(self, files: list[bytes], checkpoint: Checkpoint) -> list[Image.Image]:
        """Every file's header (format, size within max_pixels), and the request's total pixels within
        max_request_pixels: all checked before any image is decoded."""
        try:
            opened = [open_image(data, self.max_pixels, checkpoint) for data in files]
        except ImageError as exc:
            raise api_error(exc) from None
        total = sum(image.width * image.height for image in opened)
        if total > self.max_request_pixels:
            raise TooLarge(
                f"images too large: {total} pixels in this request, more than {self.max_request_pixels}; "
                "send fewer or smaller images",
                Reason.REQUEST_TOO_LARGE,
            )
        return opened


def digit(image: Image.Image, checkpoint: Checkpoint, *, blank_if_none: bool = False) -> np.ndarray:
    """An opened image -> its MNIST digit, uint8 [28, 28]; blank instead of NoDigitFound if asked."""
    try:
        return to_mnist(to_grey(image, checkpoint))
    except NoDigitFound:
        if blank_if_none:
            return np.zeros((SIDE, SIDE), np.uint8)
        raise


def _mapped(work: Work[T], image: Image.Image, checkpoint: Checkpoint) -> T:
    try:
        return work(image, checkpoint)
    except ImageError as exc:
        raise api_error(exc) from None


def api_error(exc: ImageError) -> ApiError:
    """The image pipeline's refusal as the client sees it."""
    if isinstance(exc, UnsupportedFormat):
        return Unsupported(str(exc))
    if isinstance(exc, ImageTooLarge):
        return TooLarge(str(exc), Reason.IMAGE_TOO_LARGE)
    if isinstance(exc, NoDigitFound):
        return Unprocessable(str(exc), Reason.NO_DIGIT)
    return Unprocessable(str(exc), Reason.CORRUPT_IMAGE)


async def _watch(disconnected: Disconnected, gone: threading.Event) -> None:
    """Sets `gone` once the client has disconnected (cancelled when the decoding ends)."""
    while True:
        await asyncio.sleep(POLL_S)
        if await disconnected():
            gone.set()
            return
