"""What a V2 inference request means, whatever carried it: the checks that turn its tensors into a model
batch, the outputs it asks for, and the tensors of its answer. REST (service/v2/rest.py) and gRPC
(service/v2/grpc_codec.py) read their wire formats into these calls, so both refuse the same requests with
the same messages. Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from service.errors import BadRequest, NotFound, Reason
from service.pixels import check_count


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
    """What the protocol knows about the model, all read from the model itself (the runtime spec)."""

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
    binary: bool  # REST: as raw bytes after the JSON header (gRPC answers in the form the input came)


@dataclass(frozen=True)
class InferRequest:
    """A validated request: `id` is None unless the client sent one (it is echoed only then)."""

    id: str | None
    images: np.ndarray  # float32 [N, *item_shape] in [0, 1], what the model takes
    outputs: tuple[RequestedOutput, ...]


class Served(Protocol):
    """The served model as far as a request's model name and version are checked against it."""

    name: str
    version: str


def check_model(model: Served, name: str, version: str | None = None) -> None:
    """404 unless `name` (and `version`, if given) is what this server serves."""
    if name != model.name:
        raise NotFound(f"unknown model {name!r}; this server serves {model.name!r}", Reason.UNKNOWN_MODEL)
    if version is not None and version != model.version:
        message = f"unknown version {version!r} of model {model.name!r}; available: [{model.version!r}]"
        raise NotFound(message, Reason.UNKNOWN_MODEL)


def bad_request(message: str) -> BadRequest:
    return BadRequest(message, Reason.INVALID_REQUEST)


def short(value: Any) -> str:
    """repr() capped in length: error messages quote client values, never at the client's length."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_input_names(names: Sequence[Any], model: Signature) -> None:
    """The model takes exactly one input, by its name."""
    if not names:
        raise bad_request(f"inputs must be a non-empty list; the model takes one input {model.input_name!r}")
    if list(names) != [model.input_name]:
        raise bad_request(
            f"inputs are {short(list(names))}; the model takes exactly one input {model.input_name!r}"
        )


def input_type(datatype: Any, name: str) -> InputType:
    kind = INPUT_TYPES.get(datatype) if isinstance(datatype, str) else None
    if kind is None:
        raise bad_request(
            f"input {name!r} has datatype {short(datatype)}; expected one of {list(INPUT_TYPES)}"
        )
    return kind


def batch_shape(shape: Any, name: str, model: Signature, max_items: int) -> list[int]:
    """[N, *item_shape] or [N, item_size], 1 <= N <= max_items (413 above it)."""
    if not isinstance(shape, list) or not all(type(dim) is int for dim in shape):
        raise bad_request(f"input {name!r}: shape must be a list of integers")
    accepted = [list(model.item_shape), [model.item_size]]
    if len(shape) < 2 or shape[1:] not in accepted:
        forms = " or ".join("[N, " + ", ".join(map(str, form)) + "]" for form in accepted)
        raise bad_request(f"input {name!r} has shape {short(shape)}; expected {forms}")
    if shape[0] < 1:
        raise bad_request(f"input {name!r}: batch size must be at least 1, got {shape[0]}")
    check_count(shape[0], max_items)
    return shape


def reject_unsupported(parameters: Mapping[str, Any], where: str) -> None:
    if "shared_memory_region" in parameters:
        raise bad_request(f"{where}: shared memory is not supported; send data or binary tensors")
    if "classification" in parameters:
        raise bad_request(f"{where}: the classification extension is not supported; request 'probabilities'")


def flag(parameters: Mapping[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise bad_request(f"{where}.{key} must be true or false")
    return value


def in_range(values: np.ndarray, kind: InputType, name: str) -> np.ndarray:
    if not np.all((values >= 0) & (values <= kind.high)):  # NaN fails too
        raise bad_request(f"input {name!r}: values must be in [0, {kind.high:g}]")
    return values


def from_buffer(data: Any, kind: InputType, name: str, shape: list[int]) -> np.ndarray:
    """The values of raw little-endian bytes holding exactly `shape` (the caller checked the size)."""
    return in_range(np.frombuffer(data, dtype=kind.dtype, count=math.prod(shape)), kind, name)


def model_input(values: np.ndarray, kind: InputType, shape: list[int], model: Signature) -> np.ndarray:
    """Checked values -> float32 [N, *item_shape] in [0, 1]: UINT8 pixels scaled as /predict scales them."""
    if kind.dtype == np.uint8:
        return model.from_pixels(values.reshape(shape[0], -1))
    return values.reshape(shape[0], *model.item_shape)


def requested_outputs(
    requested: Sequence[tuple[Any, Mapping[str, Any]]], output_names: list[str], binary_default: bool
) -> tuple[RequestedOutput, ...]:
    """(name, parameters) of each output asked for -> the outputs to answer, in that order; none asked:
    every output of the model."""
    if not requested:
        return tuple(RequestedOutput(name, binary_default) for name in output_names)
    result: list[RequestedOutput] = []
    for name, parameters in requested:
        if name not in output_names:
            raise bad_request(f"unknown output {short(name)}; the model has {output_names}")
        if any(seen.name == name for seen in result):
            raise bad_request(f"output {name!r} is requested twice")
        reject_unsupported(parameters, f"output {name!r}")
        where = f"output {name!r} parameters"
        binary = flag(parameters, "binary_data", where) if "binary_data" in parameters else binary_default
        result.append(RequestedOutput(name, binary))
    return tuple(result)


def output_tensors(
    request: InferRequest, results: Mapping[str, np.ndarray], model: Signature
) -> list[tuple[RequestedOutput, str, np.ndarray]]:
    """(output, V2 datatype, C-contiguous little-endian array) of every requested output, in order."""
    tensors = []
    for output in request.outputs:
        array = np.ascontiguousarray(results[output.name])
        tensors.append(
            (output, model.outputs[output.name], array.astype(array.dtype.newbyteorder("<"), copy=False))
        )
    return tensors
