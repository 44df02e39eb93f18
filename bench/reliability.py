"""The targets for HTTP limits and crashes, against real servers (default settings); one table.

    python -m bench.reliability [--header-mib 64 128] [--connections 1000] [--clients 32]
                                [--overload-clients 128 256]

1. Huge headers, one worker (every client shares its event loop): time from the first byte until the
   server refuses (431 or a close), and the max latency of 4 clients posting JSON digits meanwhile.
2. --connections stalled connections at once against two workers, evenly of the five kinds in
   tests/support/faults.py STALLS (connected and silent, half a request line, half a head, head without its
   body, part of a body): each closed at its configured timeout (head: MNIST_HEAD_TIMEOUT_S from connect,
   body: MNIST_BODY_TIMEOUT_S after the head), and the p99 of normal traffic (wrk, 8 connections, single
   JSON) while they are held against the same load just before.
3. SIGTERM under --clients posting clients, two workers: no request a worker started is lost (the workers'
   metric files read after exit against what the clients received).
4. A worker SIGKILLed under --clients posting clients plus 8 requests held in flight: time until /metrics
   reads 1 request in flight again (the scrape itself); the dead worker's counts stay in the totals.
4b. Overload, two workers: raw 256-image batches from 8 clients, then from each --overload-clients (wrk,
   counting statuses): accepted images/s against the 8-client figure, the statuses, and the median latency
   of single requests before and right after.
5. What the limits cost per request: a small POST fed to the protocol in-process (no sockets, a minimal
   ASGI app, uvloop), CPU time per request with service.http_limits against uvicorn's HttpToolsProtocol;
   medians of alternating rounds. For scale: bench.run's HTTP floor is ~128 us of server CPU per request.

Latency figures are wall time on the machine the bench runs on; the load average is printed with them.
About a minute with the defaults.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from bench.core import MachineLoad, Target, parser, print_targets, server
from bench.loadgen import Load, Request, run
from service.http_limits import LimitedHttpToolsProtocol
from service.settings import Settings
from tests.support.faults import (
    JSON_BODY,
    STALLS,
    collected,
    huge_head_during_traffic,
    in_flight,
    kill_worker_under_load,
    sigterm_under_load,
    stall,
)
from tests.support.liveserver import metric_sum

HEAD_KINDS = {"idle", "half request line", "half head"}  # closed by the head timeout; the rest by the body's
TIMER_SLACK_S = 1.0  # a timeout fires on time if the connection is closed by then


def ms(seconds: float) -> str:
    return "never" if math.isinf(seconds) else f"{seconds * 1000:.0f} ms"


def huge_headers(tmp: Path, sizes_mib: list[int]) -> list[Target]:
    rows = []
    with server(folder=tmp, workers=1) as live:
        for mib in sizes_mib:
            refusal, traffic = asyncio.run(huge_head_during_traffic(live.url, mib << 20))
            how = f"{refusal.status}" if refusal.status else "reset"
            rows.append(
                Target(
                    f"{mib} MiB header refused within 100 ms",
                    f"{ms(refusal.seconds)} ({how})",
                    refusal.seconds <= 0.1,
                )
            )
            worst = max(traffic.latencies, default=math.inf)
            clean = set(traffic.statuses) == {200} and not traffic.errors
            rows.append(
                Target(
                    f"{mib} MiB header: other clients' max latency <= 1 s, all 200",
                    f"{ms(worst)}, {sum(traffic.statuses.values())} answers {dict(traffic.statuses)}",
                    worst <= 1.0 and clean,
                )
            )
    return rows


async def _stalls_and_load(url: str, per_kind: int, settings: Settings, seconds: int) -> tuple[dict, Load]:
    """Hold the stalled connections; measure normal traffic with wrk while every one of them is open."""
    limit = max(settings.head_timeout_s, settings.body_timeout_s) + 10
    kinds = [kind for kind in STALLS for _ in range(per_kind)]
    held = asyncio.gather(*(stall(url, STALLS[kind], limit) for kind in kinds))
    await asyncio.sleep(0.5)
    load = await asyncio.to_thread(
        run, url, Request("/predict", JSON_BODY, "application/json"), concurrency=8, seconds=seconds
    )
    closed = await held
    outcomes: dict[str, list[float]] = {kind: [] for kind in STALLS}
    for kind, outcome in zip(kinds, closed, strict=True):
        outcomes[kind].append(outcome.seconds)
    return outcomes, load


def stalled_connections(tmp: Path, connections: int) -> list[Target]:
    settings = Settings()
    per_kind = connections // len(STALLS)
    # wrk runs in whole seconds and must end while every stalled connection is still open
    seconds = max(1, int(min(settings.head_timeout_s, settings.body_timeout_s) - 1.5))
    json = Request("/predict", JSON_BODY, "application/json")
    rows = []
    with server(folder=tmp, workers=2) as live:
        before = run(live.url, json, concurrency=8, seconds=seconds)
        outcomes, during = asyncio.run(_stalls_and_load(live.url, per_kind, settings, seconds))
    for kind, seconds_closed in outcomes.items():
        timeout = settings.head_timeout_s if kind in HEAD_KINDS else settings.body_timeout_s
        first, last = min(seconds_closed), max(seconds_closed)
        on_time = first >= timeout - 0.1 and last <= timeout + TIMER_SLACK_S
        rows.append(
            Target(
                f"{per_kind} x {kind}: all closed at the {timeout:g} s timeout (+{TIMER_SLACK_S:g} s)",
                f"{sum(not math.isinf(s) for s in seconds_closed)}/{per_kind} closed, "
                f"{first:.2f}-{last:.2f} s",
                on_time,
            )
        )
    unchanged = during.p99_ms <= 1.5 * before.p99_ms and during.errors == 0
    rows.append(
        Target(
            f"normal traffic p99 while {per_kind * len(STALLS)} are held <= 1.5 x before",
            f"{during.p99_ms:.1f} ms vs {before.p99_ms:.1f} ms ({during.rate:,.0f} vs "
            f"{before.rate:,.0f} req/s, {during.errors} errors)",
            unchanged,
        )
    )
    return rows


def sigterm(tmp: Path, clients: int) -> list[Target]:
    metrics_dir = Path(tempfile.mkdtemp(prefix="metrics-", dir=tmp))
    with server(folder=tmp, workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}) as live:
        traffic, exited = asyncio.run(sigterm_under_load(live.url, live.process, clients))
    text = collected(metrics_dir)
    served = metric_sum(text, "mnist_request_duration_seconds_count", route="/predict")
    received = traffic.statuses[200]
    lost = served - received + in_flight(text)  # answered but not received, started but not answered
    clean = set(traffic.statuses) == {200}
    return [
        Target(
            f"SIGTERM under {clients} clients: 0 accepted requests dropped",
            f"{lost:.0f} of {served:.0f} dropped, exit in {exited:.2f} s, statuses {dict(traffic.statuses)}",
            lost == 0 and clean,
        )
    ]


def sigkill(tmp: Path, clients: int) -> list[Target]:
    metrics_dir = Path(tempfile.mkdtemp(prefix="metrics-", dir=tmp))
    with server(folder=tmp, workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}) as live:
        crash = asyncio.run(kill_worker_under_load(live.url, live.process.pid, metrics_dir, clients))
    received = crash.traffic.statuses[200]
    return [
        Target(
            f"worker SIGKILL under {clients} clients: in-flight gauge right within 10 s",
            f"{crash.recovered_s:.2f} s (the dead worker had {crash.victim_in_flight:.0f} in flight)",
            crash.recovered_s <= 10 and crash.victim_in_flight >= 1,
        ),
        Target(
            "... the dead worker's counts kept (server 200s vs received, +-clients)",
            f"{crash.served:.0f} vs {received}",
            abs(crash.served - received) <= clients,
        ),
    ]


def _single_ms(url: str, request: Request, n: int = 20) -> float:
    """Median latency of `n` single JSON requests one after another, on a fresh connection each."""
    times = []
    for _ in range(n):
        started = time.perf_counter()
        httpx.post(url + request.path, content=request.body, headers={"Content-Type": request.content_type})
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def overload(tmp: Path, clients: list[int], seconds: int = 5) -> list[Target]:
    """Raw 256-image batches from 8 clients, then from each of `clients`: the images/s accepted may not
    collapse (refusals come before the body is read), only 200/503/504 come back, and a single request
    right after is as fast as before."""
    batch = np.random.default_rng(0).integers(0, 256, (256, 784), dtype=np.uint8)
    posts = Request("/predict/batch", batch.tobytes(), "application/octet-stream")
    single = Request("/predict", JSON_BODY, "application/json")
    rows = []
    with server(folder=tmp, workers=2) as live:
        before = _single_ms(live.url, single)
        base = run(live.url, posts, concurrency=8, seconds=seconds, statuses=True)
        base_rate = base.ok * 256 / base.seconds
        for c in clients:
            load = run(live.url, posts, concurrency=c, seconds=seconds, statuses=True)
            time.sleep(1)  # the server works off what was admitted
            rate = load.ok * 256 / load.seconds
            statuses = load.statuses or {}
            refused = sum(count for status, count in statuses.items() if status != 200)
            clean = set(statuses) <= {200, 503, 504} and load.errors == refused  # no socket errors
            rows.append(
                Target(
                    f"{c} clients posting 256-image batches: accepted images/s >= 60 % of 8 clients', "
                    "only 200/503/504",
                    f"{rate:,.0f} vs {base_rate:,.0f} images/s ({rate / base_rate:.0%}), statuses {statuses}",
                    rate >= 0.6 * base_rate and clean,
                )
            )
        after = _single_ms(live.url, single)
    rows.append(
        Target(
            "a single request right after the overload is as fast as before (<= 1.5 x + 2 ms)",
            f"median {after:.1f} ms vs {before:.1f} ms before",
            after <= 1.5 * before + 2,
        )
    )
    return rows


class _NullTransport(asyncio.Transport):
    """A connection that takes every write and goes nowhere."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def _ok(scope: dict, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _cpu_per_request(protocol: Any, requests: int) -> float:
    """CPU us per keep-alive request: parse, run the app, answer, re-arm the keep-alive timer."""
    config = uvicorn.Config(_ok, log_level="warning", access_log=False)
    config.load()
    connection = protocol(config=config, server_state=ServerState(), app_state={})
    connection.connection_made(_NullTransport())
    request = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
    request += b"Content-Length: %d\r\n\r\n%s" % (len(JSON_BODY), JSON_BODY)
    for round_ in (range(500), range(requests)):  # warm up, then measure
        started = time.process_time()
        for _ in round_:
            connection.data_received(request)
            await asyncio.sleep(0)  # the app task answers
    return (time.process_time() - started) / requests * 1e6


