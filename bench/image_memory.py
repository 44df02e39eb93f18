"""Image memory and work per request (issue 14) against a real server: one worker, RSS read from /proc.

    python bench/image_memory.py [--side 6300] [--batch 16] [--seconds 6]

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

import argparse
import re
import socket
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.liveserver import LiveServer, run_server  # noqa: E402
from trainer.synth.exports import large_canvas  # noqa: E402
from trainer.synth.paper import encode  # noqa: E402

MB = 1024 * 1024
CLOSED = re.compile(r'^mnist_errors_total\{[^}]*reason="client_closed"[^}]*\} (\S+)$', re.MULTILINE)


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def reset_peak(pid: int) -> None:
    """Start VmHWM afresh from the current RSS (Linux: `echo 5 > /proc/PID/clear_refs`)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def canvas() -> bytes:
    """A 280x280 transparent canvas with a drawn 7: what the other clients post."""
    image = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ImageDraw.Draw(image).line(
        [(70, 60), (210, 60), (120, 230)], fill=(0, 0, 0, 255), width=18, joint="curve"
    )
    return encode(image, "PNG")


def multipart(files: list[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{i}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
        for i, data in enumerate(files)
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url: str, files: list[bytes], timeout: float = 30.0) -> httpx.Response:
    body, content_type = multipart(files)
    return httpx.post(
        f"{url}/predict/batch", content=body, headers={"Content-Type": content_type}, timeout=timeout
    )


def closed_count(url: str) -> float:
    match = CLOSED.search(httpx.get(f"{url}/metrics", timeout=5).text)
    return float(match.group(1)) if match else 0.0


def abandon(url: str, files: list[bytes], after_s: float) -> float:
    """Send the batch over a raw socket, wait `after_s`, close without reading; the time of the close."""
    body, content_type = multipart(files)
    parts = urlsplit(url)
    head = (
        f"POST /predict/batch HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head + body)
        time.sleep(after_s)
    return time.monotonic()


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


def idle_rss(server: LiveServer) -> int:
    """RSS after the image path has run once (imports, first allocations) and settled."""
    for _ in range(3):
        post(server.url, [canvas()]).raise_for_status()
    time.sleep(1.0)
    return status(server.process.pid)["VmRSS"]


def row(measure: str, target: str, measured: str, ok: bool | None) -> str:
    verdict = "" if ok is None else ("pass" if ok else "**FAIL**")
    return f"| {measure} | {target} | {measured} | {verdict} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--side", type=int, default=6300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=6.0, help="how long the other clients post")
    args = parser.parse_args()

    big = large_canvas(args.side)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, run_server(Path(tmp), workers=1) as server:
        pid = server.process.pid
        idle = idle_rss(server)
        reset_peak(pid)
        started = time.monotonic()
        response = post(server.url, [big])
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
        response = post(server.url, [big] * args.batch)
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
    with tempfile.TemporaryDirectory() as tmp, run_server(Path(tmp), workers=1, env=budget) as server:
        idle_rss(server)
        clients = Clients(server.url, canvas())
        threads = [threading.Thread(target=clients.run) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        first = len(clients.latencies)
        started = time.monotonic()
        response = post(server.url, [big, big], timeout=60)
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
        before = closed_count(server.url)
        reset_peak(server.process.pid)
        closed_at = abandon(server.url, [big] * args.batch, 0.2)
        stopped_at = None
        while time.monotonic() - closed_at < 30:
            if closed_count(server.url) > before:
                stopped_at = time.monotonic()
                break
            time.sleep(0.02)
        time.sleep(max(0.0, args.seconds - (time.monotonic() - closed_at)))
        clients.stop.set()
        for thread in threads:
            thread.join(timeout=60)
        peak = status(server.process.pid)["VmHWM"]
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
    print("| measure | target | measured | |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
