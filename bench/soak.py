"""Soak: mixed traffic with bad and hostile inputs against a real two-worker server (default settings) for
--duration seconds, sampling the RSS and open file descriptors of every server process. Opt-in, not in CI:

    python -m bench.soak                  # 5 minutes, 16 clients
    python -m bench.soak --duration 60    # a shorter check

Each client loops over MIX in a shuffled order: valid single and batch requests (JSON pixels, a scanned PNG,
a phone-photo JPEG, raw uint8), bad ones (broken JSON, out-of-range pixels, a corrupt PNG, a blank image,
a wrong content type, route or method) and hostile ones over raw sockets (a 1 MiB header, a body over the
limit by Content-Length, a client that stalls mid-head or leaves mid-body), plus /metrics scrapes.

It passes when: every answer has the status its kind should get (never a 5xx); the worker pids never
change (no crash); once the traffic has stopped and the server's timeouts have passed, every process holds
as many file descriptors as before the traffic; and over the second half of the run no process's RSS grew
by more than max(16 MiB, 5 %) (warm-up and allocator pools settle in the first half; a leak keeps growing).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import httpx
import numpy as np
import orjson
from PIL import Image

from bench.core import MachineLoad, Target, parser, print_targets, server, table
from service.settings import Settings
from tests.support.faults import HOST_HEADER, JSON_BODY, PIXELS, address, huge_head, huge_request
from tests.support.procfs import MB, open_fds, status, workers
from trainer.synth.digits import paper_scan, phone_photo
from trainer.synth.ink import font_ink
from trainer.synth.paper import encode

Send = Callable[[httpx.AsyncClient, str], Awaitable[int | None]]  # a status, or None: nothing to check
Sample = dict[int, tuple[float, int]]  # pid -> (RSS MiB, open fds)


def _digit() -> np.ndarray:
    """A printed 7 as a 28x28 "MNIST digit" for the image generators (no MNIST files needed)."""
    ink = font_ink(7, 20, np.random.default_rng(0))
    canvas = np.zeros((28, 28), np.uint8)
    height, width = ink.shape
    canvas[4 : 4 + height, 14 - width // 2 : 14 - width // 2 + width] = (ink * 255).astype(np.uint8)
    return canvas


def _post(path: str, body: bytes, content_type: str) -> Send:
    async def send(client: httpx.AsyncClient, url: str) -> int:
        return (await client.post(path, content=body, headers={"Content-Type": content_type})).status_code

    return send


def _get(path: str) -> Send:
    async def send(client: httpx.AsyncClient, url: str) -> int:
        return (await client.get(path)).status_code

    return send


async def _raw(url: str, data: bytes, then_close_after_s: float | None) -> int | None:
    """Write raw bytes; then either leave after a while (None) or read the answer's status."""
    reader, writer = await asyncio.open_connection(*address(url))
    try:
        writer.write(data)
        await writer.drain()
        if then_close_after_s is not None:
            await asyncio.sleep(then_close_after_s)
            return None
        line = await asyncio.wait_for(reader.readline(), 30)
        return int(line[9:12]) if line.startswith(b"HTTP/1.1 ") else None
    except ConnectionError:
        return None
    finally:
        writer.close()


def mix() -> dict[str, tuple[Send, set[int | None]]]:
    """Every kind of request, and the statuses it may get."""
    rng = np.random.default_rng(1)
    digit = _digit()
    png = paper_scan(rng, digit, 7)
    photo = phone_photo(rng, digit, 7)
    blank = encode(Image.new("L", (64, 64), 255), "PNG")
    raw_batch = np.tile(np.asarray(PIXELS, np.uint8).reshape(1, 784), (64, 1)).tobytes()
    json_batch = orjson.dumps({"instances": [PIXELS] * 16})
    over = Settings().max_body_bytes + 1
    post_head = b"POST /predict HTTP/1.1\r\n" + HOST_HEADER + b"Content-Type: application/json\r\n"
    ok = {200}
    return {
        "json digit": (_post("/predict", JSON_BODY, "application/json"), ok),
        "png scan": (_post("/predict", png, "image/png"), ok),
        "phone photo": (_post("/predict", photo, "image/jpeg"), ok),
        "raw batch of 64": (_post("/predict/batch", raw_batch, "application/octet-stream"), ok),
        "json batch of 16": (_post("/predict/batch", json_batch, "application/json"), ok),
        "metrics": (_get("/metrics"), ok),
        "broken json": (_post("/predict", JSON_BODY[:-7], "application/json"), {422}),
        "pixels out of range": (
            _post("/predict", orjson.dumps({"pixels": [300] * 784}), "application/json"),
            {422},
        ),
        "corrupt png": (_post("/predict", png[:200], "image/png"), {422}),
        "blank image": (_post("/predict", blank, "image/png"), {422}),
        "wrong content type": (_post("/predict", JSON_BODY, "text/plain"), {415}),
        "unknown route": (_get("/nowhere"), {404}),
        "wrong method": (_get("/predict"), {405}),
        "1 MiB header": (lambda client, url: _huge(url), {431, None}),
        "body over the limit": (
            lambda client, url: _raw(url, post_head + b"Content-Length: %d\r\n\r\n" % over, None),
            {413},
        ),
        "stalls mid-head": (lambda client, url: _raw(url, post_head, 0.2), {None}),
        "leaves mid-body": (
            lambda client, url: _raw(url, post_head + b"Content-Length: 5000\r\n\r\n{", 0.05),
            {None},
        ),
    }


