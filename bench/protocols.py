"""Server CPU per single-image KServe V2 ModelInfer: gRPC against REST V2 with binary tensors on the same
input in the same run, and against MLServer's gRPC on the same ONNX model.

    python -m bench.protocols [--requests 3000] [--concurrency 1] [--mlserver PATH/bin/mlserver]
    python -m bench.protocols --short            # a check that it runs (200 requests), no figures

One worker of `python -m service` (CPU, the shipped model) gets the same FP32 [1, 1, 28, 28] tensor (a
shipped reference digit) as raw_input_contents over gRPC and as a binary tensor over REST, `--requests`
calls each from `--concurrency` closed-loop clients (each its own connection). The figure is the server's
CPU (user + system of its whole process tree, from /proc) per call: the clients' own CPU is not in it, and
other load on the machine disturbs it far less than throughput. With `--mlserver` (the `mlserver` program of
a venv that has `mlserver` and `onnxruntime`, kept apart from this project's: e.g.
`python3 -m venv /tmp/mlserver && /tmp/mlserver/bin/pip install mlserver onnxruntime "uvloop<0.22"`; MLServer
1.7.1's inference pool does not start under uvloop 0.22's get_event_loop), MLServer, as configured by default
(its server process and one inference process, whose CPU both count), serves the
same model through bench/mlserver_runtime.py (onnxruntime with the service's session options) on
127.0.0.1 and gets the same gRPC calls. Exit code 1 if a target is missed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
import numpy as np

from bench.core import SHIPPED_MODEL, MachineLoad, Target, parser, print_targets, server, table, with_cpu
from service.contract import to_input
from service.loading import references
from service.settings import Settings
from service.v2 import messages
from service.v2.rest import HEADER_LENGTH
from tests.support.liveserver import free_port, stop

MODEL = "lenet5"
THREADS = Settings(workers=1).threads_per_worker  # onnxruntime threads of one worker, for both servers
SHORT_REQUESTS = 200


def tensor() -> np.ndarray:
    """The one input every call sends: a shipped reference digit, FP32 [1, 1, 28, 28] in [0, 1]."""
    images, _ = references({})
    return to_input(images[:1])


def grpc_request(x: np.ndarray) -> object:
    request = messages.ModelInferRequest(model_name=MODEL, raw_input_contents=[x.astype("<f4").tobytes()])
    request.inputs.add(name="image", datatype="FP32", shape=list(x.shape))
    return request


def rest_body(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    raw = x.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return header + raw, {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}


def closed_loop(calls: int, clients: int, client: Callable[[int], None]) -> float:
    """`client(n)` in `clients` threads, `calls` in all; the wall seconds it took."""
    share = [calls // clients + (i < calls % clients) for i in range(clients)]
    threads = [threading.Thread(target=client, args=(n,)) for n in share]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def grpc_client(target: str, x: np.ndarray) -> Callable[[int], None]:
    request = grpc_request(x)
    response_type = messages.METHODS["ModelInfer"][1]

    def client(n: int) -> None:
        with grpc.insecure_channel(target) as channel:
            infer = channel.unary_unary(
                f"/{messages.SERVICE}/ModelInfer",
                request_serializer=type(request).SerializeToString,
                response_deserializer=response_type.FromString,
            )
            for _ in range(n):
                infer(request, timeout=30)

    return client


def rest_client(url: str, x: np.ndarray) -> Callable[[int], None]:
    body, headers = rest_body(x)

    def client(n: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            for _ in range(n):
                http.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers).raise_for_status()

    return client


def measure(pid: int, client: Callable[[int], None], calls: int, clients: int) -> tuple[float, float]:
    """(server CPU µs per call, calls/s), after a warm-up outside the measurement."""
    closed_loop(min(100, calls), clients, client)
    seconds, cpu = with_cpu(pid, lambda: closed_loop(calls, clients, client))
    return cpu * 1e6 / calls, calls / seconds


@contextmanager
def mlserver(program: Path) -> Iterator[tuple[str, int]]:
    """MLServer serving the shipped model on 127.0.0.1 through bench/mlserver_runtime.py: (gRPC target,
    pid), once the model is ready; stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-mlserver-") as folder:
        root = Path(folder)
        grpc_port = free_port()
        settings = {
            "host": "127.0.0.1",
            "http_port": free_port(),
            "grpc_port": grpc_port,
            "metrics_port": free_port(),
        }
        (root / "settings.json").write_text(json.dumps(settings))
        model = root / MODEL
        model.mkdir()
        shutil.copy(Path(__file__).with_name("mlserver_runtime.py"), model / "mlserver_runtime.py")
        model_settings = {
            "name": MODEL,
            "implementation": "mlserver_runtime.OnnxRuntime",
            "parameters": {"uri": str(SHIPPED_MODEL), "extra": {"threads": THREADS}},
        }
        (model / "model-settings.json").write_text(json.dumps(model_settings))
        with (root / "mlserver.log").open("wb") as log:
            process = subprocess.Popen(
                [str(program), "start", str(root)], cwd=root, stdout=log, stderr=subprocess.STDOUT
            )
        target = f"127.0.0.1:{grpc_port}"
        try:
            _wait_ready(target, process, root / "mlserver.log")
            yield target, process.pid
        finally:
            stop(process)


