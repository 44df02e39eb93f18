"""Image memory and work per request against a real server: one worker, RSS read from /proc.

    python -m bench.image_memory [--side 6300] [--batch 16] [--seconds 6]

1. A valid side x side RGBA PNG (6300: ~170 KB, 159 MB decoded, under the 40 Mpx per-image limit): the
   worker's peak RSS while it is served (VmHWM, reset through /proc/PID/clear_refs first) and its RSS
   10 s later.
2. `--batch` of them in one multipart request, with the default MNIST_MAX_REQUEST_PIXELS: refused with 413
   before anything is decoded.
3. Against a server whose request budget admits the batch, while 2 other clients post 280x280 canvas PNGs: a
   request of 2 such PNGs that is served (the other clients' slowest answer meanwhile: with
   MNIST_IMAGE_THREADS=1 they wait for it), then the batch abandoned by its client 0.2 s after sending it:
   when the decoding stops (the worker counts it in mnist_errors_total{reason="client_closed"}), and the
   other clients' statuses and p99 over the whole run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx
import numpy as np

from bench.core import parser, server, table
from tests.support.image_requests import abandon, canvas, closed_count, post
from tests.support.liveserver import LiveServer
from tests.support.procfs import MB, reset_peak, status
from trainer.synth.exports import large_canvas


@dataclass
class Clients:
    """Other clients posting small canvas PNGs back to back until `stop` is set."""

    url: str
    body: bytes
    stop: threading.Event = field(default_factory=threading.Event)
    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                response = client.post(
                    f"{self.url}/predict", content=self.body, headers={"Content-Type": "image/png"}
                )
                self.latencies.append(time.monotonic() - started)
                self.statuses.append(response.status_code)


def idle_rss(live: LiveServer) -> int:
    """RSS after the image path has run once (imports, first allocations) and settled."""
    for _ in range(3):
        post(live.url, [canvas()]).raise_for_status()
    time.sleep(1.0)
    return status(live.process.pid)["VmRSS"]


def row(measure: str, target: str, measured: str, ok: bool) -> list[str]:
    return [measure, target, measured, "pass" if ok else "**FAIL**"]


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--side", type=int, default=6300)
    options.add_argument("--batch", type=int, default=16)
    options.add_argument("--seconds", type=float, default=6.0, help="how long the other clients post")
    args = options.parse_args()

    big = large_canvas(args.side)
    rows = []
    with server(workers=1) as live:
        pid = live.process.pid
        idle = idle_rss(live)
        reset_peak(pid)
        started = time.monotonic()
        response = post(live.url, [big])
        took = time.monotonic() - started
        peak = status(pid)["VmHWM"]
        time.sleep(10)
        after = status(pid)["VmRSS"]
        name = f"{args.side}x{args.side} RGBA PNG ({len(big) // 1024} KB)"
        rows += [
            row(
                f"{name}: answer",
                "200",
                f"{response.status_code} in {took:.2f} s",
                response.status_code == 200,
            ),
            row(
                f"{name}: worker RSS peak (idle {idle / MB:.0f} MB)",
                "<= 450 MB",
                f"{peak / MB:.0f} MB",
                peak <= 450 * MB,
            ),
            row(
                f"{name}: RSS 10 s later - idle",
                "<= 60 MB",
                f"{(after - idle) / MB:+.0f} MB",
                after - idle <= 60 * MB,
            ),
        ]
        started = time.monotonic()
        response = post(live.url, [big] * args.batch)
        took = time.monotonic() - started
        rows.append(
            row(
                f"{args.batch} of them in one request, default budget",
                "413 before decoding",
                f"{response.status_code} in {took * 1000:.0f} ms",
                response.status_code == 413,
            )
        )

    budget = {"MNIST_MAX_REQUEST_PIXELS": str(args.batch * args.side * args.side)}
    with server(workers=1, env=budget) as live:
        idle_rss(live)
        clients = Clients(live.url, canvas())
        threads = [threading.Thread(target=clients.run) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        first = len(clients.latencies)
        started = time.monotonic()
        response = post(live.url, [big, big], timeout=60)
        took = time.monotonic() - started
        served = np.array(clients.latencies[first:])
        rows += [
            row(
                "2 of them in one request (served)",
                "200",
                f"{response.status_code} in {took:.2f} s",
                response.status_code == 200,
            ),
            row(
                f"meanwhile: other image requests ({len(served)}), slowest",
                "<= 2 s",
                f"{served.max() * 1000:.0f} ms" if served.size else "none answered",
                bool(served.size) and served.max() <= 2.0,
            ),
        ]
        before = closed_count(live.url)
        reset_peak(live.process.pid)
        closed_at = abandon(live.url, [big] * args.batch, 0.2)
        stopped_at = None
        while time.monotonic() - closed_at < 30:
            if closed_count(live.url) > before:
                stopped_at = time.monotonic()
                break
            time.sleep(0.02)
        time.sleep(max(0.0, args.seconds - (time.monotonic() - closed_at)))
        clients.stop.set()
        for thread in threads:
            thread.join(timeout=60)
        peak = status(live.process.pid)["VmHWM"]
        latencies = np.array(clients.latencies)
        p99 = float(np.percentile(latencies, 99)) if latencies.size else float("nan")
        timeouts = clients.statuses.count(504)
        others = {code: clients.statuses.count(code) for code in sorted(set(clients.statuses))}
        stop = f"{stopped_at - closed_at:.2f} s" if stopped_at else "not within 30 s"
        rows += [
            row(
                f"{args.batch} in one request (budget raised), client gone after 0.2 s: work stops",
                "<= 1 s",
                stop,
                stopped_at is not None and stopped_at - closed_at <= 1.0,
            ),
            row("meanwhile: worker RSS peak", "<= 450 MB", f"{peak / MB:.0f} MB", peak <= 450 * MB),
            row(
                f"meanwhile: other image requests ({len(latencies)}), 504s",
                "0",
                f"{timeouts} (statuses {others})",
                timeouts == 0,
            ),
            row("meanwhile: other image requests, p99", "<= 2 s", f"{p99 * 1000:.0f} ms", p99 <= 2.0),
        ]
    table(["measure", "target", "measured", ""], rows)


if __name__ == "__main__":
    main()
