"""Provider selection, the model spec and warm-up, and the dynamic batcher, with the real onnxruntime."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service import gpu
from service.batching import Batcher
from service.errors import ApiError
from service.runtime import (
    CPU,
    CUDA,
    CUDA_OPTIONS,
    ModelLoadError,
    ModelRuntime,
    cuda_problem,
    explain_cpu,
    requested_providers,
)
from service.settings import Settings
from tests.support.model import NAME, VERSION, build_model


@pytest.fixture(scope="module")
def runtime(model_path: Path) -> ModelRuntime:
    return ModelRuntime(model_path, "cpu")


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)


def test_requested_providers() -> None:
    no_gpu = "no NVIDIA driver"
    assert requested_providers("cpu", None) == [CPU]
    assert requested_providers("auto", no_gpu) == [CPU]
    assert requested_providers("auto", None) == [(CUDA, CUDA_OPTIONS), CPU]
    assert requested_providers("cuda", no_gpu) == [(CUDA, CUDA_OPTIONS), CPU]
    assert CUDA_OPTIONS["cudnn_conv_algo_search"] == "HEURISTIC"


def test_cuda_is_ruled_out_by_the_build_or_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before onnxruntime is asked: a build without the CUDA provider, or a driver library that is not
    there (its loader's own message is the reason)."""
    assert cuda_problem([CPU]) == "this onnxruntime build has no CUDA provider"
    monkeypatch.setattr(gpu, "DRIVER", "libcuda-absent.so.1")
    gpu.problem.cache_clear()
    try:
        reason = cuda_problem([CUDA, CPU])
    finally:
        gpu.problem.cache_clear()
    assert reason is not None and reason.startswith("no NVIDIA driver (libcuda-absent.so.1: cannot open")


def test_auto_tries_cuda_quietly_where_the_driver_sees_a_gpu(
    model_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture, caplog
) -> None:
    """This host has no GPU, so pretending the driver saw one makes onnxruntime try CUDA and fail to load
    it: what it prints (the libraries it misses, its logger's errors) is held back, and one warning says
    why the model runs on CPU."""
    monkeypatch.setattr(gpu, "problem", lambda: None)
    explain_cpu.cache_clear()
    capfd.readouterr()
    with caplog.at_level("DEBUG", logger="service.runtime"):
        loaded = ModelRuntime(model_path, "auto")
    if loaded.provider == CUDA:
        pytest.skip("CUDA really works on this machine")
    printed = capfd.readouterr()
    assert "onnxruntime" not in printed.out + printed.err and "Failed to load" not in printed.out
    [why] = [record for record in caplog.records if record.getMessage().startswith("onnxruntime runs on CPU")]
    assert why.levelname == "WARNING" and why.event == "provider_fallback"
    assert "the driver sees a GPU but onnxruntime's CUDA provider did not load" in why.getMessage()
    assert "MNIST_PROVIDERS=cuda shows" in why.getMessage()


def test_warm_up_repeats_every_batch_size_for_the_minimum_time(runtime: ModelRuntime) -> None:
    sizes: list[int] = []
    run = runtime.run

    def counted(x: np.ndarray) -> dict[str, np.ndarray]:
        sizes.append(len(x))
        return run(x)

    runtime.run = counted  # type: ignore[method-assign]
    try:
        runtime.warm_up(4, 0.0)
        assert sizes == [1, 2, 3, 4]
        sizes.clear()
        started = time.monotonic()
        runtime.warm_up(4, 0.2)
        assert time.monotonic() - started >= 0.2
    finally:
        del runtime.run
    assert len(sizes) >= 8 and len(sizes) % 4 == 0 and sizes[:4] == [1, 2, 3, 4]


def test_auto_reports_what_onnxruntime_really_runs(model_path: Path) -> None:
    runtime = ModelRuntime(model_path, "auto")
    assert runtime.providers == runtime.session.get_providers()
    assert runtime.providers[-1] == CPU
    assert (CUDA in runtime.providers) == (runtime.provider == CUDA)


