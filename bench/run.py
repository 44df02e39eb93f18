"""The service benchmark: a real server, bounded load over loopback, one markdown table plus target checks.

    MNIST_DATA_DIR=/work/shared/data/mnist python bench/run.py [--seconds 4] [--trivial-model]

Starts `python -m service` (one worker, then two) on 127.0.0.1 and drives it with wrk (bench/loadgen.py)
using real MNIST test digits: single JSON /predict, single PNG /predict (dark ink on light paper), and
256-image batches to /predict/batch as JSON and as raw uint8. Beside them, in the same run, the two
floors the targets are relative to: GET /healthz through the same stack and client (the HTTP floor) and
onnxruntime in-process at batch 256 with a worker's thread count (the compute floor). The server keeps
its defaults except MNIST_MAX_QUEUE=8192, so 32 concurrent 256-image batches queue instead of getting 503.
The last column, server CPU time (every thread and worker process) per request at c=32, is a cost that
other load on the machine disturbs far less than throughput. About 75 s with the default --seconds 4.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnx
import orjson
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen import Load, Request, cpu_seconds, run  # noqa: E402
from service.runtime import ModelRuntime  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests.liveserver import LiveServer, run_server  # noqa: E402
from trainer.data import load_test  # noqa: E402
from trainer.realistic import encode  # noqa: E402

BATCH = 256


@dataclass(frozen=True)
class Measured:
    loads: dict[int, Load]  # by concurrency
    cpu_us: float  # server CPU (all worker processes) per request at the highest concurrency


ENV = {"MNIST_MAX_QUEUE": str(32 * BATCH)}


def workloads(images: np.ndarray) -> dict[str, Request]:
    """The workloads, from real test digits (uint8 [n, 28, 28], white ink on black)."""
    png = encode(Image.fromarray(255 - images[0]), "PNG")  # as a scan would be: dark ink on light paper
    batch = images[:BATCH]
    return {
        "floor": Request("/healthz"),
        "json": Request("/predict", orjson.dumps({"pixels": images[0].tolist()}), "application/json"),
        "png": Request("/predict", png, "image/png"),
        "batch_json": Request(
            "/predict/batch", orjson.dumps({"instances": batch.tolist()}), "application/json"
        ),
        "batch_raw": Request("/predict/batch", batch.tobytes(), "application/octet-stream"),
    }


def check(url: str, requests: dict[str, Request], labels: np.ndarray) -> str:
    """One request of each kind must succeed and be right before its speed means anything."""
    accuracy = {}
    for name, request in requests.items():
        if not request.body:
            continue
        response = httpx.post(
            url + request.path, content=request.body, headers={"Content-Type": request.content_type}
        )
        response.raise_for_status()
        body = response.json()
        digits = [p["digit"] for p in body.get("predictions", [body])]
        accuracy[name] = float(np.mean(np.array(digits) == labels[: len(digits)]))
    return ", ".join(f"{name} {value:.3f}" for name, value in accuracy.items())


def compute_floor(model_path: Path, threads: int, images: np.ndarray, seconds: float) -> tuple[float, float]:
    """Images/s and CPU us per image of the shipped model in this process: onnxruntime alone at batch 256."""
    runtime = ModelRuntime(model_path, "cpu", threads)
    x = runtime.from_pixels(images[:BATCH])
    for _ in range(5):
        runtime.run(x)
    runs = 0
    started, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        runtime.run(x)
        runs += 1
    images = runs * BATCH
    return images / (time.perf_counter() - started), (time.process_time() - cpu) / images * 1e6


def settle(url: str, request: Request) -> None:
    """wrk stops with requests in flight and the server still works them off (up to 32 x 256 images):
    one more request waits behind them in the FIFO batcher, so the next measurement starts idle."""
    headers = {"Content-Type": request.content_type} if request.body else {}
    method = "POST" if request.body else "GET"
    httpx.request(
        method, url + request.path, content=request.body, headers=headers, timeout=60
    ).raise_for_status()


def measure(server: LiveServer, request: Request, seconds: int, levels: tuple[int, ...]) -> Measured:
    """A 1 s warm-up at c=32, then each concurrency level; server CPU per request at the last level."""
    run(server.url, request, concurrency=32, seconds=1)
    settle(server.url, request)
    loads = {}
    for c in levels:
        cpu = cpu_seconds(server.process.pid)
        loads[c] = run(server.url, request, concurrency=c, seconds=seconds)
        cpu = cpu_seconds(server.process.pid) - cpu
        settle(server.url, request)
    return Measured(loads, cpu / loads[levels[-1]].requests * 1e6)


def cell(value: float, load: Load | None = None) -> str:
    text = f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
    return f"{text} ({load.errors} errors)" if load is not None and load.errors else text


def target(ok: bool, text: str) -> str:
    return f"- {'PASS' if ok else 'FAIL'}: {text}"


def trivial_model(path: Path) -> Path:
    """A model under the same contract that does no work: logits = the first 10 pixels, probabilities = their
    softmax. Served in place of LeNet-5 it shows what everything around the compute costs."""
    index = {"starts": 0, "ends": 10, "axes": 1}
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"], axis=1),
            helper.make_node("Slice", ["flat", *index], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "trivial",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 10])
            for name in ("logits", "probabilities")
        ],
        [numpy_helper.from_array(np.array([value], np.int64), name) for name, value in index.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime builds of opset 17 read
    helper.set_model_props(model, {"name": "trivial", "version": "0"})
    onnx.save(model, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4, help="per measurement (whole seconds)")
    parser.add_argument(
        "--trivial-model",
        action="store_true",
        help="serve a model that does no work instead of the shipped one (accuracy is then meaningless)",
    )
    args = parser.parse_args()
    started = time.monotonic()
    load_before = os.getloadavg()
    test = load_test()
    requests = workloads(test.images)
    settings = Settings(workers=1)
    one: dict[str, Measured] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_path = trivial_model(Path(tmp) / "trivial.onnx") if args.trivial_model else settings.model_path
        env = {**ENV, "MNIST_MODEL_PATH": str(model_path)}
        with run_server(Path(tmp), workers=1, env=env) as server:
            sanity = check(server.url, requests, test.labels)
            for name, request in requests.items():
                one[name] = measure(server, request, args.seconds, (1, 32))
        compute, compute_cpu = compute_floor(
            model_path, settings.threads_per_worker, test.images, args.seconds
        )
        with run_server(Path(tmp), workers=2, env=env) as server:
            two_workers = measure(server, requests["json"], args.seconds, (32,))
    two = two_workers.loads[32]
    load_after = os.getloadavg()

    rows: list[tuple[str, str, Callable[[Load], float]]] = [
        ("HTTP floor: GET /healthz", "floor", lambda load: load.rate),
        ("single JSON /predict", "json", lambda load: load.rate),
        ("single PNG /predict (28x28 test digit, dark on light)", "png", lambda load: load.rate),
        (f"batch of {BATCH}, JSON /predict/batch", "batch_json", lambda load: load.rate * BATCH),
        (f"batch of {BATCH}, raw uint8 /predict/batch", "batch_raw", lambda load: load.rate * BATCH),
    ]
    print(
        f"model {model_path.name}; one worker x {settings.threads_per_worker} onnxruntime threads; "
        f"wrk 1 thread; {args.seconds} s each"
    )
    print()
    print(
        "| workload (1 worker unless noted) | c=1 p50 ms | c=1 p99 ms | c=32 throughput | c=32 p99 ms "
        "| c=32 server CPU us per request (per image) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for label, name, per_second in rows:
        c1, c32 = one[name].loads[1], one[name].loads[32]
        unit = "images/s" if name.startswith("batch") else "req/s"
        cpu = f"{one[name].cpu_us:.0f}" + (
            f" ({one[name].cpu_us / BATCH:.0f})" if name.startswith("batch") else ""
        )
        print(
            f"| {label} | {c1.p50_ms:.2f} | {c1.p99_ms:.2f} | {cell(per_second(c32), c32)} {unit} "
            f"| {c32.p99_ms:.1f} | {cpu} |"
        )
    print(
        f"| compute floor: onnxruntime in-process, batch {BATCH}, {settings.threads_per_worker} threads "
        f"| | | {cell(compute)} images/s | | ({compute_cpu:.0f}) |"
    )
    print(
        f"| single JSON /predict, 2 workers | | | {cell(two.rate, two)} req/s | {two.p99_ms:.1f} "
        f"| {two_workers.cpu_us:.0f} |"
    )
    print()
    floor, single = one["floor"].loads[32].rate, one["json"].loads[32]
    raw = one["batch_raw"].loads[32].rate * BATCH
    print("Targets:")
    print(
        target(
            single.rate >= 0.6 * floor,
            f"single JSON c=32 {single.rate:,.0f} req/s = {single.rate / floor:.2f} x HTTP floor "
            f"{floor:,.0f} (>= 0.6)",
        )
    )
    print(
        target(
            raw >= 0.5 * compute,
            f"raw uint8 batch c=32 {raw:,.0f} images/s = {raw / compute:.2f} x compute floor "
            f"{compute:,.0f} (>= 0.5)",
        )
    )
    print(target(single.p99_ms <= 15, f"single JSON p99 at c=32 {single.p99_ms:.1f} ms (<= 15 ms)"))
    print(
        target(
            two.rate >= 1.3 * single.rate,
            f"2 workers {two.rate:,.0f} req/s = {two.rate / single.rate:.2f} x 1 worker, single JSON c=32 "
            "(>= 1.3)",
        )
    )
    print()
    print(f"Answers checked first (accuracy): {sanity}")
    print(
        "Load average (1/5/15 min) before {:.2f} {:.2f} {:.2f}, after {:.2f} {:.2f} {:.2f}; {:.0f} s".format(
            *load_before, *load_after, time.monotonic() - started
        )
    )


if __name__ == "__main__":
    main()
