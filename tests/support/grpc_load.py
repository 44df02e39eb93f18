"""Closed-loop gRPC clients for the fault tests: each its own channel (so its own connection, which the
kernel gives one worker), sending single-image ModelInfer calls back to back and counting what came back."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import grpc
import numpy as np

from service.v2 import messages

METHOD = f"/{messages.SERVICE}/ModelInfer"


@dataclass
class GrpcTraffic:
    """Answers by model version, failed calls by status code, and the calls each client sent."""

    versions: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    per_client_errors: list[int] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return sum(self.versions.values())


def infer_request(model: str = "lenet5") -> object:
    pixels = np.random.default_rng(5).integers(0, 256, (1, 784), dtype=np.uint8)
    request = messages.ModelInferRequest(model_name=model, raw_input_contents=[pixels.tobytes()])
    request.inputs.add(name="image", datatype="UINT8", shape=[1, 784])
    request.outputs.add(name="probabilities")
    return request


async def grpc_closed_loop(
    target: str,
    clients: int,
    stop: asyncio.Event,
    give_up: asyncio.Event | None = None,
    metadata: tuple[tuple[str, str], ...] = (),
) -> GrpcTraffic:
    """`clients` channels calling ModelInfer until `stop`; a failed call is counted and the next one sent,
    unless `give_up` is set (the server is going away): then that client ends."""
    traffic = GrpcTraffic()
    request = infer_request()
    response_type = messages.METHODS["ModelInfer"][1]

    async def one() -> None:
        failed = 0
        async with grpc.aio.insecure_channel(target) as channel:
            infer = channel.unary_unary(
                METHOD,
                request_serializer=type(request).SerializeToString,
                response_deserializer=response_type.FromString,
            )
            while not stop.is_set():
                try:
                    response = await infer(request, metadata=metadata, timeout=30)
                except grpc.aio.AioRpcError as exc:
                    traffic.errors[exc.code().name] += 1
                    failed += 1
                    if give_up is not None and give_up.is_set():
                        break
                    await asyncio.sleep(0.05)
                    continue
                traffic.versions[response.model_version] += 1
        traffic.per_client_errors.append(failed)

    await asyncio.gather(*(one() for _ in range(clients)))
    return traffic
