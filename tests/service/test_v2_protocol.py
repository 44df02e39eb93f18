"""The V2 codec on its own: every request shape tritonclient and curl send, and every way to get one wrong."""

from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import pytest

from service.errors import ApiError
from service.v2.core import InferRequest, RequestedOutput, Signature
from service.v2.rest import (
    HEADER_LENGTH,
    decompress,
    encode_infer_response,
    least_images,
    parse_infer_request,
)

MODEL = Signature(
    "image",
    (1, 28, 28),
    {"logits": "FP32", "probabilities": "FP32"},
    lambda pixels: np.divide(pixels, 255, dtype=np.float32).reshape(len(pixels), 1, 28, 28),
)
RNG = np.random.default_rng(0)


def parse(body: bytes | dict, header_length: str | None = None, max_items: int = 64) -> InferRequest:
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    return parse_infer_request(body, header_length, MODEL, max_items)


def binary_body(array: np.ndarray, datatype: str, **request: object) -> tuple[bytes, str]:
    """What tritonclient sends for one binary input: JSON header, raw bytes, and the header length."""
    raw = array.tobytes()
    header = {
        "inputs": [
            {
                "name": "image",
                "shape": list(array.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        **request,
    }
    text = json.dumps(header).encode()
    return text + raw, str(len(text))


def rejected(status: int, body: bytes | dict, header_length: str | None = None, **kwargs: object) -> str:
    with pytest.raises(ApiError) as caught:
        parse(body, header_length, **kwargs)
    assert caught.value.status == status, caught.value.message
    return caught.value.message


def image_request(data: object, shape: list[int], datatype: str = "FP32", **extra: object) -> dict:
    return {"inputs": [{"name": "image", "shape": shape, "datatype": datatype, "data": data, **extra}]}


@pytest.mark.parametrize("shape", [[3, 1, 28, 28], [3, 784]])
@pytest.mark.parametrize("datatype", ["FP32", "UINT8"])
def test_json_and_binary_inputs_decode_to_the_same_images(shape: list[int], datatype: str) -> None:
    if datatype == "FP32":
        array = RNG.random(shape, dtype=np.float32)
        expected = array.reshape(3, 1, 28, 28)
    else:
        array = RNG.integers(0, 256, shape, dtype=np.uint8)
        expected = MODEL.from_pixels(array.reshape(3, 784))
    for data in (array.ravel().tolist(), array.tolist()):  # flat and nested
        images = parse(image_request(data, shape, datatype)).images
        assert images.dtype == np.float32
        np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(parse(*binary_body(array, datatype)).images, expected)


def test_outputs_default_to_all_in_json_and_honour_binary_flags() -> None:
    data = [0] * 784
    assert parse(image_request(data, [1, 784])).outputs == (
        RequestedOutput("logits", False),
        RequestedOutput("probabilities", False),
    )
    request = parse(
        {**image_request(data, [1, 784]), "parameters": {"binary_data_output": True}, "outputs": []}
    )
    assert request.outputs == (RequestedOutput("logits", True), RequestedOutput("probabilities", True))
    request = parse(
        {
            **image_request(data, [1, 784]),
            "parameters": {"binary_data_output": True},
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}, {"name": "logits"}],
        }
    )
    assert request.outputs == (RequestedOutput("probabilities", False), RequestedOutput("logits", True))


def test_id_is_kept_only_when_sent() -> None:
    assert parse(image_request([0] * 784, [1, 784])).id is None
    assert parse({**image_request([0] * 784, [1, 784]), "id": "abc"}).id == "abc"
    assert parse({**image_request([0] * 784, [1, 784]), "id": ""}).id == ""


def test_response_json_and_binary_round_trip() -> None:
    results = {
        "logits": RNG.standard_normal((2, 10), dtype=np.float32),
        "probabilities": RNG.random((2, 10), dtype=np.float32),
    }
    request = InferRequest(
        id="7",
        images=np.zeros((2, 1, 28, 28), np.float32),
        outputs=(RequestedOutput("probabilities", True), RequestedOutput("logits", False)),
    )
    body, headers = encode_infer_response(request, results, MODEL, name="lenet5", version="1.0.0")
    size = int(headers[HEADER_LENGTH])
    header = json.loads(body[:size])
    assert header["model_name"] == "lenet5" and header["model_version"] == "1.0.0" and header["id"] == "7"
    probabilities, logits = header["outputs"]
    assert probabilities == {
        "name": "probabilities",
        "datatype": "FP32",
        "shape": [2, 10],
        "parameters": {"binary_data_size": 80},
    }
    np.testing.assert_array_equal(np.frombuffer(body[size:], "<f4").reshape(2, 10), results["probabilities"])
    np.testing.assert_array_equal(np.array(logits["data"], np.float32).reshape(2, 10), results["logits"])

    json_only = InferRequest(id=None, images=request.images, outputs=(RequestedOutput("logits", False),))
    body, headers = encode_infer_response(json_only, results, MODEL, name="lenet5", version="1.0.0")
    assert HEADER_LENGTH not in headers and headers["Content-Type"] == "application/json"
    assert "id" not in json.loads(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
        (b'{"inputs": [{"name": "image", "shape": [1, 784], "datatype": "FP32", "data": [NaN]}]}', "JSON"),
        (b"[]", "JSON object"),
        ({"inputs": []}, "non-empty list"),
        (
            {"inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "FP32", "data": [0] * 784}]},
            "'image'",
        ),
        ({"inputs": image_request([0] * 784, [1, 784])["inputs"] * 2}, "exactly one input"),
        (image_request([0] * 784, [1, 784], "FP64"), "datatype 'FP64'"),
        (image_request([0] * 784, [1, 784], 7), "datatype 7"),
        (image_request([0] * 784, [1, 1, 28, 27]), "shape [1, 1, 28, 27]"),
        (image_request([0] * 784, [784]), "shape"),
        (image_request([0] * 784, "1,784"), "list of integers"),
        (image_request([0] * 784, [1.0, 784]), "list of integers"),
        (image_request([0] * 784, [True, 784]), "list of integers"),
        (image_request([], [0, 784]), "at least 1"),
        (image_request([], [-1, 784]), "at least 1"),
        (image_request([0] * 783, [1, 784]), "flat list of 784"),
        (image_request([[0] * 784, [0] * 783], [2, 784]), "nested as [2, 784]"),
        (image_request([[[0] * 28] * 28], [1, 1, 28, 28]), "nested as [1, 1, 28, 28]"),
        (image_request({"a": 1}, [1, 784]), "flat list"),
        (image_request([0] * 783 + ["0"], [1, 784]), "'0' is not a FP32 value"),
        (image_request([0] * 783 + [True], [1, 784], "UINT8"), "True is not a UINT8 value"),
        (image_request([0] * 783 + [None], [1, 784]), "None is not"),
        (image_request([0] * 783 + [1.5], [1, 784]), "1.5 is not a FP32 value in [0, 1]"),
        (image_request([0] * 783 + [-0.1], [1, 784]), "in [0, 1]"),
        (image_request([0] * 783 + [256], [1, 784], "UINT8"), "in [0, 255]"),
        (image_request([0] * 783 + [0.5], [1, 784], "UINT8"), "0.5 is not a UINT8"),
        (image_request([0] * 783 + [10**300], [1, 784]), "is not a FP32"),
        (image_request(None, [1, 784]), "flat list"),
        ({"inputs": [{"name": "image", "shape": [1, 784], "datatype": "FP32"}]}, "no data"),
        (image_request([0] * 784, [1, 784], parameters={"binary_data_size": 3136}), "both data"),
        (image_request([0] * 784, [1, 784], parameters={"shared_memory_region": "r"}), "shared memory"),
        (image_request([0] * 784, [1, 784], parameters=[1]), "JSON object"),
        ({**image_request([0] * 784, [1, 784]), "id": 5}, "id must be a string"),
        ({**image_request([0] * 784, [1, 784]), "parameters": "x"}, "parameters must be a JSON object"),
        (
            {**image_request([0] * 784, [1, 784]), "parameters": {"binary_data_output": "yes"}},
            "true or false",
        ),
        (
            {**image_request([0] * 784, [1, 784]), "outputs": [{"name": "softmax"}]},
            "unknown output 'softmax'",
        ),
        ({**image_request([0] * 784, [1, 784]), "outputs": {"name": "logits"}}, "list of objects"),
        ({**image_request([0] * 784, [1, 784]), "outputs": [{"name": "logits"}] * 2}, "twice"),
        (
            {
                **image_request([0] * 784, [1, 784]),
                "outputs": [{"name": "logits", "parameters": {"classification": 3}}],
            },
            "classification",
        ),
        (
            {
                **image_request([0] * 784, [1, 784]),
                "outputs": [{"name": "logits", "parameters": {"binary_data": 1}}],
            },
            "true or false",
        ),
    ],
)
def test_malformed_requests_are_400_with_a_clear_message(body: bytes | dict, message: str) -> None:
    assert message in rejected(400, body)


def test_error_messages_never_quote_a_huge_client_value() -> None:
    message = rejected(400, image_request([0] * 784, [1, 784], "X" * 100_000))
    assert len(message) < 200


def test_declared_batch_beyond_the_limit_is_413_before_reading_data() -> None:
    assert "exceeds the limit of 64" in rejected(413, image_request([], [65, 784]))
    assert "exceeds the limit" in rejected(413, image_request([], [10**18, 1, 28, 28]))
    body, length = binary_body(np.zeros((2, 784), np.uint8), "UINT8")
    huge = body.replace(b'"shape": [2, 784]', b'"shape": [99999999999, 784]')
    assert "exceeds the limit" in rejected(413, huge, str(int(length) + 10), max_items=64)


def test_binary_sizes_are_checked_against_shape_and_body() -> None:
    pixels = RNG.integers(0, 256, (2, 784), dtype=np.uint8)
    body, length = binary_body(pixels, "UINT8")
    assert "needs 1568" in rejected(400, body.replace(b"1568", b"1567"), length.replace("1", "1"))
    assert "the body has 1567" in rejected(400, body[:-1], length)
    assert "inputs declare 1568" in rejected(400, body + b"\0", length)
    assert "binary_data_size is '1568'" in rejected(
        400, body.replace(b": 1568", b': "1568"'), str(int(length) + 2)
    )
    fp32 = RNG.random((1, 784), dtype=np.float32)
    fp32[0, 5] = np.nan
    assert "values must be in [0, 1]" in rejected(400, *binary_body(fp32, "FP32"))
    fp32[0, 5] = 2.0
    assert "values must be in [0, 1]" in rejected(400, *binary_body(fp32, "FP32"))


@pytest.mark.parametrize("length", ["0", "-5", "abc", "", "1e3", "²", "9" * 5000, "100000"])
def test_bad_header_length_is_400(length: str) -> None:
    body, _ = binary_body(np.zeros((1, 784), np.uint8), "UINT8")
    assert HEADER_LENGTH in rejected(400, body, length)


def test_binary_data_without_header_length_is_400() -> None:
    body, length = binary_body(np.zeros((1, 784), np.uint8), "UINT8")
    assert "not valid JSON" in rejected(400, body, None)
    assert HEADER_LENGTH in rejected(400, body[: int(length)], None)


def test_compressed_bodies_inflate_within_the_limit() -> None:
    body = json.dumps(image_request([0] * 784, [1, 784])).encode()
    assert decompress(gzip.compress(body), "gzip", 10_000) == body
    assert decompress(zlib.compress(body), "deflate", 10_000) == body
    assert decompress(body, None, 10) == body
    bomb = gzip.compress(b"\0" * 50_000_000)
    with pytest.raises(ApiError) as caught:
        decompress(bomb, "gzip", 1_000_000)
    assert caught.value.status == 413
    with pytest.raises(ApiError) as caught:
        decompress(gzip.compress(body)[:-20], "gzip", 10_000)
    assert caught.value.status == 400
    with pytest.raises(ApiError) as caught:
        decompress(b"junk", "deflate", 10_000)
    assert caught.value.status == 400
    with pytest.raises(ApiError) as caught:
        decompress(body, "br", 10_000)
    assert caught.value.status == 415


def test_least_images_before_reading_never_overcounts() -> None:
    """What the queue must have room for, from the sizes alone: binary tensors after a JSON header hold at
    least their bytes / an FP32 image's (UINT8 holds 4x more); plain or malformed: one."""
    header = json.dumps({"inputs": [{"name": "image", "shape": [10, 784]}]}).encode()
    fp32, uint8 = len(header) + 10 * 784 * 4, len(header) + 10 * 784  # ten images of either
    assert least_images(fp32, str(len(header)), MODEL) == 10
    assert least_images(uint8, str(len(header)), MODEL) == 2  # 10 // 4: it could have been FP32
    assert least_images(100_000, None, MODEL) == 1
    assert least_images(100_000, "not a number", MODEL) == 1
    assert least_images(100, "5000", MODEL) == 1  # header longer than the body: the parser refuses it
