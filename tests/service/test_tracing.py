"""OpenTelemetry on a real server process, exporting to a real OTLP/HTTP receiver in the test (an HTTP
endpoint on 127.0.0.1 that decodes the exported protobuf): the spans of a REST and a gRPC request that
share a batch, their parent/child links, the callers' traces continued, the batch span linked to both, the
routes that are not traced, and the JSON logs' trace IDs. And when tracing is on at all."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from service import tracing
from service.settings import Settings
from service.v2 import messages
from tests.support.liveserver import LiveServer

MODEL = "lenet5"
SERVER, INTERNAL = 2, 1  # OTLP span kinds
CALLERS = {  # a caller's W3C trace context per protocol: (trace id, parent span id)
    "http": ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"),
    "grpc": ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
}


def traceparent(protocol: str) -> str:
    trace_id, span_id = CALLERS[protocol]
    return f"00-{trace_id}-{span_id}-01"


class Receiver(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP trace endpoint: every span it is sent, decoded."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.spans: list = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ReceiverHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        exported = ExportTraceServiceRequest.FromString(body)
        spans = [
            span
            for resource in exported.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        with self.server.lock:
            self.server.spans.extend(spans)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def traced(server_factory: Callable, receiver: Receiver) -> Iterator[LiveServer]:
    """One worker, every request sampled, spans exported every 100 ms, JSON logs; batches wait up to 0.5 s
    to fill, so requests sent together share one."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "MNIST_LOG_FORMAT": "json",
        "MNIST_MAX_BATCH_SIZE": "128",
        "MNIST_MAX_BATCH_WAIT_MS": "500",
    }
    with server_factory(workers=1, env=env) as live:
        yield live


def hex_id(raw: bytes) -> str:
    return raw.hex()


def attributes(span: object) -> dict:
    values = {}
    for item in span.attributes:
        value = item.value
        values[item.key] = getattr(value, value.WhichOneof("value"))
    return values