HUGE = huge_request(1 << 20)


async def _huge(url: str) -> int | None:
    return (await huge_head(url, HUGE, 30)).status


def sample(server_pid: int) -> Sample:
    """RSS (MiB) and open fds of the server process and each worker."""
    out = {}
    for pid in [server_pid, *workers(server_pid)]:
        with contextlib.suppress(FileNotFoundError, KeyError):  # a worker that just ended (or not reaped yet)
            out[pid] = (status(pid)["VmRSS"] / MB, open_fds(pid))
    return out


async def soak(url: str, server_pid: int, duration: float, clients: int, every_s: float) -> dict:
    """Run the clients and the sampler for `duration` s: statuses by kind, transport errors, samples."""
    kinds = mix()
    seen: Counter[tuple[str, int | None]] = Counter()
    errors: Counter[str] = Counter()
    samples: list[tuple[float, Sample]] = []
    started = time.monotonic()
    stop = asyncio.Event()

    async def client_loop(seed: int) -> None:
        order = list(kinds)
        rng = random.Random(seed)
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
            while not stop.is_set():
                rng.shuffle(order)
                for kind in order:
                    try:
                        seen[kind, await kinds[kind][0](client, url)] += 1
                    except (httpx.TransportError, OSError, asyncio.TimeoutError) as exc:
                        errors[f"{kind}: {type(exc).__name__}"] += 1

    async def sampler() -> None:
        while not stop.is_set():
            samples.append((time.monotonic() - started, sample(server_pid)))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)

    tasks = [asyncio.create_task(client_loop(i)) for i in range(clients)]
    sampling = asyncio.create_task(sampler())
    await asyncio.sleep(duration)
    stop.set()
    await asyncio.gather(*tasks, sampling)
    samples.append((time.monotonic() - started, sample(server_pid)))
    return {"seen": seen, "errors": errors, "samples": samples, "kinds": kinds}


def print_samples(baseline: Sample, samples: list[tuple[float, Sample]], after: Sample) -> None:
    pids = sorted(baseline)
    rows = [("before", baseline), *((f"{t:.0f}", values) for t, values in samples), ("idle after", after)]
    print()
    table(
        ["t s", *(f"pid {p} RSS MiB / fds" for p in pids)],
        (
            [label, *(f"{values[p][0]:.0f} / {values[p][1]}" if p in values else "gone" for p in pids)]
            for label, values in rows
        ),
        "r" * (len(pids) + 1),
    )


def checks(result: dict, baseline: Sample, after: Sample, duration: float) -> list[Target]:
    """Each pass condition in the module docstring."""
    kinds, seen, errors, samples = result["kinds"], result["seen"], result["errors"], result["samples"]
    wrong = {(kind, status): n for (kind, status), n in seen.items() if status not in kinds[kind][1]}
    pids = sorted(baseline)
    fds = {p: (baseline[p][1], after[p][1] if p in after else None) for p in pids}
    mid = min(samples, key=lambda s: abs(s[0] - duration / 2))[1]
    end = samples[-1][1]
    growth = {p: round(end[p][0] - mid[p][0], 1) for p in pids if p in mid and p in end}
    return [
        Target(
            "every answer has its kind's status (no 5xx)", f"{sum(wrong.values())} others: {wrong}", not wrong
        ),
        Target("no transport errors", f"{sum(errors.values())}: {dict(errors)}", not errors),
        Target("no worker crashed (same pids)", f"{pids} -> {sorted(after)}", sorted(after) == pids),
        Target(
            "fds back to the baseline once idle (before, after)",
            str(fds),
            all(a == b for a, b in fds.values()),
        ),
        Target(
            "RSS growth over the second half <= max(16 MiB, 5 %)",
            f"{growth} MiB",
            len(growth) == len(pids) and all(growth[p] <= max(16.0, 0.05 * mid[p][0]) for p in pids),
        ),
    ]


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--duration", type=float, default=300.0, help="seconds of traffic (default 300)")
    options.add_argument("--clients", type=int, default=16)
    options.add_argument("--sample-s", type=float, default=10.0, help="seconds between RSS/fd samples")
    args = options.parse_args()
    settings = Settings()
    load = MachineLoad()
    with server(workers=2) as live:
        pid = live.process.pid
        time.sleep(1.0)
        baseline = sample(pid)
        result = asyncio.run(soak(live.url, pid, args.duration, args.clients, args.sample_s))
        time.sleep(max(settings.keepalive_timeout_s, settings.head_timeout_s, settings.body_timeout_s) + 1)
        after = sample(pid)
    print(load.report())
    print(f"\n{sum(result['seen'].values()):,} requests in {args.duration:g} s from {args.clients} clients\n")
    statuses = []
    for kind, (_, allowed) in result["kinds"].items():
        got = {status: n for (name, status), n in result["seen"].items() if name == kind}
        statuses.append([kind, f"{got} (expected {sorted(allowed, key=str)})"])
    table(["kind", "statuses"], statuses)
    print_samples(baseline, result["samples"], after)
    print()
    sys.exit(0 if print_targets(checks(result, baseline, after, args.duration)) else 1)


if __name__ == "__main__":
    main()
