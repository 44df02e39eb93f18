"""KServe V2 over gRPC on real server processes: tritonclient.grpc as users run it, typed contents through
the service's own messages, the errors with their status codes and REST's messages, the keys, limits,
deadlines, health, a batch shared with REST, startup on a taken port, and a drain on SIGTERM."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from service.v2 import messages
from tests.support.liveserver import READY_MARK, LiveServer, metric_sum, start_server, stop
from trainer.data import load_test

MODEL = "lenet5"
BATCH = 32
OUTPUTS = ("logits", "probabilities", "digit_score")
API_KEY, ADMIN_KEY = "s3cret", "adm1n"


def auth() -> dict[str, str]:
    """The API key header, a fresh dict per call: tritonclient.http adds its own headers to the one given."""
    return {"authorization": f"Bearer {API_KEY}"}


MAX_MESSAGE = 128 * 1024  # 32 FP32 images (100 KB) fit, 64 (200 KB) do not
INFER = f"/{messages.SERVICE}/ModelInfer"
GRPC_STARTED = "gRPC (KServe V2) on"  # what a worker logs once its gRPC server listens


@pytest.fixture(scope="module")
def images(mnist_dir: Path) -> np.ndarray:
    return load_test(mnist_dir).images[:BATCH]


@pytest.fixture(scope="module")
def server(server_factory: Callable) -> Iterator[LiveServer]:
    """Two workers with an API key, an admin key and a small gRPC message limit."""
    env = {
        "MNIST_API_KEY": API_KEY,
        "MNIST_ADMIN_KEY": ADMIN_KEY,
        "MNIST_GRPC_MAX_MESSAGE_BYTES": str(MAX_MESSAGE),
        "MNIST_MAX_BATCH_ITEMS": "48",
    }
    with server_factory(workers=2, env=env) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[triton_grpc.InferenceServerClient]:
    client = triton_grpc.InferenceServerClient(server.grpc)
    yield client
    client.close()


@pytest.fixture(scope="module")
def rest(server: LiveServer) -> Iterator[triton_http.InferenceServerClient]:
    client = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


def model_input(images: np.ndarray, datatype: str) -> np.ndarray:
    """FP32 [N, 1, 28, 28] in [0, 1] (the model's own input) or UINT8 [N, 784] raw pixels."""
    if datatype == "FP32":
        return (images.astype(np.float32) / 255)[:, None]
    return images.reshape(len(images), -1)


def grpc_input(array: np.ndarray, datatype: str) -> triton_grpc.InferInput:
    tensor = triton_grpc.InferInput("image", list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def rpc(target: str, method: str, request: object, metadata: tuple = (), timeout: float = 10) -> object:
    """One call with the service's own messages (what tritonclient's cannot express: typed contents,
    the metadata's parameters)."""
    request_type, response_type = messages.METHODS[method]
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            f"/{messages.SERVICE}/{method}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return call(request, metadata=metadata, timeout=timeout)


def refused(call: Callable[[], object]) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_health_and_metadata_agree_with_rest(
    client: triton_grpc.InferenceServerClient, server: LiveServer
) -> None:
    rest_metadata = httpx.get(f"{server.url}/v2/models/{MODEL}").json()
    version = rest_metadata["versions"][0]
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, version)
    assert not client.is_model_ready("mnist") and not client.is_model_ready(MODEL, "no-such-version")
    server_metadata = client.get_server_metadata(as_json=True)
    assert server_metadata["name"] == "mnist-serving" and "model_repository" in server_metadata["extensions"]
    for asked in ("", version):
        metadata = client.get_model_metadata(MODEL, asked, as_json=True)
        assert metadata["name"] == MODEL and metadata["versions"] == [version]
        assert metadata["platform"] == rest_metadata["platform"] == "onnxruntime_onnx"
        for side in ("inputs", "outputs"):
            tensors = [
                {**tensor, "shape": [int(dim) for dim in tensor["shape"]]} for tensor in metadata[side]
            ]
            assert tensors == rest_metadata[side]
    request = messages.METHODS["ModelMetadata"][0](name=MODEL)
    threshold = rpc(server.grpc, "ModelMetadata", request).parameters["digit_threshold"].double_param
    assert threshold == rest_metadata["parameters"]["digit_threshold"]


@pytest.mark.parametrize("datatype", ["FP32", "UINT8"])
def test_raw_infer_is_bit_identical_to_rest_for_the_same_tensors(
    client: triton_grpc.InferenceServerClient,
    rest: triton_http.InferenceServerClient,
    images: np.ndarray,
    datatype: str,
) -> None:
    """Every output, digit_score included, over gRPC (raw) and REST V2 (binary): the same bytes."""
    array = model_input(images, datatype)
    wanted = [triton_grpc.InferRequestedOutput(name) for name in OUTPUTS]
    result = client.infer(
        MODEL, [grpc_input(array, datatype)], outputs=wanted, request_id="g1", headers=auth()
    )
    response = result.get_response()
    assert response.model_name == MODEL and response.id == "g1" and len(response.raw_output_contents) == 3
    tensor = triton_http.InferInput("image", list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    wanted_rest = [triton_http.InferRequestedOutput(name, binary_data=True) for name in OUTPUTS]
    expected = rest.infer(MODEL, [tensor], outputs=wanted_rest, headers=auth())
    assert response.model_version == expected.get_response()["model_version"]
    for name in OUTPUTS:
        np.testing.assert_array_equal(result.as_numpy(name), expected.as_numpy(name))
    assert result.as_numpy("digit_score").shape == (BATCH,)


def test_requested_output_only_and_digit_score_alone(
    client: triton_grpc.InferenceServerClient, images: np.ndarray
) -> None:
    wanted = [triton_grpc.InferRequestedOutput("digit_score")]
    result = client.infer(
        MODEL, [grpc_input(model_input(images, "UINT8"), "UINT8")], outputs=wanted, headers=auth()
    )
    assert [output.name for output in result.get_response().outputs] == ["digit_score"]
    assert result.as_numpy("probabilities") is None and result.as_numpy("digit_score").dtype == np.float32


@pytest.mark.parametrize("datatype", ["FP32", "UINT8"])
def test_typed_contents_in_typed_contents_out(
    client: triton_grpc.InferenceServerClient, server: LiveServer, images: np.ndarray, datatype: str
) -> None:
    """Values in `contents` (fp32_contents / uint_contents) get their answer in `contents` too, equal to
    the raw answer for the same tensor."""
    array = model_input(images[:4], datatype)
    request = messages.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="image", datatype=datatype, shape=array.shape)
    field = "fp32_contents" if datatype == "FP32" else "uint_contents"
    getattr(tensor.contents, field).extend(array.ravel().tolist())
    request.outputs.add(name="probabilities")
    response = rpc(server.grpc, "ModelInfer", request, tuple(auth().items()))
    assert not response.raw_output_contents
    (output,) = response.outputs
    assert output.name == "probabilities" and list(output.shape) == [4, 10]
    typed = np.array(output.contents.fp32_contents, np.float32).reshape(4, 10)
    raw = client.infer(MODEL, [grpc_input(array, datatype)], headers=auth()).as_numpy("probabilities")
    np.testing.assert_array_equal(typed, raw)


def test_errors_have_their_status_codes_and_the_rest_messages(
    client: triton_grpc.InferenceServerClient,
    rest: triton_http.InferenceServerClient,
    images: np.ndarray,
) -> None:
    pixels = model_input(images, "UINT8")
    cases = {  # what is wrong -> (gRPC status, REST status, the call's arguments)
        "unknown model": ("NOT_FOUND", "404", {"model_name": "resnet50"}),
        "unknown version": ("NOT_FOUND", "404", {"model_version": "999"}),
        "bad shape": ("INVALID_ARGUMENT", "400", {"shape": [BATCH, 28, 28]}),
        "unknown output": ("INVALID_ARGUMENT", "400", {"outputs": ["softmax"]}),
        "too many images": ("RESOURCE_EXHAUSTED", "413", {"count": 64}),
        "no API key": ("UNAUTHENTICATED", "401", {"headers": {}}),
        "wrong API key": ("UNAUTHENTICATED", "401", {"headers": {"authorization": "Bearer nope"}}),
    }
    for case, (code, status, arguments) in cases.items():
        count = arguments.get("count", BATCH)
        array = np.resize(pixels, (count, 784)).reshape(arguments.get("shape", [count, 784]))
        calls = []
        for module, api in ((triton_grpc, client), (triton_http, rest)):
            tensor = module.InferInput("image", list(array.shape), "UINT8")
            tensor.set_data_from_numpy(array)
            outputs = [module.InferRequestedOutput(name) for name in arguments.get("outputs", [])]
            calls.append(
                lambda api=api, tensor=tensor, outputs=outputs, arguments=arguments: api.infer(
                    arguments.get("model_name", MODEL),
                    [tensor],
                    model_version=arguments.get("model_version", ""),
                    outputs=outputs or None,
                    headers=arguments.get("headers", auth()),
                )
            )
        over_grpc, over_rest = refused(calls[0]), refused(calls[1])
        assert over_grpc.status() == f"StatusCode.{code}", case
        assert over_rest.status() == status, case
        assert over_grpc.message() == over_rest.message(), case


def test_the_admin_key_guards_the_repository(client: triton_grpc.InferenceServerClient) -> None:
    assert refused(client.get_model_repository_index).status() == "StatusCode.UNAUTHENTICATED"
    assert refused(lambda: client.load_model(MODEL)).status() == "StatusCode.UNAUTHENTICATED"
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    index = client.get_model_repository_index(headers=admin, as_json=True)["models"]
    assert [(model["name"], model["state"]) for model in index] == [(MODEL, "READY")]
    client.load_model(MODEL, headers=admin)  # the same file: both workers answer "unchanged"
    assert client.is_model_ready(MODEL)
    unknown = refused(lambda: client.load_model("resnet50", headers=admin))
    assert unknown.status() == "StatusCode.NOT_FOUND" and "unknown model 'resnet50'" in unknown.message()


def test_an_over_large_message_is_resource_exhausted(
    client: triton_grpc.InferenceServerClient, images: np.ndarray
) -> None:
    array = np.resize(model_input(images, "FP32"), (64, 1, 28, 28))  # 200 KB > MNIST_GRPC_MAX_MESSAGE_BYTES
    error = refused(lambda: client.infer(MODEL, [grpc_input(array, "FP32")], headers=auth()))
    assert error.status() == "StatusCode.RESOURCE_EXHAUSTED", error.message()
    assert client.is_server_ready()


def test_calls_are_measured_with_their_protocol(
    client: triton_grpc.InferenceServerClient, server: LiveServer
) -> None:
    refused(lambda: client.get_model_metadata("resnet50"))
    client.get_model_metadata(MODEL)
    text = httpx.get(f"{server.url}/metrics").text
    route = f"/{messages.SERVICE}/ModelMetadata"
    assert metric_sum(
        text, "mnist_request_duration_seconds_count", protocol="grpc", route=route, status="200"
    )
    assert metric_sum(
        text, "mnist_request_duration_seconds_count", protocol="grpc", route=route, status="404"
    )
    assert metric_sum(text, "mnist_errors_total", protocol="grpc", reason="unknown_model", status="404")


HOLDING = {  # one worker whose batches wait up to 1 s to fill (128 images never arrive)
    "MNIST_MAX_BATCH_SIZE": "128",
    "MNIST_MAX_BATCH_WAIT_MS": "1000",
}


@pytest.fixture(scope="module")
def holding(server_factory: Callable) -> Iterator[LiveServer]:
    with server_factory(workers=1, env=HOLDING) as live:
        yield live


def test_an_expired_deadline_is_deadline_exceeded_and_counted(
    holding: LiveServer, images: np.ndarray
) -> None:
    client = triton_grpc.InferenceServerClient(holding.grpc)
    try:
        started = time.monotonic()
        error = refused(
            lambda: client.infer(
                MODEL, [grpc_input(model_input(images[:1], "UINT8"), "UINT8")], client_timeout=0.2
            )
        )
        assert error.status() == "StatusCode.DEADLINE_EXCEEDED" and time.monotonic() - started < 0.9
        deadline = time.monotonic() + 10
        while not (text := httpx.get(f"{holding.url}/metrics").text) or not metric_sum(
            text, "mnist_errors_total", protocol="grpc", reason="timeout", status="504"
        ):
            assert time.monotonic() < deadline, "the expired call was not counted"
            time.sleep(0.1)
        assert client.is_model_ready(MODEL)
    finally:
        client.close()


def test_a_grpc_and_a_rest_request_share_a_batch(holding: LiveServer, images: np.ndarray) -> None:
    """While one waits for its batch to fill, the other joins it: one run of two images."""
    pixels = model_input(images[:1], "UINT8")
    before = httpx.get(f"{holding.url}/metrics").text
    client = triton_grpc.InferenceServerClient(holding.grpc)
    try:
        over_grpc = threading.Thread(
            target=lambda: client.infer(MODEL, [grpc_input(pixels, "UINT8")], client_timeout=10)
        )
        over_grpc.start()
        body = {
            "inputs": [
                {"name": "image", "shape": [1, 784], "datatype": "UINT8", "data": pixels.ravel().tolist()}
            ]
        }
        assert httpx.post(f"{holding.url}/v2/models/{MODEL}/infer", json=body, timeout=10).status_code == 200
        over_grpc.join(10)
    finally:
        client.close()
    after = httpx.get(f"{holding.url}/metrics").text
    runs = metric_sum(after, "mnist_batch_size_count") - metric_sum(before, "mnist_batch_size_count")
    sizes = metric_sum(after, "mnist_batch_size_sum") - metric_sum(before, "mnist_batch_size_sum")
    assert (runs, sizes) == (1, 2)


def health_status(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=2).status


def test_health_follows_readiness(tmp_path: Path) -> None:
    """No gRPC connection, so no health answer, while a worker warms up (held for 3 s here); SERVING for the
    server and the V2 service once it is ready; NOT_FOUND for another service."""
    server = start_server(tmp_path / "server.log", workers=1, env={"MNIST_WARMUP_MIN_S": "3"})
    try:
        deadline = time.monotonic() + 90
        while "loaded lenet5" not in server.log.read_text():
            assert server.process.poll() is None and time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.05)
        with pytest.raises(grpc.RpcError) as caught:
            health_status(server.grpc)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert GRPC_STARTED not in server.log.read_text(), "warm-up ended before the check: nothing shown"
        while READY_MARK not in server.log.read_text():
            assert server.process.poll() is None and time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.1)
        serving = health_pb2.HealthCheckResponse.SERVING
        assert health_status(server.grpc) == health_status(server.grpc, messages.SERVICE) == serving
        with pytest.raises(grpc.RpcError) as caught:
            health_status(server.grpc, "no.such.Service")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        stop(server.process)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_grpc_port_another_program_uses_stops_the_server(tmp_path: Path, workers: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = start_server(tmp_path / "server.log", workers=workers, env={"MNIST_GRPC_PORT": str(port)})
        try:
            code = server.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            stop(server.process)
            raise
    log = server.log.read_text()
    assert code != 0 and f"127.0.0.1:{port}" in log and "gRPC" in log, log


def test_sigterm_lets_a_call_in_flight_finish(tmp_path: Path, images: np.ndarray) -> None:
    """A call waiting in the queue (up to 1 s, for its batch to fill) when SIGTERM comes is answered."""
    server = start_server(tmp_path / "server.log", workers=1, env=HOLDING)
    try:
        deadline = time.monotonic() + 90
        while READY_MARK not in server.log.read_text():
            assert server.process.poll() is None and time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.1)

        async def call_then_terminate() -> object:
            async with grpc.aio.insecure_channel(server.grpc) as channel:
                request_type, response_type = messages.METHODS["ModelInfer"]
                infer = channel.unary_unary(
                    INFER,
                    request_serializer=request_type.SerializeToString,
                    response_deserializer=response_type.FromString,
                )
                request = request_type(model_name=MODEL, raw_input_contents=[images[:1].tobytes()])
                request.inputs.add(name="image", datatype="UINT8", shape=[1, 784])
                pending = asyncio.ensure_future(infer(request, timeout=20))
                async with httpx.AsyncClient(base_url=server.url) as http:
                    limit = time.monotonic() + 10
                    while not metric_sum((await http.get("/metrics")).text, "mnist_queue_depth"):
                        assert time.monotonic() < limit and not pending.done(), "the call never queued"
                        await asyncio.sleep(0.01)
                server.process.terminate()
                return await pending

        response = asyncio.run(call_then_terminate())
        assert [output.name for output in response.outputs] == list(OUTPUTS)
        assert server.process.wait(timeout=30) == 0
    finally:
        stop(server.process)