def grpc_infer(target: str, pixels: np.ndarray) -> None:
    request_type, response_type = messages.METHODS["ModelInfer"]
    request = request_type(model_name=MODEL, raw_input_contents=[pixels.tobytes()])
    request.inputs.add(name="image", datatype="UINT8", shape=list(pixels.shape))
    with grpc.insecure_channel(target) as channel:
        infer = channel.unary_unary(
            f"/{messages.SERVICE}/ModelInfer",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        infer(request, metadata=(("traceparent", traceparent("grpc")),), timeout=10)


def test_spans_follow_a_request_through_the_batcher(traced: LiveServer, receiver: Receiver) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (1, 784), dtype=np.uint8)
    body = {
        "inputs": [{"name": "image", "shape": [1, 784], "datatype": "UINT8", "data": pixels.ravel().tolist()}]
    }
    over_grpc = threading.Thread(target=grpc_infer, args=(traced.grpc, pixels))
    over_grpc.start()
    response = httpx.post(
        f"{traced.url}/v2/models/{MODEL}/infer",
        json=body,
        headers={"traceparent": traceparent("http"), "x-request-id": "traced-1"},
        timeout=10,
    )
    over_grpc.join(10)
    assert response.status_code == 200, response.text
    for path in ("/healthz", "/readyz", "/metrics"):  # not traced
        httpx.get(traced.url + path, headers={"traceparent": traceparent("http")}, timeout=10)
    with grpc.insecure_channel(traced.grpc) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)

    deadline = time.monotonic() + 20
    while True:
        with receiver.lock:
            spans = list(receiver.spans)
        names = {span.name for span in spans}
        if {"batch", "POST /v2/models/{name}/infer", "inference.GRPCInferenceService/ModelInfer"} <= names:
            break
        assert time.monotonic() < deadline, f"spans received: {sorted(names)}"
        time.sleep(0.1)
    time.sleep(0.5)  # the batch's per-request spans are exported with it or just after
    with receiver.lock:
        spans = list(receiver.spans)

    servers = {}
    for protocol, name in (
        ("http", "POST /v2/models/{name}/infer"),
        ("grpc", "inference.GRPCInferenceService/ModelInfer"),
    ):
        (server,) = [span for span in spans if span.name == name]
        trace_id, parent = CALLERS[protocol]
        assert server.kind == SERVER and hex_id(server.trace_id) == trace_id
        assert hex_id(server.parent_span_id) == parent, "the caller's traceparent is continued"
        children = {span.name: span for span in spans if span.parent_span_id == server.span_id}
        assert {"parse", "queue wait", "batch run"} <= set(children), sorted(children)
        assert all(child.trace_id == server.trace_id for child in children.values())
        assert children["queue wait"].end_time_unix_nano <= children["batch run"].start_time_unix_nano
        servers[protocol] = (server, children)
    http_attributes = attributes(servers["http"][0])
    assert http_attributes["http.route"] == "/v2/models/{name}/infer"
    assert (
        http_attributes["http.response.status_code"] == 200
        and http_attributes["mnist.request_id"] == "traced-1"
    )
    assert attributes(servers["grpc"][0])["rpc.grpc.status_code"] == 0

    (batch,) = [span for span in spans if span.name == "batch"]
    assert batch.kind == INTERNAL and not batch.parent_span_id, "a batch is the root of its own trace"
    linked = {(link.trace_id, link.span_id) for link in batch.links}
    assert linked == {(server.trace_id, server.span_id) for server, _ in servers.values()}
    batch_attributes = attributes(batch)
    assert batch_attributes["mnist.batch.size"] == 2 and batch_attributes["mnist.batch.requests"] == 2
    metadata = httpx.get(f"{traced.url}/v2/models/{MODEL}").json()
    assert batch_attributes["mnist.model.version"] == metadata["versions"][0]
    for _, children in servers.values():
        (link,) = children["batch run"].links
        assert link.span_id == batch.span_id

    untraced = [span for span in spans if "health" in span.name.lower() or span.name.startswith("GET")]
    assert not untraced, [span.name for span in untraced]

    records = [json.loads(line) for line in traced.log.read_text().splitlines() if line.startswith("{")]
    access = {record["route"]: record for record in records if record.get("event") == "request"}
    for protocol, route in (("http", "/v2/models/{name}/infer"), ("grpc", f"/{messages.SERVICE}/ModelInfer")):
        server, _ = servers[protocol]
        record = access[route]
        assert record["trace_id"] == hex_id(server.trace_id) and record["span_id"] == hex_id(server.span_id)
    assert "trace_id" not in access["/healthz"]


def test_a_predict_request_has_a_decode_span(traced: LiveServer, receiver: Receiver) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (28, 28)).tolist()
    response = httpx.post(f"{traced.url}/predict", json={"pixels": pixels}, timeout=10)
    assert response.status_code == 200
    deadline = time.monotonic() + 20
    while True:
        with receiver.lock:
            spans = list(receiver.spans)
        (server,) = [span for span in spans if span.name == "POST /predict"] or [None]
        children = {
            span.name for span in spans if server is not None and span.parent_span_id == server.span_id
        }
        if {"decode", "queue wait", "batch run"} <= children:
            break
        assert time.monotonic() < deadline, sorted(children)
        time.sleep(0.1)


def test_tracing_is_off_unless_asked_for() -> None:
    assert not tracing.wanted(Settings(), {})
    assert tracing.wanted(Settings(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.wanted(Settings(), {"OTEL_TRACES_SAMPLER": "always_on"})
    assert tracing.wanted(Settings(tracing=True), {})
    assert not tracing.wanted(
        Settings(tracing=False), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    )
    assert not tracing.wanted(Settings(tracing=True), {"OTEL_SDK_DISABLED": "true"})
    with tracing.span("anything") as nothing:  # off: no span, no SDK
        assert nothing is None and tracing.current() is None and tracing.ids() == {}
