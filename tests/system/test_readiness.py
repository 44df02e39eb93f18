"""Ready means ready, against real 2-worker `python -m service` processes on 127.0.0.1: a worker takes no
connection before its model is loaded, warmed up and self-tested (at a start, and when a killed worker is
replaced), and a CPU-only start says once why it does not run on CUDA. bench/readiness.py measures the
same against the issue's figures."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import httpx
import pytest

from service import gpu
from tests.support.liveserver import metric_sum, start_server, stop
from tests.support.readiness import after_first_ready, replace_killed_worker

CLIENTS = 16


@pytest.fixture(scope="module")
def model_env(model_path: Path) -> dict[str, str]:
    return {"MNIST_MODEL_PATH": str(model_path), "MNIST_PROVIDERS": "cpu"}


def test_traffic_from_the_first_ready_answer_sees_no_503(model_env, tmp_path: Path) -> None:
    """From a 2-worker server's first /readyz 200, 16 clients for 1.5 s, every request on a new connection
    (placed anew by the kernel each time): every answer is a 200 and no connection fails, although the
    second worker may still be warming up when the first answers (512 batch sizes to warm up: the longer
    the warm-ups, the wider the gap between the two workers' ends of them)."""
    env = {**model_env, "MNIST_MAX_BATCH_SIZE": "512"}
    server = start_server(tmp_path / "server.log", workers=2, env=env)
    try:
        seen = asyncio.run(after_first_ready(server.url, CLIENTS, window_s=1.5))
    finally:
        stop(server.process)
    assert seen.answers >= 50, seen  # the load was real
    assert set(seen.statuses) == {200} and seen.loading == 0, seen.statuses
    assert not seen.errors, seen.errors


def test_a_killed_workers_replacement_takes_no_connection_before_it_is_warm(
    server_factory, model_env
) -> None:
    """Warm-up held for 3 s (MNIST_WARMUP_MIN_S), 16 clients, one worker SIGKILLed: its replacement holds
    no listening socket until it has logged ready, and listens after; no request anywhere gets a 503.
    Raw clients lose at most the request each had in flight on the killed worker, at the kill, and every
    call through mnist_client succeeds: it retries those."""
    env = {**model_env, "MNIST_WARMUP_MIN_S": "3", "MNIST_MAX_BATCH_SIZE": "8"}
    with server_factory(workers=2, env=env) as server:
        replaced = asyncio.run(replace_killed_worker(server, CLIENTS))
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 3 <= replaced.ready_s < math.inf, replaced
    assert not replaced.listened_early and replaced.listened_after, replaced
    seen = replaced.seen
    assert set(seen.statuses) == {200} and seen.loading == 0, seen.statuses
    assert metric_sum(text, "mnist_errors_total", reason="not_ready") == 0
    assert len(seen.errors) <= CLIENTS // 2, seen.errors
    assert all(at - replaced.killed_at < 2.0 for at, _ in seen.errors), seen.errors
    assert replaced.library_calls >= 50 and not replaced.library_failures, replaced.library_failures[:3]


def test_a_cpu_only_start_says_once_why_not_cuda(server_factory, model_env) -> None:
    """MNIST_PROVIDERS=auto on a host without a usable GPU: of the whole start log of two workers and the
    CLI, one line mentions CUDA, and it says why CUDA is not used; no onnxruntime loader noise."""
    reason = gpu.problem()
    if reason is None:
        pytest.skip("this host has a GPU the driver sees")
    with server_factory(workers=2, env={**model_env, "MNIST_PROVIDERS": "auto"}) as server:
        log = server.log.read_text()
        providers = httpx.get(f"{server.url}/v1/models/lenet5", timeout=10).json()["providers"]
    mentions = [line for line in log.splitlines() if "cuda" in line.lower()]
    assert len(mentions) == 1, mentions
    assert mentions[0].endswith(f"onnxruntime runs on CPU, not CUDA: {reason}"), mentions
    assert "Failed to load" not in log and "onnxruntime_src" not in log
    assert providers == ["CPUExecutionProvider"]
