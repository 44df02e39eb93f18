"""Open Inference Protocol (KServe V2) codec: request bodies to a model batch, outputs to response bodies.

Pure functions, no I/O, so the wire format is testable without a server; the router reads the body and runs
the batcher. Every size a client declares (shape, binary_data_size, header length) is checked against the
limits and against the bytes actually received before anything is built from it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.errors import BadRequest, Reason, TooLarge, Unsupported
from service.pixels import check_count

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data"]
_INFLATE_WBITS = {"gzip": 31, "deflate": 15}


@dataclass(frozen=True)
class InputType:
    """How one wire datatype arrives: numpy dtype (little-endian on the wire), JSON types, value range."""

    dtype: np.dtype
    json_types: frozenset[type]
    high: float


# FP32 is what the model takes ([0, 1]); UINT8 carries pixels 0..255 (4x smaller), scaled like /predict's.
INPUT_TYPES = {
    "FP32": InputType(np.dtype("<f4"), frozenset({int, float}), 1.0),
    "UINT8": InputType(np.dtype("u1"), frozenset({int}), 255),
}


@dataclass(frozen=True)
class Signature:
    """What the codec knows about the model, all read from the model itself (the runtime spec)."""

    input_name: str
    item_shape: tuple[int, ...]  # one example, e.g. (1, 28, 28); [N, *item_shape] and [N, size] are accepted
    outputs: Mapping[str, str]  # output name -> V2 datatype, in model order
    from_pixels: Callable[[np.ndarray], np.ndarray]  # uint8 [N, ...] -> model input, as /predict scales them

    @property
    def item_size(self) -> int:
        return math.prod(self.item_shape)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A validated request: `id` is None unless the client sent one (it is echoed only then)."""

    id: str | None
    images: np.ndarray  # float32 [N, *item_shape] in [0, 1], what the model takes
    outputs: tuple[RequestedOutput, ...]


def bad_request(message: str) -> BadRequest:
    return BadRequest(message, Reason.INVALID_REQUEST)


def decompress(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """Undo a gzip/deflate Content-Encoding (tritonclient can compress requests), inflating at most
    `max_bytes` so a small compressed bomb cannot exhaust memory."""
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return body
    wbits = _INFLATE_WBITS.get(name)
    if wbits is None:
        message = f"Content-Encoding {_short(encoding)} is not supported; use gzip, deflate or none"
        raise Unsupported(message)
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise bad_request(f"body is not valid {name} data ({exc})") from None
    if len(data) > max_bytes:
        raise TooLarge(f"decompressed body exceeds the limit of {max_bytes} bytes", Reason.BODY_TOO_LARGE)
    if not inflater.eof:
        raise bad_request(f"{name} body is truncated")
    return data


def parse_infer_request(
    body: bytes, header_length: str | None, model: Signature, max_items: int
) -> InferRequest:
    """Validate an infer request: plain JSON, or a JSON header of `header_length` bytes + binary tensors."""
    json_size = _header_size(header_length, len(body))
    view = memoryview(body)
    header = _load_json(view[:json_size])
    binary = view[json_size:]
    if not isinstance(header, dict):
        raise bad_request("request must be a JSON object")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise bad_request("id must be a string")
    parameters = _object(header.get("parameters"), "parameters")
    binary_default = _flag(parameters, "binary_data_output", "parameters")

    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise bad_request(f"inputs must be a non-empty list; the model takes one input {model.input_name!r}")
    names = [tensor.get("name") if isinstance(tensor, dict) else None for tensor in inputs]
    if names != [model.input_name]:
        raise bad_request(
            f"inputs are {_short(names)}; the model takes exactly one input {model.input_name!r}"
        )
    images, used = _decode_input(inputs[0], binary, model, max_items)
    if used != len(binary):
        raise bad_request(f"{len(binary)} bytes of binary data follow the JSON header; inputs declare {used}")
    outputs = _requested_outputs(header.get("outputs"), list(model.outputs), binary_default)
    return InferRequest(id=request_id, images=images, outputs=outputs)


def encode_infer_response(
    request: InferRequest, results: Mapping[str, np.ndarray], model: Signature, *, name: str, version: str
) -> tuple[bytes, dict[str, str]]:
    """Body and headers: JSON, or a JSON header + raw little-endian tensors when any output is binary."""
    header: dict[str, Any] = {"model_name": name, "model_version": version}
    if request.id is not None:
        header["id"] = request.id
    outputs, chunks = [], []
    for output in request.outputs:
        array = np.ascontiguousarray(results[output.name])
        tensor: dict[str, Any] = {
            "name": output.name,
            "datatype": model.outputs[output.name],
            "shape": list(array.shape),
        }
        if output.binary:
            raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = array.ravel()
        outputs.append(tensor)
    header["outputs"] = outputs
    text = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return text, {"Content-Type": "application/json"}
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(text))}
    return b"".join([text, *chunks]), headers


