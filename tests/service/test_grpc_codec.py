"""The V2 gRPC codec on its own: raw and typed inputs decode like REST's, the refusals REST makes with the
same messages, the answer in the form the input came, and the committed descriptor set made from the
.proto as it is now."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.errors import ApiError
from service.v2 import grpc_codec, messages
from service.v2.core import InferRequest, RequestedOutput, Signature
from service.v2.rest import parse_infer_request as parse_rest

MODEL = Signature(
    "image",
    (1, 28, 28),
    {"logits": "FP32", "probabilities": "FP32"},
    lambda pixels: np.divide(pixels, 255, dtype=np.float32).reshape(len(pixels), 1, 28, 28),
)
RNG = np.random.default_rng(0)
V2 = Path(__file__).resolve().parents[2] / "service" / "v2"


def request(array: np.ndarray, datatype: str, *, raw: bool, outputs: tuple[str, ...] = ()) -> object:
    message = messages.ModelInferRequest(model_name="lenet5", id="r1")
    tensor = message.inputs.add(name="image", datatype=datatype, shape=array.shape)
    if raw:
        message.raw_input_contents.append(array.tobytes())
    else:
        field = "fp32_contents" if datatype == "FP32" else "uint_contents"
        getattr(tensor.contents, field).extend(array.ravel().tolist())
    for name in outputs:
        message.outputs.add(name=name)
    return message


def refusal(message: object, max_items: int = 64) -> ApiError:
    with pytest.raises(ApiError) as caught:
        grpc_codec.parse_infer_request(message, MODEL, max_items)
    return caught.value


def rest_refusal(body: dict) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_rest(json.dumps(body).encode(), None, MODEL, 64)
    return caught.value


def test_the_descriptor_set_is_made_from_the_proto_as_it_is(tmp_path: Path) -> None:
    """Regenerate with the command in service/v2/inference.proto when this fails."""
    made = tmp_path / "inference.binpb"
    command = [
        "-m",
        "grpc_tools.protoc",
        "-I",
        str(V2),
        f"--descriptor_set_out={made}",
        str(V2 / "inference.proto"),
    ]
    subprocess.run([sys.executable, *command], check=True, timeout=60)
    assert made.read_bytes() == messages.DESCRIPTOR_SET.read_bytes()
    assert set(messages.METHODS) == {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "RepositoryIndex",
        "RepositoryModelLoad",
    }


@pytest.mark.parametrize("shape", [[3, 1, 28, 28], [3, 784]])
@pytest.mark.parametrize("datatype", ["FP32", "UINT8"])
def test_raw_and_typed_inputs_decode_to_the_images_rest_decodes(shape: list[int], datatype: str) -> None:
    if datatype == "FP32":
        array = RNG.random(shape, dtype=np.float32)
    else:
        array = RNG.integers(0, 256, shape, dtype=np.uint8)
    rest = parse_rest(
        json.dumps(
            {
                "inputs": [
                    {"name": "image", "shape": shape, "datatype": datatype, "data": array.ravel().tolist()}
                ]
            }
        ).encode(),
        None,
        MODEL,
        64,
    )
    for raw in (True, False):
        parsed, came_raw = grpc_codec.parse_infer_request(request(array, datatype, raw=raw), MODEL, 64)
        assert came_raw is raw and parsed.id == "r1" and parsed.outputs == rest.outputs
        assert parsed.images.dtype == np.float32
        np.testing.assert_array_equal(parsed.images, rest.images)


def test_refusals_carry_the_rest_messages() -> None:
    pixels = np.zeros((1, 784), np.uint8)
    wrong_shape = request(pixels.reshape(1, 28, 28), "UINT8", raw=True)
    rest_body = {"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "UINT8", "data": [0] * 784}]}
    assert refusal(wrong_shape).message == rest_refusal(rest_body).message
    unknown_output = request(pixels, "UINT8", raw=True, outputs=("softmax",))
    rest_body = {
        "inputs": [{"name": "image", "shape": [1, 784], "datatype": "UINT8", "data": [0] * 784}],
        "outputs": [{"name": "softmax"}],
    }
    assert (
        refusal(unknown_output).message
        == rest_refusal(rest_body).message
        == ("unknown output 'softmax'; the model has ['logits', 'probabilities']")
    )
    wrong_datatype = request(pixels.astype(np.int64), "INT64", raw=True)
    assert "datatype 'INT64'" in refusal(wrong_datatype).message
    too_many = request(np.zeros((65, 784), np.uint8), "UINT8", raw=True)
    assert refusal(too_many).status == 413
    out_of_range = request(np.full((1, 784), 2.0, np.float32), "FP32", raw=True)
    assert refusal(out_of_range).message == "input 'image': values must be in [0, 1]"


def test_malformed_raw_and_typed_contents_are_refused() -> None:
    short = request(np.zeros((1, 700), np.uint8), "UINT8", raw=True)
    short.inputs[0].shape[:] = [1, 784]
    assert "raw_input_contents holds 700 bytes; shape [1, 784] needs 784" in refusal(short).message
    both = request(np.zeros((1, 784), np.uint8), "UINT8", raw=True)
    both.inputs[0].contents.uint_contents.extend([0] * 784)
    assert "both contents and raw_input_contents" in refusal(both).message
    misplaced = request(np.zeros((1, 784), np.float32), "FP32", raw=False)
    misplaced.inputs[0].contents.ClearField("fp32_contents")
    misplaced.inputs[0].contents.fp64_contents.extend([0.0] * 784)
    message = refusal(misplaced).message
    assert "FP32 values go in contents.fp32_contents" in message and "fp64_contents" in message
    big = request(np.zeros((1, 784), np.uint8), "UINT8", raw=False)
    big.inputs[0].contents.uint_contents[0] = 256
    assert refusal(big).message == "input 'image': values must be in [0, 255]"
    two = request(np.zeros((1, 784), np.uint8), "UINT8", raw=True)
    two.inputs.add(name="mask", datatype="UINT8", shape=[1, 784])
    assert "exactly one input 'image'" in refusal(two).message
    shared = request(np.zeros((1, 784), np.uint8), "UINT8", raw=True)
    shared.inputs[0].parameters["shared_memory_region"].string_param = "region"
    assert "shared memory is not supported" in refusal(shared).message


def test_the_answer_comes_in_the_form_the_input_came() -> None:
    parsed = InferRequest(
        "r1", np.zeros((2, 1, 28, 28), np.float32), (RequestedOutput("probabilities", False),)
    )
    results = {
        "probabilities": RNG.random((2, 10), dtype=np.float32),
        "logits": np.zeros((2, 10), np.float32),
    }
    raw = grpc_codec.infer_response(parsed, results, MODEL, name="lenet5", version="2", raw=True)
    typed = grpc_codec.infer_response(parsed, results, MODEL, name="lenet5", version="2", raw=False)
    for response in (raw, typed):
        (output,) = response.outputs
        assert (response.model_name, response.model_version, response.id) == ("lenet5", "2", "r1")
        assert (output.name, output.datatype, list(output.shape)) == ("probabilities", "FP32", [2, 10])
    np.testing.assert_array_equal(
        np.frombuffer(raw.raw_output_contents[0], "<f4").reshape(2, 10), results["probabilities"]
    )
    assert not typed.raw_output_contents
    np.testing.assert_array_equal(
        np.array(typed.outputs[0].contents.fp32_contents, np.float32).reshape(2, 10), results["probabilities"]
    )


def test_metadata_leaves_out_a_parameter_without_a_value() -> None:
    spec = {"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}
    metadata = {
        "name": "lenet5",
        "versions": ["2"],
        "platform": "onnxruntime_onnx",
        "inputs": [spec],
        "outputs": [],
    }
    scored = grpc_codec.metadata_response({**metadata, "parameters": {"digit_threshold": 0.25}})
    assert scored.parameters["digit_threshold"].double_param == 0.25
    assert list(scored.inputs[0].shape) == [-1, 1, 28, 28]
    unscored = grpc_codec.metadata_response({**metadata, "parameters": {"digit_threshold": None}})
    assert "digit_threshold" not in unscored.parameters
