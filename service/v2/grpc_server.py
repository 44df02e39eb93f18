"""A worker's gRPC server: the V2 service (service/v2/servicer.py) and the standard grpc.health.v1 service
on MNIST_GRPC_PORT, on the host HTTP listens on, with the limits of Settings.

It starts only once the worker's model is ready (service/app.py calls `start` where the worker becomes
ready), so neither a connection nor a health check reaches a worker that is still loading: health answers
SERVING from the start, and NOT_SERVING from the moment shutdown begins. Every worker binds the same port
with SO_REUSEPORT and the kernel spreads connections over them; the supervisor holds that port
exclusively first (service/supervisor.py), so a port another program uses stops the server at startup. A
single worker binds it exclusively itself. `stop` drains: calls in flight finish, new ones are refused.
"""

from __future__ import annotations

import logging
import os

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from service import fleet
from service.repository import ModelRepository
from service.settings import Settings
from service.v2.messages import SERVICE
from service.v2.servicer import InferenceServicer

log = logging.getLogger(__name__)
SERVING = health_pb2.HealthCheckResponse.SERVING


def options(settings: Settings, shared: bool) -> list[tuple[str, int]]:
    """grpc.aio's channel arguments for the limits; `shared`: SO_REUSEPORT (gRPC's default is on)."""
    return [
        ("grpc.so_reuseport", int(shared)),
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),
        ("grpc.keepalive_time_ms", round(settings.grpc_keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", round(settings.grpc_keepalive_timeout_s * 1000)),
        ("grpc.max_connection_idle_ms", round(settings.grpc_idle_timeout_s * 1000)),
    ]


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcServer:
    """The running server and its health service."""

    def __init__(
        self, server: grpc.aio.Server, health_service: health.aio.HealthServicer, where: str
    ) -> None:
        self.server = server
        self.health = health_service
        self.address = where

    async def stop(self, grace_s: float) -> None:
        """Health NOT_SERVING, refuse new calls, and let those in flight finish within `grace_s`."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


async def start(models: ModelRepository, settings: Settings, version: str) -> GrpcServer | None:
    """Serve gRPC now (the model is ready); None if MNIST_GRPC_PORT is 0. OSError if the port is taken."""
    if not settings.grpc_port:
        return None
    where = address(os.environ.get(fleet.HOST_ENV, "127.0.0.1"), settings.grpc_port)
    server = grpc.aio.server(options=options(settings, shared=fleet.supervised()))
    server.add_generic_rpc_handlers((InferenceServicer(models, settings, version).handlers(),))
    health_service = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_service, server)
    try:
        bound = server.add_insecure_port(where)
    except RuntimeError as exc:  # grpcio raises this when the address cannot be bound
        raise OSError(f"gRPC cannot listen on {where}: {exc}") from None
    if not bound:
        raise OSError(f"gRPC cannot listen on {where}")
    await server.start()
    for service in ("", SERVICE):
        await health_service.set(service, SERVING)
    log.info("gRPC (KServe V2) on %s", where, extra={"event": "grpc", "address": where})
    return GrpcServer(server, health_service, where)
