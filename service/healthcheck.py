"""`python -m service.healthcheck`: the container's health check (the Dockerfile's HEALTHCHECK, which
Compose uses): the server answers /readyz with 200 and, unless MNIST_GRPC_PORT is 0, grpc.health.v1 says
SERVING on that port. Exit 0 if so, else 1 with the reason on stderr."""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.settings import Settings


def problem(host: str, http_port: int, grpc_port: int, timeout_s: float) -> str | None:
    """What is not ready, or None."""
    try:
        with urllib.request.urlopen(f"http://{host}:{http_port}/readyz", timeout=timeout_s) as response:
            if response.status != 200:
                return f"/readyz answered {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        return f"/readyz: {exc}"
    if not grpc_port:
        return None
    try:
        with grpc.insecure_channel(f"{host}:{grpc_port}") as channel:
            request = health_pb2.HealthCheckRequest()
            status = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout_s).status
    except grpc.RpcError as exc:
        return f"gRPC health on port {grpc_port}: {exc.code().name}"
    if status != health_pb2.HealthCheckResponse.SERVING:
        return f"gRPC health on port {grpc_port}: {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service.healthcheck", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="the HTTP port")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per check")
    args = parser.parse_args(argv)
    found = problem(args.host, args.port, Settings().grpc_port, args.timeout)
    if found:
        sys.exit(f"not ready: {found}")


if __name__ == "__main__":
    main()
