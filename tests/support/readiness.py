"""What clients see while workers start: from a server's first `/readyz` 200, and while a SIGKILLed worker
is replaced. Shared by tests/system/test_readiness.py and bench/readiness.py."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import numpy as np

from mnist_client import AsyncClient, MnistError
from tests.support.faults import JSON_BODY, PIXELS
from tests.support.liveserver import READY_MARK, LiveServer
from tests.support.procfs import listens, workers

# The error of a worker that takes a request before its model is warm (service/repository.py).
LOADING = "model is loading"


@dataclass
class Seen:
    """What raw clients (no retries) saw: statuses, 503s that said "loading", and transport errors with the
    time (monotonic) each happened."""

    statuses: Counter[int] = field(default_factory=Counter)
    loading: int = 0
    errors: list[tuple[float, str]] = field(default_factory=list)

    @property
    def answers(self) -> int:
        return sum(self.statuses.values())


async def raw_clients(url: str, clients: int, stop: asyncio.Event, seen: Seen) -> None:
    """`clients` clients posting one JSON digit after another until `stop`, each request on a new connection
    (so the kernel places every one anew among the listening workers), without retries."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=0)
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def one() -> None:
            while not stop.is_set():
                try:
                    response = await client.post("/predict", content=JSON_BODY, headers=headers)
                except httpx.TransportError as exc:
                    seen.errors.append((time.monotonic(), type(exc).__name__))
                    await asyncio.sleep(0.01)
                    continue
                seen.statuses[response.status_code] += 1
                seen.loading += response.status_code == 503 and LOADING in response.text

        await asyncio.gather(*(one() for _ in range(clients)))


async def first_ready(url: str, limit_s: float) -> float:
    """Poll GET /readyz every 10 ms until it answers 200: when (monotonic), or inf if not within `limit_s`."""
    deadline = time.monotonic() + limit_s
    async with httpx.AsyncClient(base_url=url, timeout=1) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return time.monotonic()
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.01)
    return math.inf


async def after_first_ready(url: str, clients: int, window_s: float, limit_s: float = 90.0) -> Seen:
    """From a starting server's first /readyz 200, `clients` raw clients for `window_s` seconds."""
    seen = Seen()
    if math.isinf(await first_ready(url, limit_s)):
        raise TimeoutError(f"{url} never answered /readyz 200 within {limit_s} s")
    stop = asyncio.Event()
    load = asyncio.create_task(raw_clients(url, clients, stop, seen))
    await asyncio.sleep(window_s)
    stop.set()
    await load
    return seen


@dataclass
class Replacement:
    """A worker SIGKILLed under load: what raw clients saw, the calls through mnist_client (keep-alive, its
    retries) and those that failed anyway, when the kill was (monotonic), how long until the replacement
    logged ready (inf: not within the limit), and whether it listened before that line or after it."""

    seen: Seen
    library_calls: int
    library_failures: list[str]
    killed_at: float
    ready_s: float
    listened_early: bool
    listened_after: bool


async def library_clients(url: str, clients: int, stop: asyncio.Event, outcomes: list[str]) -> None:
    """`clients` callers of one mnist_client.AsyncClient predicting a digit until `stop`: "ok" or the
    MnistError of each call."""
    digit = np.asarray(PIXELS, np.uint8)
    async with AsyncClient(url, retries=3) as client:

        async def one() -> None:
            while not stop.is_set():
                try:
                    await client.predict(digit)
                    outcomes.append("ok")
                except MnistError as exc:
                    outcomes.append(str(exc))

        await asyncio.gather(*(one() for _ in range(clients)))


async def _watch(
    server: LiveServer, pid: int, port: int, ready_lines: int, limit_s: float
) -> tuple[bool, float, bool]:
    """Every 20 ms until the log holds `ready_lines` ready lines: whether worker `pid` listened on `port`
    before its ready line was there, when the line came (monotonic; inf: not within `limit_s`), and whether
    the worker listens within 5 s after it."""
    early, deadline, ready_at = False, time.monotonic() + limit_s, math.inf
    while time.monotonic() < deadline:
        listening = listens(pid, port)  # first, then the log: a worker logs ready before it listens
        if server.log.read_text(errors="replace").count(READY_MARK) >= ready_lines:
            ready_at = time.monotonic()
            break
        early |= listening
        await asyncio.sleep(0.02)
    after_deadline = time.monotonic() + 5
    while not listens(pid, port) and time.monotonic() < after_deadline:
        await asyncio.sleep(0.02)
    return early, ready_at, listens(pid, port)


async def replace_killed_worker(
    server: LiveServer, clients: int, after_ready_s: float = 1.5, limit_s: float = 60.0
) -> Replacement:
    """Half the `clients` raw, half through mnist_client; after 1 s SIGKILL one worker, watch its
    replacement until it is ready, go on `after_ready_s` more, and stop."""
    seen, outcomes, stop = Seen(), [], asyncio.Event()
    load = [
        asyncio.create_task(raw_clients(server.url, clients // 2, stop, seen)),
        asyncio.create_task(library_clients(server.url, clients - clients // 2, stop, outcomes)),
    ]
    await asyncio.sleep(1.0)
    before = workers(server.process.pid)
    ready_lines = server.log.read_text(errors="replace").count(READY_MARK) + 1
    os.kill(before[0], signal.SIGKILL)
    killed_at = time.monotonic()
    replacement = None
    while replacement is None and time.monotonic() - killed_at < limit_s:
        replacement = next(iter(set(workers(server.process.pid)) - set(before)), None)
        await asyncio.sleep(0.01)
    port = int(server.url.rsplit(":", 1)[1])
    early, ready_at, after = False, math.inf, False
    if replacement is not None:
        early, ready_at, after = await _watch(server, replacement, port, ready_lines, limit_s)
    await asyncio.sleep(after_ready_s)
    stop.set()
    await asyncio.gather(*load)
    failures = [outcome for outcome in outcomes if outcome != "ok"]
    return Replacement(seen, len(outcomes), failures, killed_at, ready_at - killed_at, early, after)
