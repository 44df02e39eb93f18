"""Image decoding off the event loop: a few requests at a time per worker, a bounded wait, bounded work."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

import anyio
import numpy as np
from PIL import Image

from service import codecs, memory, preprocess
from service.errors import Busy, ClientClosed, Reason, Timeout

Disconnected = Callable[[], Awaitable[bool]]  # Starlette's request.is_disconnected
POLL_S = 0.05  # how often a decoding request checks that its client is still connected
# A small file (<= codecs.INLINE_PARSE_BYTES) of at most this many pixels (an MNIST-style 28x28 PNG) is
# decoded on the event loop: ~0.3 ms, about what the hop to a thread and back costs (bench/images.py).
INLINE_PIXELS = 64 * 64
LARGE_PIXELS = 4_000_000  # after an image this large, freed heap memory is handed back to the OS
MMAP_THRESHOLD = 1 << 20  # allocations from this size on are mmap()ed: freed, they leave the process at once


class ImageDecoder:
    """Decodes and MNIST-normalizes uploaded image files in `threads` threads per worker.

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

    async def decode(
        self, files: list[bytes], disconnected: Disconnected | None = None, *, batch: bool = False
    ) -> np.ndarray:
        """Encoded image files -> uint8 [len(files), 28, 28], MNIST convention. `disconnected` says whether
        the client has gone; its work then stops (499, which nobody receives). In a `batch`, an image
        without a digit is blank rather than an error."""
        if len(files) == 1 and len(files[0]) <= codecs.INLINE_PARSE_BYTES:
            (image,) = codecs.open_images(files, self.max_pixels, self.max_request_pixels)
            if image.width * image.height <= INLINE_PIXELS:  # cheaper than the hop to a thread: no wait
                return codecs.image(image, blank_if_no_digit=batch)[np.newaxis]
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
            return await anyio.to_thread.run_sync(self._decode, files, gone, deadline, batch)
        except preprocess.Stopped:
            if gone.is_set():
                raise ClientClosed("client closed the connection: decoding stopped") from None
            raise Timeout(f"image decoding did not finish within {self.timeout_s:g} s") from None
        finally:
            if watcher:
                watcher.cancel()
            self._turn.release()

    def _decode(self, files: list[bytes], gone: threading.Event, deadline: float, batch: bool) -> np.ndarray:
        def checkpoint() -> None:
            if gone.is_set() or time.monotonic() > deadline:
                raise preprocess.Stopped

        opened = codecs.open_images(files, self.max_pixels, self.max_request_pixels, checkpoint)
        out = np.empty((len(opened), preprocess.FIELD, preprocess.FIELD), dtype=np.uint8)
        for i, image in enumerate(opened):
            checkpoint()
            out[i] = self._image(image, checkpoint, batch)
        return out

    def _image(self, image: Image.Image, checkpoint: preprocess.Checkpoint, batch: bool) -> np.ndarray:
        """One opened image -> uint8 [28, 28]; the memory a large one took goes back to the OS."""
        try:
            return codecs.image(image, checkpoint, blank_if_no_digit=batch)
        finally:
            if image.width * image.height >= LARGE_PIXELS:
                memory.trim()


async def _watch(disconnected: Disconnected, gone: threading.Event) -> None:
    """Sets `gone` once the client has disconnected (cancelled when the decoding ends)."""
    while True:
        await asyncio.sleep(POLL_S)
        if await disconnected():
            gone.set()
            return