def least_images(body_size: int, header_length: str | None, model: Signature) -> int:
    """The fewest images a request of this size can carry, known before it is read: the binary tensors
    after a JSON header hold at least their bytes / (an image's values x the widest datatype's bytes);
    a plain JSON body at least one."""
    if header_length is None or not header_length.strip().isdigit() or len(header_length) > 18:
        return 1
    widest = max(kind.dtype.itemsize for kind in INPUT_TYPES.values())
    return max(1, (body_size - int(header_length)) // (model.item_size * widest))


def _header_size(value: str | None, body_size: int) -> int:
    if value is None:
        return body_size
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 18 and 0 < int(text) <= body_size):
        raise bad_request(
            f"{HEADER_LENGTH} must be from 1 to the body size ({body_size} bytes), got {_short(value)}"
        )
    return int(text)


def _short(value: Any) -> str:
    """repr() capped in length: error messages quote client values, never at the client's length."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _load_json(data: memoryview) -> Any:
    try:
        return orjson.loads(data)  # rejects NaN/Infinity and nesting deeper than 1024
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"request is not valid JSON: {exc}") from None


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"{where} must be a JSON object")
    return value


def _flag(parameters: dict[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise bad_request(f"{where}.{key} must be true or false")
    return value


def _reject_unsupported(parameters: dict[str, Any], where: str) -> None:
    if "shared_memory_region" in parameters:
        raise bad_request(f"{where}: shared memory is not supported; send data or binary tensors")
    if "classification" in parameters:
        raise bad_request(f"{where}: the classification extension is not supported; request 'probabilities'")


def _batch_shape(tensor: dict[str, Any], name: str, model: Signature, max_items: int) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(type(dim) is int for dim in shape):
        raise bad_request(f"input {name!r}: shape must be a list of integers")
    accepted = [list(model.item_shape), [model.item_size]]
    if len(shape) < 2 or shape[1:] not in accepted:
        forms = " or ".join("[N, " + ", ".join(map(str, form)) + "]" for form in accepted)
        raise bad_request(f"input {name!r} has shape {_short(shape)}; expected {forms}")
    if shape[0] < 1:
        raise bad_request(f"input {name!r}: batch size must be at least 1, got {shape[0]}")
    check_count(shape[0], max_items)
    return shape


def _decode_input(
    tensor: dict[str, Any], binary: memoryview, model: Signature, max_items: int
) -> tuple[np.ndarray, int]:
    """(images float32 [N, *item_shape] in [0, 1], binary bytes consumed) for the one input."""
    name = tensor["name"]
    datatype = tensor.get("datatype")
    kind = INPUT_TYPES.get(datatype) if isinstance(datatype, str) else None
    if kind is None:
        raise bad_request(
            f"input {name!r} has datatype {_short(datatype)}; expected one of {list(INPUT_TYPES)}"
        )
    shape = _batch_shape(tensor, name, model, max_items)
    parameters = _object(tensor.get("parameters"), f"input {name!r} parameters")
    _reject_unsupported(parameters, f"input {name!r}")
    if "binary_data_size" in parameters:
        if "data" in tensor:
            raise bad_request(f"input {name!r} has both data and parameters.binary_data_size")
        values = _binary_values(parameters["binary_data_size"], binary, kind, name, shape)
        used = values.nbytes
    elif "data" in tensor:
        values, used = _json_values(tensor["data"], kind, datatype, name, shape), 0
    else:
        raise bad_request(f"input {name!r} has no data and no parameters.binary_data_size")
    if kind.dtype == np.uint8:
        return model.from_pixels(values.reshape(shape[0], -1)), used
    return values.reshape(shape[0], *model.item_shape), used


def _binary_values(size: Any, binary: memoryview, kind: InputType, name: str, shape: list[int]) -> np.ndarray:
    count = math.prod(shape)
    needed = count * kind.dtype.itemsize
    if type(size) is not int or size != needed:
        raise bad_request(f"input {name!r}: binary_data_size is {_short(size)}; shape {shape} needs {needed}")
    if needed > len(binary):
        raise bad_request(
            f"input {name!r} needs {needed} bytes of binary data after the JSON header, whose length goes in"
            f" {HEADER_LENGTH}; the body has {len(binary)}"
        )
    values = np.frombuffer(binary, dtype=kind.dtype, count=count)
    if not np.all((values >= 0) & (values <= kind.high)):  # NaN fails too
        raise bad_request(f"input {name!r}: values must be in [0, {kind.high:g}]")
    return values


def _flatten(data: Any, shape: list[int], name: str) -> list[Any]:
    """Row-major values of `data`, given flat or nested exactly as `shape`."""
    total = math.prod(shape)
    if isinstance(data, list) and len(data) == total and not isinstance(data[0], list):
        return data
    level = [data]
    for dim in shape:
        if not all(isinstance(node, list) and len(node) == dim for node in level):
            raise bad_request(
                f"input {name!r}: data must be a flat list of {total} values or nested as {shape}"
            )
        level = [item for node in level for item in node]
    return level


def _json_values(data: Any, kind: InputType, datatype: str, name: str, shape: list[int]) -> np.ndarray:
    values = _flatten(data, shape, name)
    # Exact types, not isinstance(): JSON true/false are not pixels. Checked in C, range in numpy; the
    # Python walk below only runs to name the offending value.
    if set(map(type, values)) <= kind.json_types:
        array = np.array(values, dtype=np.float64)
        if np.all((array >= 0) & (array <= kind.high)):
            return array.astype(kind.dtype)
    bad = next(value for value in values if type(value) not in kind.json_types or not 0 <= value <= kind.high)
    raise bad_request(f"input {name!r}: {_short(bad)} is not a {datatype} value in [0, {kind.high:g}]")


def _requested_outputs(
    requested: Any, output_names: list[str], binary_default: bool
) -> tuple[RequestedOutput, ...]:
    if requested is None or requested == []:  # none named: all of them
        return tuple(RequestedOutput(name, binary_default) for name in output_names)
    if not isinstance(requested, list) or not all(isinstance(output, dict) for output in requested):
        raise bad_request("outputs must be a list of objects")
    result: list[RequestedOutput] = []
    for output in requested:
        name = output.get("name")
        if name not in output_names:
            raise bad_request(f"unknown output {_short(name)}; the model has {output_names}")
        if any(seen.name == name for seen in result):
            raise bad_request(f"output {name!r} is requested twice")
        parameters = _object(output.get("parameters"), f"output {name!r} parameters")
        _reject_unsupported(parameters, f"output {name!r}")
        where = f"output {name!r} parameters"
        binary = _flag(parameters, "binary_data", where) if "binary_data" in parameters else binary_default
        result.append(RequestedOutput(name, binary))
    return tuple(result)
