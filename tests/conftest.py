"""Shared fixtures: the MNIST folder, system programs the suite drives, and real server processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_program(name: str) -> str:
    """Path of a system program; skip without it locally, but fail in CI, where it must be installed."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (make system-deps installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The four MNIST idx files, from MNIST_DATA_DIR (CI sets it; nothing is downloaded in tests)."""
    value = os.environ.get("MNIST_DATA_DIR")
    if not value or not Path(value).is_dir():
        message = "set MNIST_DATA_DIR to a folder with the four MNIST idx files"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return Path(value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log: Path


@contextmanager
def run_server(
    tmp_dir: Path, *, workers: int = 1, env: dict[str, str] | None = None, ready_timeout: float = 90.0
) -> Iterator[LiveServer]:
    """Start `python -m service` on a free 127.0.0.1 port and wait (bounded) until /readyz says 200."""
    port = free_port()
    log = tmp_dir / f"server-{port}.log"
    full_env = {**os.environ, **(env or {})}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers)],
            cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT,
        )
    server = LiveServer(url=f"http://127.0.0.1:{port}", process=process, log=log)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{server.url}/readyz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not ready in {ready_timeout} s:\n{log.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., object]:
    """`with server_factory(workers=2, env={...}) as server:` starts a dedicated server process."""
    base = tmp_path_factory.mktemp("servers")

    def factory(**kwargs: object):
        return run_server(base, **kwargs)

    return factory


@pytest.fixture(scope="session")
def live_server(server_factory: Callable[..., object]) -> Iterator[LiveServer]:
    """One shared real server (2 workers, default settings) for tests that only need to talk to it."""
    with server_factory(workers=2) as server:
        yield server