def test_demanding_cuda_fails_clearly_unless_it_is_really_active(model_path: Path) -> None:
    """onnxruntime-gpu lists CUDA here but cannot load it (no GPU): a demand for CUDA must not fall back."""
    assert CUDA in ort.get_available_providers()
    try:
        runtime = ModelRuntime(model_path, "cuda")
    except ModelLoadError as exc:
        assert "CUDA execution provider is not active" in str(exc)
        assert "MNIST_PROVIDERS=auto" in str(exc)
        assert gpu.problem() is None or f": {gpu.problem()};" in str(exc)  # the driver's own reason
    else:  # a machine with a working GPU
        assert runtime.provider == CUDA


def test_spec_and_identity_are_read_from_the_model(runtime: ModelRuntime) -> None:
    assert (runtime.name, runtime.version) == (NAME, VERSION)
    assert runtime.input.name == "image" and runtime.input.shape == (-1, 1, 28, 28)
    assert runtime.item_shape == (1, 28, 28) and runtime.image_shape == (28, 28)
    assert [spec.name for spec in runtime.outputs] == ["logits", "probabilities", "digit_score"]
    x = runtime.from_pixels(np.full((2, 28, 28), 255, np.uint8))
    assert x.dtype == np.float32 and x.shape == (2, 1, 28, 28) and x.max() == 1.0
    outputs = runtime.run(x)
    assert outputs["probabilities"].shape == (2, 10)


def test_bad_models_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        ModelRuntime(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="cannot load"):
        ModelRuntime(tmp_path / "junk.onnx")
    with pytest.raises(ModelLoadError, match="probabilities"):
        ModelRuntime(build_model(tmp_path / "logits_only.onnx", with_probabilities=False))


