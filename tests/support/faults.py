"""Faulty and hostile clients over raw sockets, closed-loop normal traffic, and the scenarios built from them
(SIGTERM or a worker SIGKILLed under load). Shared by tests/system/test_reliability.py, bench/reliability.py
and bench/soak.py."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import orjson
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from tests.support.liveserver import metric_sum
from tests.support.procfs import workers

# One digit-like JSON request, the normal traffic.
PIXELS = np.random.default_rng(3).integers(0, 256, (28, 28)).tolist()
JSON_BODY = orjson.dumps({"pixels": PIXELS})
HOST_HEADER = b"Host: 127.0.0.1\r\n"
POST_HEAD = b"POST /predict HTTP/1.1\r\n%sContent-Type: application/json\r\nContent-Length: %%d\r\n\r\n" % (
    HOST_HEADER
)
# What a stalled client has sent when it stops; each leaves the server waiting for more.
STALLS = {
    "idle": b"",
    "half request line": b"POST /predi",
    "half head": b"POST /predict HTTP/1.1\r\n" + HOST_HEADER + b"Content-Ty",
    "head without body": POST_HEAD % len(JSON_BODY),
    "partial body": POST_HEAD % len(JSON_BODY) + JSON_BODY[:100],
}


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


@dataclass(frozen=True)
class Closed:
    """How a connection ended: `seconds` after the client started (inf: still open at the time limit) and
    what the server wrote before it closed."""

    seconds: float
    response: bytes

    @property
    def status(self) -> int | None:
        return int(self.response[9:12]) if self.response.startswith(b"HTTP/1.1 ") else None

    def json(self) -> dict:
        return orjson.loads(self.response.partition(b"\r\n\r\n")[2])


async def until_closed(reader: asyncio.StreamReader, started: float, limit_s: float) -> Closed:
    chunks: list[bytes] = []

    async def read_all() -> None:
        while chunk := await reader.read(65536):
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read_all(), max(0.0, started + limit_s - time.monotonic()))
    except ConnectionError:  # a reset: the server closed with our bytes unread
        pass
    except asyncio.TimeoutError:
        return Closed(math.inf, b"".join(chunks))
    return Closed(time.monotonic() - started, b"".join(chunks))


async def stall(url: str, sent: bytes, limit_s: float) -> Closed:
    """Connect, send `sent`, then nothing: when does the server close (seconds from the start of the connect,
    so never less than the server's own count), and what has it written by then?"""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(*address(url))
    try:
        writer.write(sent)
        await writer.drain()
        return await until_closed(reader, started, limit_s)
    finally:
        writer.close()


def huge_request(size: int) -> bytes:
    """A GET whose one header is `size` bytes."""
    return b"GET /healthz HTTP/1.1\r\n" + HOST_HEADER + b"X-Filler: " + b"a" * size + b"\r\n\r\n"


async def huge_head(url: str, request: bytes, limit_s: float) -> Closed:
    """Send a huge_request as fast as the server takes it: how long until the server refuses it (answers or
    closes)? Build the request beforehand: copying 100 MiB would also stall this event loop."""
    head = memoryview(request)
    reader, writer = await asyncio.open_connection(*address(url))

    async def send() -> None:  # 1 MiB at a time, as a streaming client would
        for offset in range(0, len(head), 1 << 20):
            writer.write(head[offset : offset + (1 << 20)])
            await writer.drain()

    started = time.monotonic()
    try:
        try:
            await asyncio.wait_for(send(), limit_s)
        except ConnectionError:  # the server closed before taking it all: the refusal we expect
            pass
        except asyncio.TimeoutError:
            return Closed(math.inf, b"")
        return await until_closed(reader, started, limit_s)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One keep-alive response (status, body); the service always sends Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    return int(head[9:12]), await reader.readexactly(length)


def head_of(size: int, request_line: bytes = b"GET /healthz HTTP/1.1", extra: bytes = b"") -> bytes:
    """A request head (request line, headers, blank line) of exactly `size` bytes, padded by a header."""
    fixed = request_line + b"\r\n" + HOST_HEADER + extra + b"X-Filler: \r\n\r\n"
    if size < len(fixed):
        raise ValueError(f"a head of {size} bytes cannot hold {len(fixed)}")
    return fixed.replace(b"X-Filler: ", b"X-Filler: " + b"a" * (size - len(fixed)))


@dataclass
class Traffic:
    """What closed-loop clients saw: latency of every answer, statuses, transport errors by kind."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.latencies, q)) if self.latencies else math.nan


async def closed_loop(
    url: str, clients: int, stop: asyncio.Event, give_up: asyncio.Event | None = None
) -> Traffic:
    """`clients` keep-alive connections, each posting one JSON digit to /predict as soon as its last answer
    came, until `stop` is set. A transport error is counted and retried on a new connection; once `give_up`
    is set, it ends that client instead (the server is going away: retrying would count reconnects)."""
    traffic = Traffic()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def one() -> None:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    response = await client.post("/predict", content=JSON_BODY, headers=headers)
                except httpx.TransportError as exc:
                    traffic.errors[type(exc).__name__] += 1
                    if give_up is not None and give_up.is_set():
                        return
                    await asyncio.sleep(0.05)
                    continue
                traffic.latencies.append(time.monotonic() - started)
                traffic.statuses[response.status_code] += 1

        await asyncio.gather(*(one() for _ in range(clients)))
    return traffic


async def huge_head_during_traffic(url: str, size: int, clients: int = 4) -> tuple[Closed, Traffic]:
    """A `size`-byte header sent while `clients` others post JSON digits: the refusal, and what they saw
    from just before it until 0.5 s after."""
    request = huge_request(size)
    stop = asyncio.Event()
    load = asyncio.create_task(closed_loop(url, clients, stop))
    await asyncio.sleep(0.3)
    refusal = await huge_head(url, request, limit_s=60)
    await asyncio.sleep(0.5)
    stop.set()
    return refusal, await load


def collected(metrics_dir: Path, pattern: str = "*.db") -> str:
    """The /metrics text prometheus-client makes of the files in a PROMETHEUS_MULTIPROC_DIR matching
    `pattern` (e.g. one worker's gauges), read directly: also after the server has exited."""
    with tempfile.TemporaryDirectory(prefix="metrics-") as tmp:
        for path in metrics_dir.glob(pattern):
            shutil.copy(path, tmp)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=tmp)
        return generate_latest(registry).decode()


def in_flight(text: str) -> float:
    return metric_sum(text, "mnist_requests_in_flight")


async def stalls_during_traffic(
    url: str, per_kind: int, limit_s: float, clients: int = 2
) -> tuple[dict[str, list[Closed]], Traffic]:
    """`per_kind` connections of every STALLS kind at once, while `clients` others post JSON digits."""
    stop = asyncio.Event()
    load = asyncio.create_task(closed_loop(url, clients, stop))
    kinds = [kind for kind in STALLS for _ in range(per_kind)]
    closed = await asyncio.gather(*(stall(url, STALLS[kind], limit_s) for kind in kinds))
    stop.set()
    outcomes: dict[str, list[Closed]] = {kind: [] for kind in STALLS}
    for kind, outcome in zip(kinds, closed, strict=True):
        outcomes[kind].append(outcome)
    return outcomes, await load


async def sigterm_under_load(url: str, process: subprocess.Popen, clients: int) -> tuple[Traffic, float]:
    """`clients` post JSON digits; after 1.5 s the server gets SIGTERM. What they saw until it exited (each
    client ends at its first transport error after the signal), and how long it took to exit (inf: not
    within 20 s)."""
    stop, signalled = asyncio.Event(), asyncio.Event()
    load = asyncio.create_task(closed_loop(url, clients, stop, give_up=signalled))
    await asyncio.sleep(1.5)
    signalled.set()
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    while process.poll() is None and time.monotonic() - sent < 20:
        await asyncio.sleep(0.05)
    exited = time.monotonic() - sent if process.poll() is not None else math.inf
    stop.set()
    return await load, exited


@dataclass(frozen=True)
class Crash:
    """A worker SIGKILLed under load: its own in-flight gauge just before, what the clients saw, how long
    until /metrics read 1 request in flight (the scrape itself; inf: not within the limit), the /predict
    200s the server counted afterwards (the dead worker's included), and the worker pids before/after."""

    victim_in_flight: float
    traffic: Traffic
    recovered_s: float
    served: float
    before: list[int]
    after: list[int]


async def kill_worker_under_load(
    url: str, server_pid: int, metrics_dir: Path, clients: int = 16, limit_s: float = 30.0
) -> Crash:
    """Load plus 8 requests held in flight (bodies never finished), then SIGKILL the worker with the most
    requests in flight, let the load run 1 s more, stop it, and scrape /metrics until it reads right."""
    stop = asyncio.Event()
    load = asyncio.create_task(closed_loop(url, clients, stop))
    held = []
    for _ in range(8):
        _, writer = await asyncio.open_connection(*address(url))
        writer.write(STALLS["partial body"])
        held.append(writer)
    await asyncio.sleep(1.0)
    before = workers(server_pid)
    gauges = {pid: in_flight(collected(metrics_dir, f"gauge_livesum_{pid}.db")) for pid in before}
    victim = max(before, key=lambda pid: gauges[pid])
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    await asyncio.sleep(1.0)
    for writer in held:
        writer.close()
    stop.set()
    traffic = await load
    recovered, text = math.inf, ""
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while time.monotonic() - killed < limit_s:
            try:
                text = (await client.get("/metrics")).text
            except httpx.TransportError:
                text = ""
            if text and in_flight(text) == 1:
                recovered = time.monotonic() - killed
                break
            await asyncio.sleep(0.1)
    served = metric_sum(text, "mnist_request_duration_seconds_count", route="/predict", status="200")
    return Crash(gauges[victim], traffic, recovered, served, before, workers(server_pid))
