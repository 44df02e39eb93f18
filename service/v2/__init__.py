"""The Open Inference Protocol (KServe V2): one transport-neutral core (core.py: a request's validation into
a model batch, the requested outputs, the response tensors, the errors; repository.py: the repository
extension), and the two transports that share it: REST (rest.py, the codec; service/routers/v2.py) and gRPC
(grpc_codec.py, servicer.py, grpc_server.py; inference.proto)."""