def test_threads_share_out_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("service.settings.cores", lambda: 8)
    assert Settings(workers=2).threads_per_worker == 4
    assert Settings(workers=3).threads_per_worker == 2
    assert Settings(workers=16).threads_per_worker == 1
    assert Settings(workers=2, intra_op_threads=1).threads_per_worker == 1
    assert Settings().workers == 8


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("MNIST_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("MNIST_LOG_LEVEL", "DEBUG")
    settings = Settings()
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert (settings.max_batch_size, settings.log_level) == (8, "debug")
    with pytest.raises(ValueError, match="max_batch_items"):
        Settings(max_batch_items=10, max_queue=5)


# --- the batcher ------------------------------------------------------------------------------------


def batcher(runtime: ModelRuntime, **overrides) -> Batcher:
    options = {"max_batch_size": 8, "max_wait_ms": 0.0, "max_queue": 64, "timeout_s": 10.0, **overrides}
    return Batcher(runtime.run, **options)


class CountingRuntime(ModelRuntime):
    """The real runtime, recording each batch size it ran (and optionally slowed down)."""

    delay = 0.0

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.sizes.append(len(x))
        time.sleep(self.delay)
        return super().run(x)


@pytest.fixture
def counting(model_path: Path) -> CountingRuntime:
    runtime = CountingRuntime(model_path, "cpu")
    runtime.sizes = []
    return runtime


async def with_batcher(runtime: ModelRuntime, body, **overrides):
    b = batcher(runtime, **overrides)
    b.start()
    try:
        return await body(b)
    finally:
        await b.stop()


def test_concurrent_requests_are_merged_and_results_do_not_depend_on_the_batch(
    counting: CountingRuntime,
) -> None:
    x = images(20)
    alone = [counting.run(x[i : i + 1])["probabilities"] for i in range(20)]
    counting.sizes.clear()

    async def body(b: Batcher):
        return await asyncio.gather(*(b.predict(x[i : i + 1]) for i in range(20)))

    results = asyncio.run(with_batcher(counting, body, max_wait_ms=50.0))
    assert counting.sizes == [8, 8, 4]
    for got, expected in zip(results, alone, strict=True):
        assert np.array_equal(got["probabilities"], expected)


def test_an_empty_input_is_refused(counting: CountingRuntime) -> None:
    async def body(b: Batcher):
        return await b.predict(images(0))

    with pytest.raises(ApiError, match="no images"):
        asyncio.run(with_batcher(counting, body))
    assert counting.sizes == []


def test_large_inputs_run_in_parts_within_max_batch_size(counting: CountingRuntime) -> None:
    """max_batch_size 8: parts of 6 (a quarter of each run stays for small requests), whole parts per run."""
    x = images(19)

    async def body(b: Batcher):
        return await b.predict(x)

    result = asyncio.run(with_batcher(counting, body))
    assert counting.sizes == [6, 6, 7]
    assert np.array_equal(result["probabilities"], counting.run(x)["probabilities"])


def test_small_requests_do_not_wait_behind_large_ones(counting: CountingRuntime) -> None:
    """Two large requests queue 4 runs; a single image sent after them runs in the first of them, and the
    large ones still finish (each run keeps room for them)."""
    counting.delay = 0.02
    order: list[str] = []

    async def body(b: Batcher):
        async def send(name: str, n: int) -> None:
            await b.predict(images(n))
            order.append(name)

        return await asyncio.gather(send("large-1", 12), send("large-2", 12), send("single", 1))

    asyncio.run(with_batcher(counting, body))
    assert order[0] == "single" and sorted(order[1:]) == ["large-1", "large-2"]
    assert counting.sizes[0] == 7 and sum(counting.sizes) == 25  # the single and a part of 6


def test_a_full_queue_refuses_with_retry_after(counting: CountingRuntime) -> None:
    async def body(b: Batcher):
        return await asyncio.gather(*(b.predict(images(1)) for _ in range(7)), return_exceptions=True)

    results = asyncio.run(with_batcher(counting, body, max_queue=4))
    refused = [r for r in results if isinstance(r, ApiError)]
    assert len(refused) == 3
    assert all(
        r.status == 503 and r.headers == {"Retry-After": "1"} and r.reason == "queue_full" for r in refused
    )
    assert sum(counting.sizes) == 4


def test_requests_wait_in_order_for_room_instead_of_503(counting: CountingRuntime) -> None:
    """queue_wait_s > 0: a request that does not fit waits, first come first served, until a run frees room;
    one that can wait no longer gets 503."""
    counting.delay = 0.05

    async def body(b: Batcher):
        return await asyncio.gather(*(b.predict(images(1)) for _ in range(7)), return_exceptions=True)

    results = asyncio.run(with_batcher(counting, body, max_queue=2, queue_wait_s=5.0))
    assert all(isinstance(r, dict) for r in results) and sum(counting.sizes) == 7

    counting.sizes.clear()
    counting.delay = 0.3
    results = asyncio.run(with_batcher(counting, body, max_queue=2, queue_wait_s=0.1))
    refused = [r for r in results if isinstance(r, ApiError)]
    assert refused and all(r.status == 503 and r.reason == "queue_full" for r in refused)
    assert len(refused) + sum(counting.sizes) == 7


def test_deadline_gives_504_and_skips_expired_work(counting: CountingRuntime) -> None:
    counting.delay = 0.3

    async def body(b: Batcher):
        first = asyncio.ensure_future(b.predict(images(1)))
        await asyncio.sleep(0.05)  # the first is running; the second waits behind it past its deadline
        return await asyncio.gather(first, b.predict(images(1)), return_exceptions=True)

    results = asyncio.run(with_batcher(counting, body, timeout_s=0.2))
    assert all(isinstance(r, ApiError) and r.status == 504 for r in results)
    assert counting.sizes == [1]  # the expired second request never ran


def test_stop_fails_queued_requests(counting: CountingRuntime) -> None:
    counting.delay = 0.2

    async def body():
        b = batcher(counting)
        b.start()
        first = asyncio.ensure_future(b.predict(images(1)))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(b.predict(images(1)))
        await asyncio.sleep(0)
        await b.stop()
        return await asyncio.gather(first, second, return_exceptions=True)

    results = asyncio.run(asyncio.wait_for(body(), 5))
    assert all(isinstance(r, ApiError) and r.status == 503 for r in results)  # running and queued alike


def test_small_batches_run_on_the_loop_and_large_ones_in_the_worker_thread(model_path: Path) -> None:
    """The thread hand-off costs more than a run of a few images; a long run must never hold the loop."""
    runtime = ModelRuntime(model_path, "cpu")
    threads: list[tuple[int, str]] = []

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        threads.append((len(x), threading.current_thread().name))
        return runtime.run(x)

    async def body() -> str:
        b = Batcher(run, max_batch_size=64, max_wait_ms=0.0, max_queue=64, timeout_s=10.0, inline_max=4)
        b.start()
        try:
            await b.predict(images(4))
            await b.predict(images(5))
        finally:
            await b.stop()
        return threading.current_thread().name

    loop_thread = asyncio.run(body())
    assert threads[0] == (4, loop_thread)
    assert threads[1][0] == 5 and threads[1][1].startswith("onnxruntime")
