"""Sweep the dynamic batcher's knobs against a real one-worker server; prints a table.

    python bench/batching.py [--seconds 3] [--sizes 1,4,8,16,32,64] [--waits 0,1,2]

For each (MNIST_MAX_BATCH_SIZE, MNIST_MAX_BATCH_WAIT_MS) it drives single-image JSON /predict at
concurrency 1 and 32 and raw-uint8 /predict/batch (256 images) at concurrency 2 over keep-alive loopback
connections. The service defaults in service/settings.py come from this table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.liveserver import run_server  # noqa: E402


def http_request(url: str, path: str, body: bytes, content_type: str) -> bytes:
    host = urlsplit(url).netloc
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def client(url: str, request: bytes, until: float, latencies: list[float], errors: list[int]) -> None:
    """One keep-alive connection sending `request` back to back until the deadline."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if head[9:12] != b"200":
                errors.append(int(head[9:12]))
    finally:
        writer.close()


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process so far (Linux /proc); robust to other load on the machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(url: str, request: bytes, concurrency: int, seconds: float) -> tuple[int, float, float, int]:
    """Requests, requests/s, p99 latency (ms) and error count for `concurrency` connections."""
    await asyncio.gather(
        *(client(url, request, time.perf_counter() + 0.3, [], []) for _ in range(concurrency))
    )
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(*(client(url, request, until, latencies, errors) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return len(ms), len(ms) / elapsed, float(np.percentile(ms, 99)), len(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--sizes", default="1,4,8,16,32,64")
    parser.add_argument("--waits", default="0,1,2")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    single = json.dumps({"pixels": rng.integers(0, 256, (28, 28)).tolist()}).encode()
    raw = rng.integers(0, 256, (256, 784), dtype=np.uint8).tobytes()
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
                    one = http_request(server.url, "/predict", single, "application/json")
                    batch = http_request(server.url, "/predict/batch", raw, "application/octet-stream")
                    pid = server.process.pid
                    _, _, p99_1, e1 = asyncio.run(load(server.url, one, 1, args.seconds))
                    cpu = cpu_seconds(pid)
                    n, rps, p99, e32 = asyncio.run(load(server.url, one, 32, args.seconds))
                    cpu_single = (cpu_seconds(pid) - cpu) / n * 1e6
                    cpu = cpu_seconds(pid)
                    nb, batch_rps, _, eb = asyncio.run(load(server.url, batch, 2, args.seconds))
                    cpu_image = (cpu_seconds(pid) - cpu) / (nb * 256) * 1e6
                errors = f" ({e1 + e32 + eb} errors)" if e1 + e32 + eb else ""
                cells = [
                    size,
                    f"{wait:g}",
                    f"{p99_1:.2f}",
                    f"{rps:.0f}",
                    f"{p99:.1f}",
                    f"{cpu_single:.0f}",
                    f"{batch_rps * 256:.0f}{errors}",
                    f"{cpu_image:.1f}",
                ]
                print("| " + " | ".join(map(str, cells)) + " |", flush=True)


if __name__ == "__main__":
    main()
