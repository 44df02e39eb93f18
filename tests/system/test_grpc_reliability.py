"""Faults under gRPC load against real 2-worker servers: a hot reload fails no call, SIGTERM fails no call a
worker accepted, and a killed worker fails only the calls it had in flight."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx

from tests.support.faults import collected
from tests.support.grpc_load import METHOD, GrpcTraffic, grpc_closed_loop
from tests.support.liveserver import metric_sum
from tests.support.model import build_model
from tests.support.procfs import workers

CLIENTS = 8
ADMIN_KEY = "grpc-admin"


def model_env(folder: Path, version: str) -> tuple[Path, dict[str, str]]:
    path = build_model(folder / "lenet5.onnx", version=version)
    return path, {"MNIST_MODEL_PATH": str(path), "MNIST_PROVIDERS": "cpu"}


async def under_load(
    target: str, fault: object, seconds_before: float = 1.0, seconds_after: float = 1.0
) -> GrpcTraffic:
    """gRPC load around `fault()` (a coroutine function)."""
    stop = asyncio.Event()
    load = asyncio.create_task(grpc_closed_loop(target, CLIENTS, stop))
    await asyncio.sleep(seconds_before)
    await fault()
    await asyncio.sleep(seconds_after)
    stop.set()
    return await load


def test_a_hot_reload_under_grpc_load_fails_no_call(server_factory, tmp_path: Path) -> None:
    path, env = model_env(tmp_path, "3.0.0")
    with server_factory(workers=2, env={**env, "MNIST_ADMIN_KEY": ADMIN_KEY}) as server:

        async def reload() -> None:
            candidate = build_model(tmp_path / "candidate.onnx", version="3.0.1", seed=11)
            os.replace(candidate.with_suffix(".json"), path.with_suffix(".json"))
            os.replace(candidate, path)
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
                response = await client.post("/v2/repository/models/lenet5/load", headers=headers)
            assert response.status_code == 200, response.text

        traffic = asyncio.run(under_load(server.grpc, reload))
    assert not traffic.errors, traffic.errors
    assert traffic.versions["3.0.0"] > 0 and traffic.versions["3.0.1"] > 0, traffic.versions


def test_sigterm_under_grpc_load_fails_no_accepted_call(server_factory, tmp_path: Path) -> None:
    """Every call a worker accepted is answered, and every answer it counted reached its client; after the
    signal a client may be refused its next call (UNAVAILABLE), and then stops."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    _, env = model_env(tmp_path, "3.1.0")
    with server_factory(workers=2, env={**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}) as server:

        async def run() -> tuple[GrpcTraffic, float]:
            stop, signalled = asyncio.Event(), asyncio.Event()
            load = asyncio.create_task(grpc_closed_loop(server.grpc, CLIENTS, stop, give_up=signalled))
            await asyncio.sleep(1.5)
            signalled.set()
            server.process.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            while server.process.poll() is None and time.monotonic() - sent < 25:
                await asyncio.sleep(0.05)
            exited = time.monotonic() - sent
            stop.set()
            return await load, exited

        traffic, exited_s = asyncio.run(run())
    assert server.process.returncode == 0 and exited_s < 20
    served = metric_sum(
        collected(metrics_dir), "mnist_request_duration_seconds_count", route=METHOD, status="200"
    )
    assert traffic.answered > 50 and served == traffic.answered, (served, traffic)
    # After the signal a client's next call may come on a connection the worker no longer takes calls on:
    # gRPC refuses it (UNAVAILABLE, or CANCELLED for one that arrived as the server stopped taking calls),
    # before any handler saw it. The workers counted no failed call: none they accepted was lost.
    text = collected(metrics_dir)
    assert not metric_sum(text, "mnist_errors_total", protocol="grpc"), text
    assert set(traffic.errors) <= {"UNAVAILABLE", "CANCELLED"}, traffic.errors
    assert max(traffic.per_client_errors) <= 1, traffic.per_client_errors


def test_a_killed_worker_fails_only_its_calls_in_flight(server_factory, tmp_path: Path) -> None:
    _, env = model_env(tmp_path, "3.2.0")
    with server_factory(workers=2, env=env) as server:
        before = workers(server.process.pid)

        async def kill() -> None:
            os.kill(before[0], signal.SIGKILL)

        traffic = asyncio.run(under_load(server.grpc, kill, seconds_after=2.0))
        after = workers(server.process.pid)
        later = asyncio.run(
            under_load(server.grpc, lambda: asyncio.sleep(0), seconds_before=0.5, seconds_after=0.5)
        )
    # The calls on connections to the killed worker fail (at most one per client: the one in flight);
    # every client then reconnects, to a live worker.
    assert set(traffic.errors) <= {"UNAVAILABLE"} and max(traffic.per_client_errors) <= 1, traffic.errors
    assert traffic.answered > 50 and not later.errors and later.answered > 0
    assert len(after) == 2 and before[0] not in after
