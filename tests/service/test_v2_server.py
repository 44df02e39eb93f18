"""KServe V2 on a real server process: tritonclient[http] as users run it, and curl-style requests."""

from __future__ import annotations

import asyncio
import gzip
import math
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.app import create_app
from service.settings import Settings
from service.v2.rest import HEADER_LENGTH
from tests.support.liveserver import LiveServer
from tests.support.queueing import Held, answer_while_held
from trainer.data import load_test

MODEL = "lenet5"
BATCH = 64
OUTPUTS = ("logits", "probabilities", "digit_score")
SHAPES = {"logits": [10], "probabilities": [10], "digit_score": []}  # after the batch dimension
INFER = f"/v2/models/{MODEL}/infer"


@pytest.fixture(scope="module")
def images(mnist_dir: Path) -> np.ndarray:
    return load_test(mnist_dir).images[:BATCH]


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(live_server.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def described(live_server: LiveServer) -> dict:
    """What the friendly API says about the model: the reference for V2 metadata."""
    return httpx.get(f"{live_server.url}/v1/models/{MODEL}").json()


@pytest.fixture(scope="module")
def expected(live_server: LiveServer, images: np.ndarray) -> np.ndarray:
    """/predict/batch's probabilities for the same images: V2 must agree with them."""
    response = httpx.post(
        f"{live_server.url}/predict/batch",
        content=images.tobytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    return np.array([p["probabilities"] for p in response.json()["predictions"]], np.float32)


def image_input(images: np.ndarray, datatype: str, binary: bool) -> triton.InferInput:
    """FP32 [N, 1, 28, 28] in [0, 1] (the model's own input) or UINT8 [N, 784] raw pixels."""
    if datatype == "FP32":
        array = (images.astype(np.float32) / 255)[:, None]
    else:
        array = images.reshape(len(images), -1)
    tensor = triton.InferInput("image", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def test_health_and_metadata(client: triton.InferenceServerClient, described: dict) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, described["version"])
    assert not client.is_model_ready("mnist") and not client.is_model_ready(MODEL, "no-such-version")
    server = client.get_server_metadata()
    assert server["name"] and server["version"] and "binary_tensor_data" in server["extensions"]
    for version in ("", described["version"]):
        metadata = client.get_model_metadata(MODEL, version)
        assert metadata == {
            "name": MODEL,
            "versions": [described["version"]],
            "platform": "onnxruntime_onnx",
            "parameters": {"digit_threshold": described["digit_threshold"]},
            "inputs": described["inputs"],
            "outputs": described["outputs"],
        }
    assert metadata["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert {output["name"]: output["shape"] for output in metadata["outputs"]} == {
        name: [-1, *shape] for name, shape in SHAPES.items()
    }


@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("datatype", ["FP32", "UINT8"])
def test_infer_batch_equals_predict(
    client: triton.InferenceServerClient,
    images: np.ndarray,
    expected: np.ndarray,
    datatype: str,
    binary_in: bool,
    binary_out: bool,
) -> None:
    outputs = [triton.InferRequestedOutput(name, binary_data=binary_out) for name in OUTPUTS]
    result = client.infer(MODEL, [image_input(images, datatype, binary_in)], outputs=outputs, request_id="r1")
    response = result.get_response()
    assert response["model_name"] == MODEL and response["id"] == "r1"
    for output in response["outputs"]:
        assert output["datatype"] == "FP32" and output["shape"] == [BATCH, *SHAPES[output["name"]]]
        assert ("parameters" in output) is binary_out and ("data" in output) is not binary_out
    probabilities = result.as_numpy("probabilities")
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(probabilities.argmax(1), expected.argmax(1))
    np.testing.assert_array_equal(result.as_numpy("logits").argmax(1), expected.argmax(1))


@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
def test_digit_score_is_requestable_and_agrees_with_predict(
    client: triton.InferenceServerClient, live_server: LiveServer, images: np.ndarray, binary_out: bool
) -> None:
    """The third output alone, as tritonclient asks for it: one score per image, /predict/batch's digit_score
    for the same images, and below the model's threshold exactly where /predict/batch says is_digit false."""
    outputs = [triton.InferRequestedOutput("digit_score", binary_data=binary_out)]
    result = client.infer(MODEL, [image_input(images, "UINT8", True)], outputs=outputs)
    assert [output["name"] for output in result.get_response()["outputs"]] == ["digit_score"]
    score = result.as_numpy("digit_score")
    assert score.shape == (BATCH,) and score.dtype == np.float32
    predictions = httpx.post(
        f"{live_server.url}/predict/batch",
        content=images.tobytes(),
        headers={"Content-Type": "application/octet-stream"},
    ).json()["predictions"]
    np.testing.assert_allclose(score, [p["digit_score"] for p in predictions], rtol=0, atol=1e-6)
    threshold = client.get_model_metadata(MODEL)["parameters"]["digit_threshold"]
    assert [bool(value >= threshold) for value in score] == [p["is_digit"] for p in predictions]


def test_requested_outputs_only_and_id_only_when_sent(
    client: triton.InferenceServerClient, images: np.ndarray, expected: np.ndarray
) -> None:
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=False)]
    result = client.infer(MODEL, [image_input(images, "UINT8", True)], outputs=outputs)
    response = result.get_response()
    assert "id" not in response and [output["name"] for output in response["outputs"]] == ["probabilities"]
    assert result.as_numpy("logits") is None
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("compression", [None, "gzip", "deflate"])
def test_versioned_and_compressed_requests(
    client: triton.InferenceServerClient,
    images: np.ndarray,
    expected: np.ndarray,
    described: dict,
    compression: str | None,
) -> None:
    """No requested outputs: tritonclient asks for all of them in binary (binary_data_output)."""
    result = client.infer(
        MODEL,
        [image_input(images[:8], "FP32", True)],
        model_version=described["version"],
        request_compression_algorithm=compression,
    )
    outputs = result.get_response()["outputs"]
    assert [output["name"] for output in outputs] == list(OUTPUTS)
    assert all(
        output["parameters"]["binary_data_size"] == 8 * math.prod(SHAPES[output["name"]]) * 4
        for output in outputs
    )
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected[:8], rtol=0, atol=1e-6)


