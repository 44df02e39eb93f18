"""Image memory and work per request against a real server process (short forms of bench/image_memory.py):
a 6300x6300 PNG's memory is bounded and given back, a request over the pixel budget is refused, and a batch
abandoned by its client stops decoding while other image requests are served."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.image_requests import abandon, canvas, closed_count, post
from tests.support.procfs import MB, reset_peak, status
from trainer.synth.exports import large_canvas

SIDE = 6300  # a valid PNG of ~170 KB, 159 MB decoded, under the 40 Mpx per-image limit


@pytest.fixture(scope="module")
def big_png() -> bytes:
    return large_canvas(SIDE, compress_level=1)


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_huge_png_is_decoded_in_bounded_memory_which_goes_back(
    server_factory: Callable[..., object], model_path: Path, big_png: bytes
) -> None:
    with server_factory(workers=1, env={"MNIST_MODEL_PATH": str(model_path)}) as server:
        pid = server.process.pid
        for _ in range(3):
            assert post(server.url, [canvas()]).status_code == 200
        idle = status(pid)["VmRSS"]
        reset_peak(pid)
        response = post(server.url, [big_png], timeout=60)
        assert response.status_code == 200, response.text
        peak = status(pid)["VmHWM"]
        # decoded RGBA is 159 MB; before bands, premultiplied reduction and malloc settings it took ~1 GB
        assert peak - idle < 300 * MB, f"peak {peak / MB:.0f} MB, idle {idle / MB:.0f} MB"
        assert wait_for(lambda: status(pid)["VmRSS"] - idle < 100 * MB, 10), (
            f"RSS {status(pid)['VmRSS'] / MB:.0f} MB, idle {idle / MB:.0f} MB"
        )


def test_a_request_over_the_pixel_budget_is_refused_with_413(
    server_factory: Callable[..., object], model_path: Path, big_png: bytes
) -> None:
    env = {"MNIST_MODEL_PATH": str(model_path), "MNIST_MAX_REQUEST_PIXELS": str(2 * SIDE * SIDE)}
    with server_factory(workers=1, env=env) as server:
        response = post(server.url, [big_png] * 3)
        assert response.status_code == 413
        assert response.json()["error"] == (
            f"images too large: {3 * SIDE * SIDE} pixels in this request, more than "
            f"{2 * SIDE * SIDE}; send fewer or smaller images"
        )
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'mnist_errors_total{protocol="http",reason="request_too_large",status="413"} 1.0' in metrics


def test_an_abandoned_batch_stops_decoding_and_other_images_are_served(
    server_factory: Callable[..., object], model_path: Path, big_png: bytes
) -> None:
    env = {"MNIST_MODEL_PATH": str(model_path), "MNIST_MAX_REQUEST_PIXELS": str(8 * SIDE * SIDE)}
    with server_factory(workers=1, env=env) as server:
        assert closed_count(server.url) == 0
        closed_at = abandon(server.url, [big_png] * 8, 0.2)  # ~8-30 s of decoding, were it finished
        assert wait_for(lambda: closed_count(server.url) == 1, 5), "the abandoned batch was not stopped"
        stopped_after = time.monotonic() - closed_at
        assert stopped_after < 5
        started = time.monotonic()
        assert post(server.url, [canvas()]).status_code == 200
        assert time.monotonic() - started < 2
