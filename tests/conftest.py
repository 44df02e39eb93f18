"""Shared fixtures: the MNIST folder, system programs the suite drives, the test model, and real server
processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.liveserver import LiveServer, run_server
from tests.support.machine import IN_CI
from tests.support.model import build_model
from trainer.data import FILES, find_file

# Apps started inside the test process serve no gRPC (port 8001 may be anyone's on a shared machine);
# real server processes get a free port of their own (tests/support/liveserver.py).
os.environ["MNIST_GRPC_PORT"] = "0"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The four MNIST idx files, from MNIST_DATA_DIR (CI sets it). All four must be there: the loader would
    download a missing one, and nothing is downloaded in tests."""
    value = os.environ.get("MNIST_DATA_DIR")
    if not value or not all(find_file(Path(value), stem) for stem in FILES):
        message = "set MNIST_DATA_DIR to a folder with the four MNIST idx files (.gz or raw)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return Path(value)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small contract-honouring test model (tests/support/model.py), built once per session."""
    return build_model(tmp_path_factory.mktemp("model") / "lenet5.onnx")


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