def test_unknown_model_and_version_raise_with_the_server_message(
    client: triton.InferenceServerClient, images: np.ndarray
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("resnet50", [image_input(images, "UINT8", True)])
    assert caught.value.status() == "404"
    assert "unknown model 'resnet50'" in caught.value.message() and MODEL in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.infer(MODEL, [image_input(images, "UINT8", True)], model_version="999")
    assert caught.value.status() == "404" and "unknown version '999'" in caught.value.message()


def test_bad_shape_is_400(client: triton.InferenceServerClient, images: np.ndarray) -> None:
    tensor = triton.InferInput("image", [BATCH, 28, 28], "UINT8")
    tensor.set_data_from_numpy(images)
    with pytest.raises(InferenceServerException) as caught:
        client.infer(MODEL, [tensor])
    assert caught.value.status() == "400"
    assert (
        "shape [64, 28, 28]" in caught.value.message()
        and "[N, 1, 28, 28] or [N, 784]" in caught.value.message()
    )


def test_plain_json_request_nested_data(
    live_server: LiveServer, images: np.ndarray, expected: np.ndarray
) -> None:
    """What a curl user writes: nested rows of floats, one output, an id."""
    request = {
        "id": "curl-1",
        "inputs": [
            {
                "name": "image",
                "shape": [2, 1, 28, 28],
                "datatype": "FP32",
                "data": (images[:2, None] / 255).tolist(),
            }
        ],
        "outputs": [{"name": "probabilities"}],
    }
    response = httpx.post(live_server.url + INFER, json=request)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json" and HEADER_LENGTH not in response.headers
    body = response.json()
    assert body["id"] == "curl-1" and body["model_name"] == MODEL
    (output,) = body["outputs"]
    assert output["name"] == "probabilities" and output["shape"] == [2, 10]
    np.testing.assert_allclose(np.array(output["data"], np.float32).reshape(2, 10), expected[:2], atol=1e-6)


def binary_request(header: bytes, data: bytes, length: int | None = None) -> tuple[bytes, dict[str, str]]:
    return header + data, {HEADER_LENGTH: str(len(header) if length is None else length)}


def uint8_header(count: int) -> bytes:
    """The JSON header of a binary request for `count` UINT8 images [count, 784]."""
    parameters = b'"parameters":{"binary_data_size":%d}' % (count * 784)
    return b'{"inputs":[{"name":"image","shape":[%d,784],"datatype":"UINT8",%s}]}' % (count, parameters)


UINT8_HEADER = uint8_header(1)


def json_body(text: str) -> tuple[bytes, dict[str, str]]:
    return text.encode(), {"Content-Type": "application/json"}


BAD_REQUESTS = {
    "malformed JSON": (json_body('{"inputs": [}'), 400, "not valid JSON"),
    "not an object": (json_body("[1, 2]"), 400, "JSON object"),
    "wrong datatype": (
        json_body('{"inputs":[{"name":"image","shape":[1,784],"datatype":"INT64","data":[0]}]}'),
        400,
        "datatype 'INT64'",
    ),
    "string pixels": (
        json_body(
            '{"inputs":[{"name":"image","shape":[1,784],"datatype":"UINT8","data":['
            + '"1",' * 783
            + '"1"]}]}'
        ),
        400,
        "not a UINT8 value",
    ),
    "FP32 out of range": (
        json_body(
            '{"inputs":[{"name":"image","shape":[1,784],"datatype":"FP32","data":[' + "255," * 783 + "255]}]}"
        ),
        400,
        "in [0, 1]",
    ),
    "too few values": (
        json_body('{"inputs":[{"name":"image","shape":[1,784],"datatype":"UINT8","data":[1,2,3]}]}'),
        400,
        "flat list of 784",
    ),
    "unknown input": (
        json_body('{"inputs":[{"name":"input_1","shape":[1,784],"datatype":"UINT8","data":[0]}]}'),
        400,
        "exactly one input 'image'",
    ),
    "unknown output": (
        json_body(
            '{"inputs":[{"name":"image","shape":[1,784],"datatype":"UINT8","data":[' + "0," * 783 + "0]}],"
            '"outputs":[{"name":"softmax"}]}'
        ),
        400,
        "unknown output 'softmax'",
    ),
    "binary data too short": (binary_request(UINT8_HEADER, bytes(700)), 400, "the body has 700"),
    "binary data too long": (binary_request(UINT8_HEADER, bytes(900)), 400, "inputs declare 784"),
    "header length beyond body": (binary_request(UINT8_HEADER, bytes(784), 10**6), 400, HEADER_LENGTH),
    "header length not a number": (binary_request(UINT8_HEADER, bytes(784), -3), 400, HEADER_LENGTH),
    "huge declared binary size": (
        binary_request(UINT8_HEADER.replace(b":784}", b":99999999999999}"), bytes(784)),
        400,
        "binary_data_size is 99999999999999",
    ),
    "huge declared shape": (
        binary_request(UINT8_HEADER.replace(b"[1,784]", b"[4000000000,784]"), bytes(784)),
        413,
        "batch of 4000000000 images exceeds the limit",
    ),
    "huge JSON shape": (
        json_body('{"inputs":[{"name":"image","shape":[1000000,1,28,28],"datatype":"FP32","data":[]}]}'),
        413,
        "exceeds the limit",
    ),
    "body beyond max_body_bytes": ((bytes(9 * 1024 * 1024), {}), 413, "exceeds"),
    "gzip bomb": (
        (gzip.compress(bytes(100 * 1024 * 1024)), {"Content-Encoding": "gzip"}),
        413,
        "decompressed body exceeds",
    ),
    "corrupt deflate": ((zlib.compress(b"{}")[:-3], {"Content-Encoding": "deflate"}), 400, "deflate"),
    "unknown encoding": ((b"{}", {"Content-Encoding": "br"}), 415, "'br' is not supported"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_hostile_requests_get_a_clear_4xx(live_server: LiveServer, case: str) -> None:
    (body, headers), status, message = BAD_REQUESTS[case]
    response = httpx.post(live_server.url + INFER, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error", "request_id"] and message in response.json()["error"]


def test_v2_routes_are_measured(live_server: LiveServer, client: triton.InferenceServerClient) -> None:
    client.is_model_ready(MODEL)
    httpx.post(live_server.url + INFER, content=b"{")
    text = httpx.get(f"{live_server.url}/metrics").text
    assert 'route="/v2/models/{name}/ready"' in text
    assert 'mnist_errors_total{protocol="http",reason="invalid_request",status="400"}' in text


def test_api_key_guards_infer_but_not_health(server_factory: Callable, images: np.ndarray) -> None:
    with server_factory(workers=1, env={"MNIST_API_KEY": "s3cret"}) as server:
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        try:
            assert client.is_server_ready() and client.is_model_ready(MODEL)
            with pytest.raises(InferenceServerException) as caught:
                client.infer(MODEL, [image_input(images[:1], "UINT8", True)])
            assert caught.value.status() == "401" and "API key" in caught.value.message()
            result = client.infer(
                MODEL, [image_input(images[:1], "UINT8", True)], headers={"Authorization": "Bearer s3cret"}
            )
            assert result.as_numpy("probabilities").shape == (1, 10)
        finally:
            client.close()


def test_full_queue_is_503_with_retry_after(server_factory: Callable, images: np.ndarray) -> None:
    """V2 shares /predict's bounded queue: while one request of 64 images waits for its batch to fill
    (max wait 1 s, batch size 128), a queue of 64 has no room for the next one."""
    env = {
        "MNIST_MAX_QUEUE": "64",
        "MNIST_QUEUE_WAIT_S": "0",  # refuse at once instead of waiting for room
        "MNIST_MAX_BATCH_ITEMS": "64",
        "MNIST_MAX_BATCH_SIZE": "128",
        "MNIST_MAX_BATCH_WAIT_MS": "1000",
    }
    body, headers = binary_request(uint8_header(64), images.tobytes())
    with server_factory(workers=1, env=env) as server:
        # the first request is held in the queue (and then answered 200) while the second one comes
        second = answer_while_held(
            server.url,
            Held(INFER, body, headers, items=64),
            lambda client: client.post(INFER, content=body, headers=headers),
        )
        assert second.status_code == 503 and second.headers["retry-after"], second.text
        assert "busy" in second.json()["error"]


def test_not_ready_is_503_with_retry_after() -> None:
    """Before the model is loaded and warm (here: the app's lifespan never ran), readiness and inference
    answer 503 with Retry-After, and liveness still 200."""

    async def ask() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(Settings()))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as app:
            assert (await app.get("/v2/health/live")).status_code == 200
            return [
                await app.get("/v2/health/ready"),
                await app.get(f"/v2/models/{MODEL}/ready"),
                await app.post(INFER, content=b"{}"),
            ]

    for response in asyncio.run(ask()):
        assert response.status_code == 503 and response.headers["retry-after"]
        assert list(response.json()) == ["error", "request_id"]
