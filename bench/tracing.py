"""What tracing costs: server CPU per single JSON /predict with tracing off, against a baseline revision
(before tracing existed), and with tracing on and every request sampled, in one run.

    python -m bench.tracing [--requests 3000] [--concurrency 1] [--baseline main]
    python -m bench.tracing --short            # a check that it runs (200 requests), no figures

One worker (CPU, the shipped model) of: the service as it was at `--baseline` (run from a checkout of that
revision's service/), this revision with tracing off (the default), and this revision with
OTEL_TRACES_SAMPLER=always_on exporting over OTLP/HTTP to a receiver in this process that reads and
discards the spans (its CPU is not the server's). Each gets `--requests` posts of the same 28 x 28 JSON
digit from `--concurrency` closed-loop keep-alive clients; the figure is the server's CPU (user + system of
its process tree, from /proc) per request. Targets: off within 2 % of the baseline; on at most +25 %.
Exit code 1 if one is missed.
"""

from __future__ import annotations

import http.server
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson

from bench.core import ROOT, MachineLoad, Target, checkout, parser, print_targets, server, table, with_cpu
from bench.protocols import THREADS, closed_loop
from service.loading import references

SHORT_REQUESTS = 200


class _Sink(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that takes every export and keeps nothing."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def sink() -> Iterator[str]:
    """The sink's endpoint, for OTEL_EXPORTER_OTLP_ENDPOINT."""
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{receiver.server_address[1]}"
    finally:
        receiver.shutdown()
        receiver.server_close()


def cpu_per_request(env: dict[str, str], calls: int, clients: int, cwd: Path = ROOT) -> float:
    """Server CPU µs per JSON /predict, after a warm-up outside the measurement."""
    body = orjson.dumps({"pixels": references({})[0][0].tolist()})

    with server(workers=1, env=env, cwd=cwd) as live:

        def client(n: int) -> None:
            with httpx.Client(base_url=live.url, timeout=30) as http:
                for _ in range(n):
                    http.post(
                        "/predict", content=body, headers={"Content-Type": "application/json"}
                    ).raise_for_status()

        closed_loop(min(100, calls), clients, client)
        _, cpu = with_cpu(live.process.pid, lambda: closed_loop(calls, clients, client))
    return cpu * 1e6 / calls


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--requests", type=int, default=3000, help="requests per server")
    options.add_argument("--concurrency", type=int, default=1, help="closed-loop clients")
    options.add_argument("--baseline", default="main", help="the revision before tracing (default: main)")
    options.add_argument(
        "--short", action="store_true", help=f"{SHORT_REQUESTS} requests each: a check that it runs"
    )
    args = options.parse_args()
    calls = SHORT_REQUESTS if args.short else args.requests
    load = MachineLoad()
    # The same model and threads for every server; OTEL_* of the caller's environment must not switch
    # tracing on where it is meant to be off.
    env = {
        "MNIST_PROVIDERS": "cpu",
        "MNIST_INTRA_OP_THREADS": str(THREADS),
        "MNIST_MODEL_PATH": str(ROOT / "models" / "lenet5.onnx"),
        "MNIST_TRACING": "false",
    }
    with checkout(args.baseline) as folder:
        before = cpu_per_request(env, calls, args.concurrency, cwd=folder)
    off = cpu_per_request(env, calls, args.concurrency)
    with sink() as endpoint:
        traced = {
            **env,
            "MNIST_TRACING": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_TRACES_SAMPLER": "always_on",
        }
        on = cpu_per_request(traced, calls, args.concurrency)
    print(f"\nSingle JSON /predict, concurrency {args.concurrency}, {calls} requests each; {load.report()}\n")
    rows = [
        (f"baseline ({args.baseline})", f"{before:.0f}", ""),
        ("tracing off", f"{off:.0f}", f"{100 * (off / before - 1):+.1f} %"),
        ("tracing on, every request sampled", f"{on:.0f}", f"{100 * (on / before - 1):+.1f} %"),
    ]
    table(["server", "CPU µs/request", "vs baseline"], rows, "lrr")
    print()
    targets = [
        Target("tracing off: within 2 % of the baseline", rows[1][2], off <= 1.02 * before),
        Target("tracing on, all sampled: at most +25 %", rows[2][2], on <= 1.25 * before),
    ]
    if not print_targets(targets) and not args.short:
        sys.exit(1)


if __name__ == "__main__":
    main()
