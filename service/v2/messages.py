"""The messages of service/v2/inference.proto, from the descriptor set protoc makes of it (inference.binpb,
committed with the command in the .proto), in a descriptor pool of their own.

Not protoc's generated modules: they register `inference.*` in protobuf's default pool, where
tritonclient.grpc registers the same names from its own file, and a process that loads both (a test, a
benchmark) fails at import with "duplicate symbol". The server needs only the message classes: its
method handlers are generic (service/v2/grpc_server.py).
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

DESCRIPTOR_SET = Path(__file__).with_name("inference.binpb")
PACKAGE = "inference"
SERVICE = f"{PACKAGE}.GRPCInferenceService"

_POOL = descriptor_pool.DescriptorPool()
for _file in descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes()).file:
    _POOL.Add(_file)


def _message(name: str) -> type[Message]:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


# Every RPC of the service: its name -> (request class, response class).
METHODS: dict[str, tuple[type[Message], type[Message]]] = {
    method.name: (_message(method.input_type.name), _message(method.output_type.name))
    for method in _POOL.FindServiceByName(SERVICE).methods
}

ModelMetadataResponse = _message("ModelMetadataResponse")
ModelInferRequest = _message("ModelInferRequest")
ModelInferResponse = _message("ModelInferResponse")
InferParameter = _message("InferParameter")
RepositoryIndexResponse = _message("RepositoryIndexResponse")
