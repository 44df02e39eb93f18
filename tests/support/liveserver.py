"""Start a real `python -m service` process on 127.0.0.1 and wait for it; used by tests and bench/."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
# What each worker logs once it has warmed up (service/app.py).
READY_MARK = "; ready"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of all samples of `name` in a /metrics text whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] == name and all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log: Path
    grpc: str = ""  # host:port of its gRPC server; empty when MNIST_GRPC_PORT is 0


def start_server(
    log: Path, *, workers: int = 1, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> LiveServer:
    """`python -m service` on a free 127.0.0.1 port (and gRPC on another, unless `env` sets
    MNIST_GRPC_PORT), output to `log`; not waited for. `cwd`: the checkout whose `service` runs."""
    port = free_port()
    env = {"MNIST_GRPC_PORT": str(free_port()), **(env or {})}
    with log.open("wb") as out:
        command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
        process = subprocess.Popen(
            [*command, "--workers", str(workers)],
            cwd=cwd,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    grpc_port = int(env["MNIST_GRPC_PORT"])
    grpc = f"127.0.0.1:{grpc_port}" if grpc_port else ""
    return LiveServer(url=f"http://127.0.0.1:{port}", process=process, log=log, grpc=grpc)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (a graceful shutdown), then SIGKILL if it does not end within 15 s."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextmanager
def run_server(
    tmp_dir: Path,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    ready_timeout: float = 90.0,
    cwd: Path = ROOT,
) -> Iterator[LiveServer]:
    """Start the service and wait (bounded) until every worker is ready; stop it afterwards.

    /readyz reaches one worker at a time, so it alone cannot tell that all of them have warmed up:
    each worker logs a line ending in READY_MARK when it is, and the log must hold one per worker.
    """
    server = start_server(tmp_dir / f"server-{free_port()}.log", workers=workers, env=env, cwd=cwd)
    process, log = server.process, server.log
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
            try:
                ready = httpx.get(f"{server.url}/readyz", timeout=1.0).status_code == 200
            except httpx.TransportError:
                ready = False
            if ready and log.read_text(errors="replace").count(READY_MARK) >= workers:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not ready in {ready_timeout} s:\n{log.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        stop(process)