def _wait_ready(target: str, process: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    request_type, response_type = messages.METHODS["ModelReady"]
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        ready = channel.unary_unary(
            f"/{messages.SERVICE}/ModelReady",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlserver exited with {process.returncode}:\n{log.read_text()}")
            try:
                if ready(request_type(name=MODEL), timeout=1).ready:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlserver not ready in {timeout_s} s:\n{log.read_text()}")
            time.sleep(0.2)


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--requests", type=int, default=3000, help="calls per protocol and server")
    options.add_argument("--concurrency", type=int, default=1, help="closed-loop clients")
    options.add_argument("--mlserver", type=Path, help="MLServer's `mlserver` program (its own venv)")
    options.add_argument(
        "--short", action="store_true", help=f"{SHORT_REQUESTS} calls each: a check that it runs"
    )
    args = options.parse_args()
    calls = SHORT_REQUESTS if args.short else args.requests
    x = tensor()
    load = MachineLoad()
    env = {"MNIST_PROVIDERS": "cpu", "MNIST_INTRA_OP_THREADS": str(THREADS)}
    rows, cpu = [], {}
    with server(workers=1, env=env) as live:
        pid = live.process.pid
        for label, client in (
            ("gRPC", grpc_client(live.grpc, x)),
            ("REST V2 binary", rest_client(live.url, x)),
        ):
            cpu[label], rate = measure(pid, client, calls, args.concurrency)
            rows.append((label, "mnist-serve, 1 worker", calls, f"{cpu[label]:.0f}", f"{rate:.0f}"))
    if args.mlserver:
        with mlserver(args.mlserver) as (target, pid):
            cpu["MLServer gRPC"], rate = measure(pid, grpc_client(target, x), calls, args.concurrency)
            rows.append(
                (
                    "gRPC",
                    "MLServer (custom ONNX runtime)",
                    calls,
                    f"{cpu['MLServer gRPC']:.0f}",
                    f"{rate:.0f}",
                )
            )
    print(
        f"\nSingle-image ModelInfer, FP32 [1, 1, 28, 28], concurrency {args.concurrency}; {load.report()}\n"
    )
    table(["protocol", "server", "calls", "server CPU µs/call", "calls/s (wall)"], rows, "llrrr")
    targets = [
        Target(
            "gRPC CPU/call <= REST V2 binary",
            f"{cpu['gRPC']:.0f} vs {cpu['REST V2 binary']:.0f} µs",
            cpu["gRPC"] <= cpu["REST V2 binary"],
        )
    ]
    if "MLServer gRPC" in cpu:
        half = 0.5 * cpu["MLServer gRPC"]
        targets.append(
            Target(
                "gRPC CPU/call <= 0.5 x MLServer gRPC",
                f"{cpu['gRPC']:.0f} vs {half:.0f} µs",
                cpu["gRPC"] <= half,
            )
        )
    print()
    if not print_targets(targets) and not args.short:
        sys.exit(1)


if __name__ == "__main__":
    main()