def protocol_cost(rounds: int = 9, requests: int = 20_000) -> list[Target]:
    limited = partial(LimitedHttpToolsProtocol, settings=Settings())
    plain, limits = [], []
    for _ in range(rounds):
        plain.append(uvloop.run(_cpu_per_request(HttpToolsProtocol, requests)))
        limits.append(uvloop.run(_cpu_per_request(limited, requests)))
    base, ours = statistics.median(plain), statistics.median(limits)
    return [
        Target(
            "HTTP limits add <= 2 us of CPU per request",
            f"+{ours - base:.2f} us ({ours:.2f} vs {base:.2f} us: uvicorn's protocol + a minimal app)",
            ours - base <= 2.0,
        )
    ]


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--header-mib", type=int, nargs="+", default=[64, 128])
    options.add_argument("--connections", type=int, default=1000)
    options.add_argument("--clients", type=int, default=32)
    options.add_argument("--overload-clients", type=int, nargs="+", default=[128, 256])
    args = options.parse_args()
    load = MachineLoad()
    with tempfile.TemporaryDirectory(prefix="bench-reliability-") as tmp:
        targets = huge_headers(Path(tmp), args.header_mib)
        targets += stalled_connections(Path(tmp), args.connections)
        targets += sigterm(Path(tmp), args.clients)
        targets += sigkill(Path(tmp), args.clients)
        targets += overload(Path(tmp), args.overload_clients)
    targets += protocol_cost()
    print(load.report() + "\n")
    sys.exit(0 if print_targets(targets) else 1)


if __name__ == "__main__":
    main()
