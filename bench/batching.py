"""Sweep the dynamic batcher's knobs against a real one-worker server; prints a table.

    python bench/batching.py [--seconds 3] [--sizes 1,4,8,16,32,64] [--waits 0,1,2]

For each (MNIST_MAX_BATCH_SIZE, MNIST_MAX_BATCH_WAIT_MS) it drives single-image JSON /predict at
concurrency 1 and 32 and raw-uint8 /predict/batch (256 images) at concurrency 2 over keep-alive loopback
connections (wrk, via bench/loadgen.py). The service defaults in service/settings.py come from this table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen import Request, cpu_seconds, run  # noqa: E402
from tests.support.liveserver import run_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3, help="per measurement (whole seconds)")
    parser.add_argument("--sizes", default="1,4,8,16,32,64")
    parser.add_argument("--waits", default="0,1,2")
    args = parser.parse_args()
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
    print(
        "| max_batch_size | max_batch_wait_ms | JSON c=1 p99 ms | JSON c=32 req/s | JSON c=32 p99 ms "
        "| JSON c=32 server CPU us/req | raw 256 c=2 images/s | raw server CPU us/image |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in map(int, args.sizes.split(",")):
            for wait in map(float, args.waits.split(",")):
                env = {"MNIST_MAX_BATCH_SIZE": str(size), "MNIST_MAX_BATCH_WAIT_MS": str(wait)}
                with run_server(Path(tmp), workers=1, env=env) as server:
                    pid = server.process.pid
                    run(server.url, one, concurrency=32, seconds=1)  # warm-up
                    c1 = run(server.url, one, concurrency=1, seconds=args.seconds)
                    cpu = cpu_seconds(pid)
                    c32 = run(server.url, one, concurrency=32, seconds=args.seconds)
                    cpu_single = (cpu_seconds(pid) - cpu) / c32.requests * 1e6
                    cpu = cpu_seconds(pid)
                    raw = run(server.url, batch, concurrency=2, seconds=args.seconds)
                    cpu_image = (cpu_seconds(pid) - cpu) / (raw.requests * 256) * 1e6
                errors = c1.errors + c32.errors + raw.errors
                cells = [
                    size,
                    f"{wait:g}",
                    f"{c1.p99_ms:.2f}",
                    f"{c32.rate:.0f}",
                    f"{c32.p99_ms:.1f}",
                    f"{cpu_single:.0f}",
                    f"{raw.rate * 256:.0f}{f' ({errors} errors)' if errors else ''}",
                    f"{cpu_image:.1f}",
                ]
                print("| " + " | ".join(map(str, cells)) + " |", flush=True)


if __name__ == "__main__":
    main()
