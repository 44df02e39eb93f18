"""The service benchmark: real servers, bounded load over loopback, one markdown table plus target checks.

    MNIST_DATA_DIR=/path/to/mnist python -m bench.run [--seconds 4]

Starts `python -m service` (one worker, then two) on 127.0.0.1 and drives it with wrk (bench/loadgen.py):
single JSON /predict from a real MNIST test digit; images posted to /predict as they come from users (a 28x28
PNG, a 280x280 transparent canvas PNG with drawn strokes, a photo of a digit on lined paper, a 1200x1600 phone
photo JPEG; trainer/synth/digits.py); 256-image raw uint8 batches to /predict/batch. Beside them, in the same
run, two floors: the bare POST floor (bench/floor_app.py: FastAPI, one POST route that reads the body and
returns a constant, uvicorn with uvloop and httptools, no middleware; posted the same JSON body) and the
compute floor (onnxruntime in-process at batch 256 with a worker's thread count). Then a mixed load (single
JSON at c=16 while 4 clients post raw 256-image batches) and two workers.

Server CPU per request (user + system time of every thread and worker process, from /proc) is the figure
the targets use: throughput at c=32 is shaped by how many cores a server grabs and by other load on the
machine, CPU per request far less. The server keeps its defaults except larger queues
(MNIST_MAX_QUEUE=8192, MNIST_MAX_IMAGE_QUEUE=64), so c=32 queues instead of getting 503. About 2 minutes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson
from PIL import Image

from bench.core import ROOT, MachineLoad, parser, server, table, with_cpu
from bench.loadgen import Load, Request, run
from service.runtime import ModelRuntime
from service.settings import Settings
from tests.support.liveserver import LiveServer, free_port, stop
from trainer.data import load_test
from trainer.synth.digits import canvas_png, lined, phone_photo
from trainer.synth.paper import encode

BATCH = 256
LEVELS = (1, 32)
ENV = {"MNIST_MAX_QUEUE": str(32 * BATCH), "MNIST_MAX_IMAGE_QUEUE": "64"}


@dataclass(frozen=True)
class Workload:
    label: str
    request: Request
    images: int = 1  # per request
    cpu_target_us: float | None = None  # the target bound on server CPU per request


@dataclass(frozen=True)
class Measured:
    loads: dict[int, Load]  # by concurrency
    cpu_us: dict[int, float]  # server CPU per request, by concurrency


def workloads(images: np.ndarray) -> dict[str, Workload]:
    """The workloads, from real test digits (uint8 [n, 28, 28], white ink on black)."""
    rng = np.random.default_rng(0)
    single = orjson.dumps({"pixels": images[0].tolist()})
    return {
        "json": Workload("single JSON /predict", Request("/predict", single, "application/json")),
        "png": Workload(
            "28x28 PNG /predict (test digit, dark on light)",
            Request("/predict", encode(Image.fromarray(255 - images[0]), "PNG"), "image/png"),
            cpu_target_us=600,
        ),
        "canvas": Workload(
            "280x280 canvas PNG /predict (transparent, drawn strokes)",
            Request("/predict", canvas_png(rng, images[1], 0, side=280), "image/png"),
            cpu_target_us=1500,
        ),
        "lined": Workload(
            "photo of a digit on lined paper, 500x500 JPEG /predict",
            Request("/predict", lined(rng, images[2], 0), "image/jpeg"),
            cpu_target_us=2500,
        ),
        "phone": Workload(
            "phone photo 1200x1600 JPEG /predict",
            Request("/predict", phone_photo(rng, images[3], 0), "image/jpeg"),
            cpu_target_us=8000,
        ),
        "batch_raw": Workload(
            f"batch of {BATCH}, raw uint8 /predict/batch",
            Request("/predict/batch", images[:BATCH].tobytes(), "application/octet-stream"),
            images=BATCH,
        ),
    }


def check(url: str, loads: dict[str, Workload], labels: np.ndarray) -> str:
    """One request of each kind must succeed before its speed means anything; digits read, for the record."""
    read = {}
    for name, workload in loads.items():
        request = workload.request
        response = httpx.post(
            url + request.path, content=request.body, headers={"Content-Type": request.content_type}
        )
        response.raise_for_status()
        body = response.json()
        digits = [p["digit"] for p in body.get("predictions", [body])]
        read[name] = (
            f"{np.mean(np.array(digits) == labels[: len(digits)]):.3f}"
            if name in ("json", "batch_raw")
            else str(digits[0])
        )
    return ", ".join(f"{name} {value}" for name, value in read.items())


def compute_floor(model_path: Path, threads: int, images: np.ndarray, seconds: float) -> tuple[float, float]:
    """Images/s and CPU us per image of the model in this process: onnxruntime alone at batch 256."""
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
    httpx.post(url + request.path, content=request.body, headers=headers, timeout=60).raise_for_status()


def measure(pid: int, url: str, request: Request, seconds: int, levels: tuple[int, ...] = LEVELS) -> Measured:
    """A 1 s warm-up at c=32, then each concurrency level with the server CPU it took per request."""
    run(url, request, concurrency=32, seconds=1)
    settle(url, request)
    loads, cpu_us = {}, {}
    for c in levels:
        loads[c], cpu = with_cpu(pid, lambda c=c: run(url, request, concurrency=c, seconds=seconds))
        cpu_us[c] = cpu / max(1, loads[c].requests) * 1e6
        settle(url, request)
    return Measured(loads, cpu_us)


def floor_server(request: Request, seconds: int) -> Measured:
    """The bare FastAPI POST floor, measured like the service."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.floor_app:app",
        "--port",
        str(port),
        "--loop",
        "uvloop",
    ]
    command += ["--http", "httptools", "--log-level", "warning", "--no-access-log"]
    process = subprocess.Popen(command, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                settle(url, request)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the floor app did not start") from None
                time.sleep(0.1)
        return measure(process.pid, url, request, seconds)
    finally:
        stop(process)


def mixed(server: LiveServer, single: Request, batch: Request, seconds: int) -> Load:
    """Single JSON at c=16 while 4 clients post raw batches: what a batch client costs everyone else."""
    with ThreadPoolExecutor(2) as pool:
        batches = pool.submit(run, server.url, batch, concurrency=4, seconds=seconds + 1)
        time.sleep(0.5)  # the batches are running before the singles start
        singles = run(server.url, single, concurrency=16, seconds=seconds)
        batches.result()
    settle(server.url, batch)
    return singles


def row(label: str, measured: Measured, workload_images: int = 1, rate_unit: str = "req/s") -> list[str]:
    c1, c32 = measured.loads[1], measured.loads[32]
    per_image = f" ({measured.cpu_us[32] / workload_images:.0f})" if workload_images > 1 else ""
    errors = f" ({c32.errors} errors)" if c32.errors else ""
    return [
        label,
        f"{c1.p50_ms:.2f}",
        f"{c1.p99_ms:.2f}",
        f"{measured.cpu_us[1]:,.0f}",
        f"{c32.rate * workload_images:,.0f} {rate_unit}{errors}",
        f"{c32.p99_ms:.1f}",
        f"{measured.cpu_us[32]:,.0f}{per_image}",
    ]


def target(ok: bool, text: str) -> str:
    return f"- {'PASS' if ok else 'FAIL'}: {text}"


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--seconds", type=int, default=4, help="per measurement (whole seconds)")
    seconds = args.parse_args().seconds
    started = time.monotonic()
    load = MachineLoad()
    test = load_test()
    loads = workloads(test.images)
    settings = Settings(workers=1)
    floor = floor_server(loads["json"].request, seconds)
    one: dict[str, Measured] = {}
    model_path = settings.model_path
    env = {**ENV, "MNIST_MODEL_PATH": str(model_path)}
    with server(workers=1, env=env) as live:
        sanity = check(live.url, loads, test.labels)
        for name, workload in loads.items():
            one[name] = measure(live.process.pid, live.url, workload.request, seconds)
        busy = mixed(live, loads["json"].request, loads["batch_raw"].request, seconds)
    compute, compute_cpu = compute_floor(model_path, settings.threads_per_worker, test.images, seconds)
    with server(workers=2, env=env) as live:
        two = measure(live.process.pid, live.url, loads["json"].request, seconds, (32,))
    machine = load.report()

    print(
        f"model {model_path.name}; one worker x {settings.threads_per_worker} onnxruntime threads unless "
        f"noted; wrk 1 thread; {seconds} s each"
    )
    print()
    two32 = two.loads[32]
    rows = [row("bare POST floor (bench/floor_app.py, same JSON body)", floor)]
    rows += [
        row(w.label, one[name], w.images, "images/s" if w.images > 1 else "req/s")
        for name, w in loads.items()
    ]
    rows += [
        [
            f"compute floor: onnxruntime in-process, batch {BATCH}",
            *["", "", ""],
            f"{compute:,.0f} images/s",
            "",
            f"({compute_cpu:.0f})",
        ],
        [
            f"single JSON c=16 while 4 clients post raw {BATCH}-image batches",
            *["", "", ""],
            f"{busy.rate:,.0f} req/s",
            f"{busy.p99_ms:.1f}",
            "",
        ],
        [
            "single JSON, 2 workers",
            *["", "", ""],
            f"{two32.rate:,.0f} req/s",
            f"{two32.p99_ms:.1f}",
            f"{two.cpu_us[32]:,.0f}",
        ],
    ]
    header = ["workload", "c=1 p50 ms", "c=1 p99 ms", "c=1 server CPU us/request", "c=32 throughput"]
    table([*header, "c=32 p99 ms", "c=32 server CPU us/request (per image)"], rows, "lrrrrrr")
    single32 = one["json"].loads[32]
    print()
    print("Targets (server CPU per request at c=32):")
    for name, workload in loads.items():
        if workload.cpu_target_us is not None:
            cpu = one[name].cpu_us[32]
            print(
                target(
                    cpu <= workload.cpu_target_us,
                    f"{workload.label}: {cpu:,.0f} us (<= {workload.cpu_target_us:,.0f})",
                )
            )
    json_cpu, floor_cpu = one["json"].cpu_us[32], floor.cpu_us[32]
    ratio = json_cpu / floor_cpu
    print(
        target(
            ratio <= 2.6,
            f"single JSON {json_cpu:.0f} us = {ratio:.2f} x the bare POST floor {floor_cpu:.0f} us (<= 2.6)",
        )
    )
    print(target(single32.p99_ms <= 15, f"single JSON p99 at c=32 {single32.p99_ms:.1f} ms (<= 15)"))
    print(
        target(
            two32.rate >= 1.3 * single32.rate,
            f"2 workers {two32.rate:,.0f} req/s = {two32.rate / single32.rate:.2f} x 1 worker (>= 1.3)",
        )
    )
    print(
        target(
            busy.p99_ms <= 25, f"mixed load: single JSON p99 {busy.p99_ms:.1f} ms while batches run (<= 25)"
        )
    )
    raw = one["batch_raw"].loads[32].rate * BATCH
    print(
        target(
            raw >= 0.5 * compute,
            f"raw uint8 batch {raw:,.0f} images/s = {raw / compute:.2f} x compute floor {compute:,.0f} "
            "(>= 0.5)",
        )
    )
    print()
    print(f"Answers checked first (accuracy of JSON/batch, digit read for images): {sanity}")
    print(f"{machine}; {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
