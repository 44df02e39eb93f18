"""ImageDecoder: one decode at a time, a bounded queue (503) and a deadline for the wait (504)."""

from __future__ import annotations

import threading
import time

import anyio
import numpy as np
import pytest
from PIL import Image

from service.decoding import ImageDecoder
from service.errors import ApiError
from trainer.realistic import encode


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def png(digit_box: tuple[int, int, int, int] = (40, 20, 60, 80)) -> bytes:
    """Dark ink on light paper, 100x100."""
    pixels = np.full((100, 100), 230, np.uint8)
    left, top, right, bottom = digit_box
    pixels[top:bottom, left:right] = 20
    return encode(Image.fromarray(pixels), "PNG")


class HeldDecoder(ImageDecoder):
    """Each decode signals `decoding`, then waits for `go`: the test decides when it finishes."""

    def __init__(self, **kwargs: float) -> None:
        super().__init__(max_pixels=10_000_000, **kwargs)
        self.decoding = threading.Event()
        self.go = threading.Event()

    def _decode(self, files: list[bytes]) -> np.ndarray:
        self.decoding.set()
        self.go.wait(10)
        return super()._decode(files)


async def until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await anyio.sleep(0.005)


@pytest.mark.anyio
async def test_decodes_images_in_order() -> None:
    decoder = ImageDecoder(max_pixels=10_000_000, max_waiting=4, timeout_s=5)
    images = await decoder.decode([png((40, 20, 60, 80)), png((10, 10, 90, 30))])
    assert images.shape == (2, 28, 28) and images.dtype == np.uint8
    tall, wide = images.astype(bool)
    assert tall.any(axis=1).sum() > tall.any(axis=0).sum()  # a tall bar stays tall
    assert wide.any(axis=0).sum() > wide.any(axis=1).sum()


@pytest.mark.anyio
async def test_full_queue_answers_503_at_once_and_queued_requests_still_finish() -> None:
    decoder = HeldDecoder(max_waiting=1, timeout_s=5)
    results: list[np.ndarray] = []

    async def decode() -> None:
        results.append(await decoder.decode([png()]))

    async with anyio.create_task_group() as group:
        group.start_soon(decode)  # decoding, held
        group.start_soon(decode)  # waits for its turn
        await until(lambda: decoder.waiting == 1)
        started = time.monotonic()
        with pytest.raises(ApiError) as refused:
            await decoder.decode([png()])
        assert time.monotonic() - started < 1
        assert (refused.value.status, refused.value.reason) == (503, "decode_queue_full")
        assert refused.value.headers == {"Retry-After": "1"}
        assert "waiting to be decoded: 1 (limit 1)" in refused.value.message
        decoder.go.set()
    assert len(results) == 2 and decoder.waiting == 0


@pytest.mark.anyio
async def test_wait_past_the_deadline_answers_504_and_frees_its_place() -> None:
    decoder = HeldDecoder(max_waiting=4, timeout_s=0.1)
    async with anyio.create_task_group() as group:
        group.start_soon(decoder.decode, [png()])  # holds the turn until `go`
        await until(decoder.decoding.is_set)
        with pytest.raises(ApiError) as late:
            await decoder.decode([png()])
        assert (late.value.status, late.value.reason) == (504, "timeout")
        assert "did not start within 0.1 s" in late.value.message
        assert decoder.waiting == 0
        decoder.go.set()
    assert (await decoder.decode([png()])).shape == (1, 28, 28)  # the turn was given back
