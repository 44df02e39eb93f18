"""Pixels sent as numbers (JSON) or raw bytes -> uint8 arrays [n, height, width] (MNIST convention: 0 is
background), or a 4xx that says what is wrong and where. Image files are the images wing's job."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from service.errors import Reason, TooLarge, Unprocessable

PIXEL_RULE = "pixels are integers 0..255"


def parse_json(body: bytes) -> tuple[Any, bool]:
    """The decoded body and whether it may hold booleans (numpy would silently cast them to 0/1)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Unprocessable(f"body is not valid JSON: {exc}", Reason.INVALID_JSON) from None
    return value, b"true" in body or b"false" in body


def _field(value: Any, name: str) -> Any:
    if not isinstance(value, dict) or name not in value:
        raise Unprocessable(f'JSON body must be an object with a "{name}" field', Reason.INVALID_JSON)
    return value[name]


def _show(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "an object"
    text = orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def _problem(value: Any, where: str, shape: tuple[int, int]) -> str | None:
    """What is wrong with a pixels value and where, by walking it (error path and boolean guard only)."""
    height, width = shape
    layout = f"{height} rows of {width} integers or a flat list of {height * width}"
    if not isinstance(value, list):
        return f"{where} must be {layout}, got {_show(value)}"
    if len(value) == height and any(isinstance(row, list) for row in value):
        cells = []
        for i, row in enumerate(value):
            if not isinstance(row, list) or len(row) != width:
                got = f"{len(row)} values" if isinstance(row, list) else _show(row)
                return f"{where}[{i}] must be a row of {width} integers, got {got}"
            cells.extend((f"{where}[{i}][{j}]", cell) for j, cell in enumerate(row))
    elif len(value) == height * width:
        cells = [(f"{where}[{i}]", cell) for i, cell in enumerate(value)]
    else:
        return f"{where} must be {layout}, got a list of {len(value)} values"
    for at, cell in cells:
        if not (type(cell) is int or (type(cell) is float and cell.is_integer())) or not 0 <= cell <= 255:
            return f"{at} is {_show(cell)}; {PIXEL_RULE}"
    return None


def _as_pixels(value: Any, shape: tuple[int, int]) -> np.ndarray | None:
    """Fast path for well-formed pixels, None when anything is off. bytes() takes exactly the integers
    0..255 (and booleans, which the caller rules out first); it is 3x faster than numpy on nested lists."""
    height, width = shape
    if not isinstance(value, list):
        return None
    if len(value) == height and all(isinstance(row, list) and len(row) == width for row in value):
        rows = value
    elif len(value) == height * width:
        rows = [value]
    else:
        return None
    try:
        data = b"".join(map(bytes, rows))
    except (TypeError, ValueError):
        return None
    return np.frombuffer(data, dtype=np.uint8).reshape(1, height, width)


def pixels(value: Any, where: str, shape: tuple[int, int], may_have_bools: bool) -> np.ndarray:
    """One pixels value (28x28 nested or 784 flat) as uint8 [1, h, w]."""
    if may_have_bools and (problem := _problem(value, where, shape)):
        raise Unprocessable(problem, Reason.INVALID_PIXELS)
    array = _as_pixels(value, shape)
    if array is None:  # not the fast path's exact ints: integral floats such as 13.0 (JSON Schema integers)
        if problem := _problem(value, where, shape):
            raise Unprocessable(problem, Reason.INVALID_PIXELS)
        array = np.asarray(value, dtype=np.float64).astype(np.uint8).reshape(1, *shape)
    return array


def single_json(body: bytes, shape: tuple[int, int]) -> np.ndarray:
    """`{"pixels": ...}` -> uint8 [1, h, w]."""
    value, may_have_bools = parse_json(body)
    return pixels(_field(value, "pixels"), "pixels", shape, may_have_bools)


def batch_json(body: bytes, shape: tuple[int, int], max_items: int) -> np.ndarray:
    """`{"instances": [pixels, ...]}` -> uint8 [n, h, w]."""
    value, may_have_bools = parse_json(body)
    instances = _field(value, "instances")
    if not isinstance(instances, list) or not instances:
        raise Unprocessable('"instances" must be a non-empty list of pixels', Reason.INVALID_PIXELS)
    check_count(len(instances), max_items)
    return np.concatenate(
        [pixels(item, f"instances[{i}]", shape, may_have_bools) for i, item in enumerate(instances)]
    )


def batch_raw(body: bytes, shape: tuple[int, int], max_items: int) -> np.ndarray:
    """application/octet-stream: n x h x w uint8 bytes, row-major -> uint8 [n, h, w]."""
    height, width = shape
    size = height * width
    if not body or len(body) % size:
        raise Unprocessable(
            f"octet-stream body of {len(body)} bytes is not a non-zero multiple of {size} "
            f"({height}x{width} uint8 images)",
            Reason.INVALID_PIXELS,
        )
    check_count(len(body) // size, max_items)
    return np.frombuffer(body, dtype=np.uint8).reshape(-1, height, width)


def check_count(n: int, max_items: int) -> None:
    if n > max_items:
        raise too_many(str(n), max_items)


def too_many(count: str, max_items: int) -> TooLarge:
    return TooLarge(f"batch of {count} images exceeds the limit of {max_items}", Reason.BATCH_TOO_LARGE)
