"""The V2 gRPC codec: a ModelInferRequest to a model batch, outputs to a ModelInferResponse, model metadata
to its message; what the request means is service/v2/core.py's, so gRPC refuses what REST refuses, with the
same messages. Pure functions, no I/O.

Inputs come as typed `contents` (FP32 in `fp32_contents`, UINT8 in `uint_contents`) or as little-endian
bytes in `raw_input_contents`; the answer comes the same way (raw for raw, as tritonclient and Triton do,
typed for typed, as a grpcurl user reads it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from google.protobuf.message import Message

from service.v2.core import (
    InferRequest,
    InputType,
    Signature,
    bad_request,
    batch_shape,
    check_input_names,
    from_buffer,
    in_range,
    input_type,
    model_input,
    output_tensors,
    reject_unsupported,
    requested_outputs,
)
from service.v2.messages import InferParameter, ModelInferResponse, ModelMetadataResponse

# The typed contents field of each datatype the model takes or answers, and the dtype it reads as.
CONTENTS = {
    "FP32": ("fp32_contents", np.float32),
    "FP64": ("fp64_contents", np.float64),
    "UINT8": ("uint_contents", np.uint32),
    "INT8": ("int_contents", np.int32),
    "INT32": ("int_contents", np.int32),
    "INT64": ("int64_contents", np.int64),
}


def parameters(message: Mapping[str, Message]) -> dict[str, Any]:
    """A map of InferParameter as plain values (an empty parameter as None)."""
    values = {}
    for key, parameter in message.items():
        choice = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, choice) if choice else None
    return values


def parse_infer_request(request: Message, model: Signature, max_items: int) -> tuple[InferRequest, bool]:
    """The validated request, and whether its input came raw (then so does the answer)."""
    check_input_names([tensor.name for tensor in request.inputs], model)
    (tensor,) = request.inputs
    name = tensor.name
    kind = input_type(tensor.datatype, name)
    shape = batch_shape(list(tensor.shape), name, model, max_items)
    reject_unsupported(parameters(tensor.parameters), f"input {name!r}")
    raw = request.raw_input_contents
    if raw:
        values = _raw_values(raw, tensor.HasField("contents"), kind, name, shape)
    else:
        values = _typed_values(tensor.contents, kind, tensor.datatype, name, shape)
    asked = [(output.name, parameters(output.parameters)) for output in request.outputs]
    outputs = requested_outputs(asked, list(model.outputs), False)
    images = model_input(values, kind, shape, model)
    return InferRequest(id=request.id or None, images=images, outputs=outputs), bool(raw)


def infer_response(
    request: InferRequest,
    results: Mapping[str, np.ndarray],
    model: Signature,
    *,
    name: str,
    version: str,
    raw: bool,
) -> Message:
    """The answer: every requested output, raw little-endian or typed."""
    response = ModelInferResponse(model_name=name, model_version=version, id=request.id or "")
    tensors = output_tensors(request, results, model)
    raw = raw or any(datatype not in CONTENTS for _, datatype, _ in tensors)
    for output, datatype, array in tensors:
        tensor = response.outputs.add(name=output.name, datatype=datatype, shape=array.shape)
        if raw:
            response.raw_output_contents.append(array.tobytes())
        else:
            getattr(tensor.contents, CONTENTS[datatype][0]).extend(array.ravel().tolist())
    return response


def metadata_response(metadata: Mapping[str, Any]) -> Message:
    """service/model.py's V2 model metadata as its message; a parameter without a value is left out."""
    response = ModelMetadataResponse(
        name=metadata["name"], versions=metadata["versions"], platform=metadata["platform"]
    )
    for side in ("inputs", "outputs"):
        for spec in metadata[side]:
            getattr(response, side).add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
    for key, value in metadata["parameters"].items():
        if value is not None:
            response.parameters[key].CopyFrom(_parameter(value))
    return response


def _parameter(value: Any) -> Message:
    if isinstance(value, bool):
        return InferParameter(bool_param=value)
    if isinstance(value, int):
        return InferParameter(int64_param=value)
    if isinstance(value, float):
        return InferParameter(double_param=value)
    return InferParameter(string_param=str(value))


def _raw_values(raw: Any, typed_too: bool, kind: InputType, name: str, shape: list[int]) -> np.ndarray:
    if len(raw) != 1:
        raise bad_request(f"raw_input_contents has {len(raw)} entries; the request has 1 input")
    if typed_too:
        raise bad_request(f"input {name!r} has both contents and raw_input_contents")
    needed = math.prod(shape) * kind.dtype.itemsize
    if len(raw[0]) != needed:
        raise bad_request(
            f"input {name!r}: raw_input_contents holds {len(raw[0])} bytes; shape {shape} needs {needed}"
        )
    return from_buffer(raw[0], kind, name, shape)


def _typed_values(
    contents: Message, kind: InputType, datatype: str, name: str, shape: list[int]
) -> np.ndarray:
    field, read_as = CONTENTS[datatype]
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        where = [descriptor.name for descriptor, _ in contents.ListFields()] or ["none"]
        raise bad_request(
            f"input {name!r}: {datatype} values go in contents.{field}, {count} for shape {shape};"
            f" it has {len(values)} (contents set: {', '.join(where)})"
        )
    return in_range(np.fromiter(values, read_as, count), kind, name).astype(kind.dtype)
