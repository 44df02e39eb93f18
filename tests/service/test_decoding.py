"""DecodePool: a few decodes at a time, a bounded queue (503), deadlines (504), the request's pixel budget
(413 before decoding) and work stopped for a client that has gone (499)."""

from __future__ import annotations

import struct
import threading
import time
import zlib

import anyio
import numpy as np
import pytest
from PIL import Image

from service.errors import ApiError
from service.images.pool import DecodePool
from trainer.synth.exports import large_canvas
from trainer.synth.paper import encode


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def png(digit_box: tuple[int, int, int, int] = (40, 20, 60, 80)) -> bytes:
    """Dark ink on light paper, 100x100."""
    pixels = np.full((100, 100), 230, np.uint8)
    left, top, right, bottom = digit_box
    pixels[top:bottom, left:right] = 20
    return encode(Image.fromarray(pixels), "PNG")


@pytest.fixture(scope="module")
def canvas_4k() -> bytes:
    """A transparent 4000x4000 canvas: 64 MB decoded, ~0.1-0.3 s to decode here."""
    return large_canvas(4000, compress_level=1)


def claimed_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose data is a few bytes: decoding it fails (422)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(100)))


def decoder(**kwargs: float) -> DecodePool:
    settings = {"max_pixels": 40_000_000, "max_request_pixels": 100_000_000, "max_waiting": 4}
    return DecodePool(**{**settings, "timeout_s": 5, "threads": 1, **kwargs})


class HeldDecoder(DecodePool):
    """Each decode signals `decoding`, then waits for `go`: the test decides when it finishes."""

    def __init__(self, **kwargs: float) -> None:
        super().__init__(max_pixels=10_000_000, max_request_pixels=10_000_000, **kwargs)
        self.active = 0
        self.most_active = 0
        self.lock = threading.Lock()
        self.decoding = threading.Event()
        self.go = threading.Event()

    def _run(self, *args: object) -> list[np.ndarray]:
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        self.decoding.set()
        self.go.wait(10)
        with self.lock:
            self.active -= 1
        return super()._run(*args)


class CountingDecoder(DecodePool):
    """Counts the images it starts to decode (the real decoding runs)."""

    def __init__(self, **kwargs: float) -> None:
        super().__init__(**kwargs)
        self.started = 0

    def _each(self, *args: object) -> np.ndarray:
        self.started += 1
        return super()._each(*args)


async def until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await anyio.sleep(0.005)


@pytest.mark.anyio
async def test_decodes_images_in_order() -> None:
    images = await decoder().digits([png((40, 20, 60, 80)), png((10, 10, 90, 30))])
    assert images.shape == (2, 28, 28) and images.dtype == np.uint8
    tall, wide = images.astype(bool)
    assert tall.any(axis=1).sum() > tall.any(axis=0).sum()  # a tall bar stays tall
    assert wide.any(axis=0).sum() > wide.any(axis=1).sum()


@pytest.mark.anyio
@pytest.mark.parametrize("threads", [1, 2])
async def test_beyond_the_threads_and_the_queue_answers_503_and_queued_requests_still_finish(
    threads: int,
) -> None:
    decoder = HeldDecoder(max_waiting=1, timeout_s=5, threads=threads)
    results: list[np.ndarray] = []

    async def decode() -> None:
        results.append(await decoder.digits([png()]))

    async with anyio.create_task_group() as group:
        for _ in range(threads):
            group.start_soon(decode)  # decoding, held
        await until(lambda: decoder.active == threads)
        group.start_soon(decode)  # waits for a thread
        await until(lambda: decoder.waiting == 1)
        started = time.monotonic()
        with pytest.raises(ApiError) as refused:
            await decoder.digits([png()])
        assert time.monotonic() - started < 1
        assert (refused.value.status, refused.value.reason) == (503, "decode_queue_full")
        assert refused.value.headers == {"Retry-After": "1"}
        assert "waiting to be decoded: 1 (limit 1)" in refused.value.message
        decoder.go.set()
    assert len(results) == threads + 1 and decoder.waiting == 0
    assert decoder.most_active == threads


