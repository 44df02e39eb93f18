"""CPU per request of the service's own ASGI middleware, in-process (no sockets, no server).

    python -m bench.middleware [--requests 20000] [--repeat 5] [--log-format text|json]

Drives the middleware stack of service/app.py around a do-nothing endpoint with a fake receive/send, the
way uvicorn calls it (a fresh scope with its own state per request, prometheus-client in multiprocess mode
as under mnist-serve), and prints process CPU µs per request: the bare endpoint, BodyLimit alone, and
Observe + BodyLimit; the middleware cost is the difference to the bare endpoint. Best of --repeat runs.
With --log-format json the access log goes through the JSON formatter into /dev/null.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time

from bench.core import parser

# As under mnist-serve: metrics live in shared files (set before prometheus_client is imported).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-middleware-"))

from service import logs
from service.middleware import BodyLimit, Observe

HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"python-httpx/0.28.1"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"connection", b"keep-alive"),
    (b"content-type", b"application/json"),
    (b"content-length", b"3200"),
]


class Route:
    path = "/predict"


ROUTE = Route()


async def endpoint(scope, receive, send) -> None:
    """What a route does at the least: the router's scope entries, the state a prediction route sets,
    one JSON response."""
    scope["route"] = ROUTE
    scope["state"]["model_version"] = "1"
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": b"{}"})


async def receive() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: dict) -> None:
    pass


def observe(app):
    return Observe(app, access_log=logs.access_enabled(Args.log_format))


class Args:
    log_format = "text"


async def cpu_per_request(app, requests: int) -> float:
    base = {"type": "http", "method": "POST", "path": "/predict", "headers": HEADERS, "query_string": b""}
    started = time.process_time()
    for _ in range(requests):
        await app({**base, "state": {}}, receive, send)
    return (time.process_time() - started) / requests * 1e6


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--requests", type=int, default=20_000)
    options.add_argument("--repeat", type=int, default=5)
    options.add_argument("--log-format", choices=["text", "json"], default="text")
    args = options.parse_args()
    Args.log_format = args.log_format
    if args.log_format == "json":
        logs.configure("json", "info", stream=open(os.devnull, "w"))  # noqa: SIM115
    else:
        logging.disable(logging.CRITICAL)
    stacks = {
        "bare endpoint": endpoint,
        "BodyLimit": BodyLimit(endpoint, max_bytes=8 << 20),
        "Observe + BodyLimit": observe(BodyLimit(endpoint, max_bytes=8 << 20)),
    }
    best = {name: float("inf") for name in stacks}
    for _ in range(args.repeat):
        for name, app in stacks.items():
            best[name] = min(best[name], asyncio.run(cpu_per_request(app, args.requests)))
    print(f"| stack ({args.log_format} logs) | CPU µs/request | over the bare endpoint |")
    print("|---|---:|---:|")
    for name, micros in best.items():
        print(f"| {name} | {micros:.2f} | {micros - best['bare endpoint']:.2f} |")


if __name__ == "__main__":
    main()
