"""The V2 REST codec: request bodies (JSON, or a JSON header + binary tensors) to a model batch, outputs to
response bodies; what the request means is service/v2/core.py's.

Pure functions, no I/O, so the wire format is testable without a server; the router reads the body and runs
the batcher. Every size a client declares (shape, binary_data_size, header length) is checked against the
limits and against the bytes actually received before anything is built from it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from service.errors import Reason, TooLarge, Unsupported
from service.v2.core import (
    INPUT_TYPES,
    InferRequest,
    InputType,
    Signature,
    bad_request,
    batch_shape,
    check_input_names,
    flag,
    from_buffer,
    input_type,
    model_input,
    output_tensors,
    reject_unsupported,
    requested_outputs,
    short,
)

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data"]
_INFLATE_WBITS = {"gzip": 31, "deflate": 15}


def decompress(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """Undo a gzip/deflate Content-Encoding (tritonclient can compress requests), inflating at most
    `max_bytes` so a small compressed bomb cannot exhaust memory."""
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return body
    wbits = _INFLATE_WBITS.get(name)
    if wbits is None:
        message = f"Content-Encoding {short(encoding)} is not supported; use gzip, deflate or none"
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
    binary_default = flag(parameters, "binary_data_output", "parameters")

    inputs = header.get("inputs")
    inputs = inputs if isinstance(inputs, list) else []
    check_input_names([tensor.get("name") if isinstance(tensor, dict) else None for tensor in inputs], model)
    images, used = _decode_input(inputs[0], binary, model, max_items)
    if used != len(binary):
        raise bad_request(f"{len(binary)} bytes of binary data follow the JSON header; inputs declare {used}")
    outputs = requested_outputs(_outputs(header.get("outputs")), list(model.outputs), binary_default)
    return InferRequest(id=request_id, images=images, outputs=outputs)


def encode_infer_response(
    request: InferRequest, results: Mapping[str, np.ndarray], model: Signature, *, name: str, version: str
) -> tuple[bytes, dict[str, str]]:
    """Body and headers: JSON, or a JSON header + raw little-endian tensors when any output is binary."""
    header: dict[str, Any] = {"model_name": name, "model_version": version}
    if request.id is not None:
        header["id"] = request.id
    outputs, chunks = [], []
    for output, datatype, array in output_tensors(request, results, model):
        tensor: dict[str, Any] = {"name": output.name, "datatype": datatype, "shape": list(array.shape)}
        if output.binary:
            raw = array.tobytes()
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
            f"{HEADER_LENGTH} must be from 1 to the body size ({body_size} bytes), got {short(value)}"
        )
    return int(text)


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


def _outputs(requested: Any) -> list[tuple[Any, dict[str, Any]]]:
    """The JSON `outputs` as (name, parameters) pairs; none or null: every output."""
    if requested is None:
        return []
    if not isinstance(requested, list) or not all(isinstance(output, dict) for output in requested):
        raise bad_request("outputs must be a list of objects")
    return [
        (output.get("name"), _object(output.get("parameters"), f"output {output.get('name')!r} parameters"))
        for output in requested
    ]


def _decode_input(
    tensor: dict[str, Any], binary: memoryview, model: Signature, max_items: int
) -> tuple[np.ndarray, int]:
    """(images float32 [N, *item_shape] in [0, 1], binary bytes consumed) for the one input."""
    name = tensor["name"]
    datatype = tensor.get("datatype")
    kind = input_type(datatype, name)
    shape = batch_shape(tensor.get("shape"), name, model, max_items)
    parameters = _object(tensor.get("parameters"), f"input {name!r} parameters")
    reject_unsupported(parameters, f"input {name!r}")
    if "binary_data_size" in parameters:
        if "data" in tensor:
            raise bad_request(f"input {name!r} has both data and parameters.binary_data_size")
        values = _binary_values(parameters["binary_data_size"], binary, kind, name, shape)
        used = values.nbytes
    elif "data" in tensor:
        values, used = _json_values(tensor["data"], kind, datatype, name, shape), 0
    else:
        raise bad_request(f"input {name!r} has no data and no parameters.binary_data_size")
    return model_input(values, kind, shape, model), used


def _binary_values(size: Any, binary: memoryview, kind: InputType, name: str, shape: list[int]) -> np.ndarray:
    needed = math.prod(shape) * kind.dtype.itemsize
    if type(size) is not int or size != needed:
        raise bad_request(f"input {name!r}: binary_data_size is {short(size)}; shape {shape} needs {needed}")
    if needed > len(binary):
        raise bad_request(
            f"input {name!r} needs {needed} bytes of binary data after the JSON header, whose length goes in"
            f" {HEADER_LENGTH}; the body has {len(binary)}"
        )
    return from_buffer(binary, kind, name, shape)


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
    raise bad_request(f"input {name!r}: {short(bad)} is not a {datatype} value in [0, {kind.high:g}]")