@pytest.mark.anyio
async def test_a_tiny_image_is_decoded_at_once_even_while_every_thread_is_busy() -> None:
    decoder = HeldDecoder(max_waiting=1, timeout_s=5, threads=1)
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 12:16] = 255  # an MNIST-style "1"
    async with anyio.create_task_group() as group:
        group.start_soon(decoder.digits, [png()])  # holds the only thread until `go`
        await until(decoder.decoding.is_set)
        (seen,) = await decoder.digits([encode(Image.fromarray(digit), "PNG")])
        assert seen[14, 14] == 255 and seen[14, 4] == 0
        decoder.go.set()


@pytest.mark.anyio
async def test_wait_past_the_deadline_answers_504_and_frees_its_place() -> None:
    decoder = HeldDecoder(max_waiting=4, timeout_s=0.1, threads=1)
    held: list[ApiError] = []

    async def hold() -> None:
        with pytest.raises(ApiError) as error:
            await decoder.digits([png()])
        held.append(error.value)

    async with anyio.create_task_group() as group:
        group.start_soon(hold)  # holds the turn until `go`
        await until(decoder.decoding.is_set)
        with pytest.raises(ApiError) as late:
            await decoder.digits([png()])
        assert (late.value.status, late.value.reason) == (504, "timeout")
        assert "did not start within 0.1 s" in late.value.message
        assert decoder.waiting == 0
        decoder.go.set()
    # the held request ran past its own deadline: it stops before its first image, also with 504
    assert [(error.status, error.reason) for error in held] == [(504, "timeout")]
    assert "did not finish within 0.1 s" in held[0].message
    assert (await decoder.digits([png()])).shape == (1, 28, 28)  # the turn was given back


@pytest.mark.anyio
async def test_request_pixel_budget_is_checked_from_the_headers_before_decoding() -> None:
    files = [png(), claimed_png(3000, 3000), png()]  # 9.02 Mpx in all; the second cannot be decoded
    with pytest.raises(ApiError) as corrupt:
        await decoder(max_request_pixels=10_000_000).digits(files)
    assert (corrupt.value.status, corrupt.value.reason) == (422, "corrupt_image")  # decoding was reached
    counting = CountingDecoder(
        max_pixels=40_000_000, max_request_pixels=9_000_000, max_waiting=4, timeout_s=5, threads=1
    )
    with pytest.raises(ApiError) as refused:
        await counting.digits(files)
    assert (refused.value.status, refused.value.reason) == (413, "request_too_large")
    assert refused.value.message == (
        "images too large: 9020000 pixels in this request, more than 9000000; send fewer or smaller images"
    )
    assert counting.started == 0


@pytest.mark.anyio
async def test_work_for_a_client_that_has_gone_stops(canvas_4k: bytes) -> None:
    files = [canvas_4k] * 12  # seconds of decoding in all
    counting = CountingDecoder(
        max_pixels=40_000_000, max_request_pixels=10**9, max_waiting=4, timeout_s=60, threads=1
    )
    gone_at = time.monotonic() + 0.2

    async def disconnected() -> bool:
        return time.monotonic() > gone_at

    with pytest.raises(ApiError) as stopped:
        await counting.digits(files, disconnected)
    assert (stopped.value.status, stopped.value.reason) == (499, "client_closed")
    assert 1 <= counting.started < len(files) // 2
    # the same work for a client that stays runs to the end
    assert (await counting.digits(files[:2], _false)).shape == (2, 28, 28)


async def _false() -> bool:
    return False


@pytest.mark.anyio
async def test_a_batch_past_its_deadline_stops_with_504(canvas_4k: bytes) -> None:
    counting = CountingDecoder(
        max_pixels=40_000_000, max_request_pixels=10**9, max_waiting=4, timeout_s=0.3, threads=1
    )
    started = time.monotonic()
    with pytest.raises(ApiError) as late:
        await counting.digits([canvas_4k] * 12)
    assert (late.value.status, late.value.reason) == (504, "timeout")
    assert "did not finish within 0.3 s" in late.value.message
    assert counting.started < 12 and time.monotonic() - started < 5
