"""Sweep the dynamic batcher's knobs against a real one-worker server; prints a table.

    python -m bench.batching [--seconds 3] [--sizes 1,4,8,16,32,64] [--waits 0,1,2]

For each (MNIST_MAX_BATCH_SIZE, MNIST_MAX_BATCH_WAIT_MS) it drives single-image JSON /predict at
concurrency 1 and 32 and raw-uint8 /predict/batch (256 images) at concurrency 2 over keep-alive loopback
connections (wrk, via bench/loadgen.py). The service defaults in service/settings.py come from this table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np

from bench.core import parser, server, table, with_cpu
from bench.loadgen import Request, run

HEADER = [
    "max_batch_size",
    "max_batch_wait_ms",
    "JSON c=1 p99 ms",
    "JSON c=32 req/s",
    "JSON c=32 p99 ms",
    "JSON c=32 server CPU us/req",
    "raw 256 c=2 images/s",
    "raw server CPU us/image",
]


def sweep(sizes: list[int], waits: list[float], seconds: int) -> Iterator[list[object]]:
    """One table row per setting, measured as it is yielded."""
    rng = np.random.default_rng(0)
    one = Request(
        "/predict",
        json.dumps({"pixels": rng.integers(0, 256, (28, 28)).tolist()}).encode(),
        "application/json",
    )
    batch = Request(
        "/predict/batch",
        rng.integers(0, 256, (256, 784), dtype=np.uint8).tobytes(),
        "application/octet-stream",
    )
    for size in sizes:
        for wait in waits:
            env = {"MNIST_MAX_BATCH_SIZE": str(size), "MNIST_MAX_BATCH_WAIT_MS": str(wait)}
            with server(workers=1, env=env) as live:
                pid = live.process.pid
                run(live.url, one, concurrency=32, seconds=1)  # warm-up
                c1 = run(live.url, one, concurrency=1, seconds=seconds)
                c32, cpu = with_cpu(pid, lambda: run(live.url, one, concurrency=32, seconds=seconds))
                cpu_single = cpu / c32.requests * 1e6
                raw, cpu = with_cpu(pid, lambda: run(live.url, batch, concurrency=2, seconds=seconds))
                cpu_image = cpu / (raw.requests * 256) * 1e6
            errors = c1.errors + c32.errors + raw.errors
            yield [
                size,
                f"{wait:g}",
                f"{c1.p99_ms:.2f}",
                f"{c32.rate:.0f}",
                f"{c32.p99_ms:.1f}",
                f"{cpu_single:.0f}",
                f"{raw.rate * 256:.0f}{f' ({errors} errors)' if errors else ''}",
                f"{cpu_image:.1f}",
            ]


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--seconds", type=int, default=3, help="per measurement (whole seconds)")
    args.add_argument("--sizes", default="1,4,8,16,32,64")
    args.add_argument("--waits", default="0,1,2")
    options = args.parse_args()
    sizes = [int(size) for size in options.sizes.split(",")]
    waits = [float(wait) for wait in options.waits.split(",")]
    table(HEADER, sweep(sizes, waits, options.seconds), "r" * len(HEADER))


if __name__ == "__main__":
    main()
