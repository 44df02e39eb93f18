"""POST /predict and /predict/batch: pixels as JSON, image files, or raw uint8 bytes."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from service import codecs
from service.decoding import ImageDecoder
from service.dependencies import repository, require_api_key
from service.errors import Invalid, Reason
from service.media import Accepts, Body
from service.model import Classification
from service.repository import ModelRepository

router = APIRouter(tags=["predict"])


class ModelRef(BaseModel):
    name: str
    version: str


class Prediction(BaseModel):
    digit: int = Field(description="the most likely digit (trust it only if is_digit)")
    confidence: float = Field(description="its probability, calibrated on digits")
    probabilities: list[float] = Field(description="10 probabilities, digits 0..9")
    is_digit: bool = Field(description="whether the input is a digit at all (digit_score >= the threshold)")
    digit_score: float | None = Field(description="the model's probability that the input is a digit")
    model: ModelRef
    preprocessed: list[list[int]] | None = Field(None, description="?debug=true: the 28x28 the model saw")


class Predictions(BaseModel):
    predictions: list[Prediction]


PIXELS_DOC = {"type": "array", "description": "28 rows of 28 or 784 flat integers 0..255, 0 = background"}
IMAGE_DOC = {"type": "string", "format": "binary"}
DEBUG_DOC = {
    "name": "debug",
    "in": "query",
    "schema": {"type": "boolean", "default": False},
    "description": "add the 28x28 image the model saw",
}


async def _files(request: Request, field: str, max_items: int) -> list[bytes]:
    """The uploaded files of a multipart field (bounded by the body limit and max_items)."""
    try:
        form = await request.form(max_files=max_items + 1, max_fields=64)
    except HTTPException as exc:  # Starlette reports malformed or oversized multipart bodies this way
        if str(exc.detail).startswith("Too many files"):
            raise codecs.too_many(f"more than {max_items}", max_items) from None
        raise Invalid(f"invalid multipart body: {exc.detail}", Reason.INVALID_MULTIPART) from None
    try:
        uploads = [item for item in form.getlist(field) if isinstance(item, UploadFile)]
        if not uploads:
            raise Invalid(f"multipart body has no file field {field!r}", Reason.INVALID_MULTIPART)
        codecs.check_count(len(uploads), max_items)
        return [await upload.read() for upload in uploads]
    finally:
        await form.close()


async def _images(request: Request, files: list[bytes], *, batch: bool = False) -> np.ndarray:
    """Image files -> MNIST-normalized uint8 [n, 28, 28], decoded off the event loop."""
    decoder: ImageDecoder = request.app.state.decoder
    return await decoder.decode(files, batch=batch)


def _max_items(request: Request) -> int:
    return request.app.state.settings.max_batch_items


async def _pixels(request: Request, shape: tuple[int, int]) -> np.ndarray:
    return codecs.single_json(await request.body(), shape)


async def _file(request: Request, shape: tuple[int, int]) -> np.ndarray:
    return await _images(request, await _files(request, "file", 1))


async def _image(request: Request, shape: tuple[int, int]) -> np.ndarray:
    return await _images(request, [await request.body()])


async def _instances(request: Request, shape: tuple[int, int]) -> np.ndarray:
    body = await request.body()
    if len(body) <= codecs.INLINE_PARSE_BYTES:
        return codecs.batch_json(body, shape, _max_items(request))
    return await run_in_threadpool(codecs.batch_json, body, shape, _max_items(request))


async def _batch_files(request: Request, shape: tuple[int, int]) -> np.ndarray:
    return await _images(request, await _files(request, "files", _max_items(request)), batch=True)


async def _raw(request: Request, shape: tuple[int, int]) -> np.ndarray:
    return codecs.batch_raw(await request.body(), shape, _max_items(request))


def _object(field: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {field: schema}, "required": [field]}


SINGLE = Accepts(
    Body("application/json", _object("pixels", PIXELS_DOC), _pixels),
    Body("multipart/form-data", _object("file", IMAGE_DOC), _file, "field file"),
    Body("image/*", IMAGE_DOC, _image),
)
BATCH = Accepts(
    Body("application/json", _object("instances", {"type": "array", "items": PIXELS_DOC}), _instances),
    Body(
        "multipart/form-data",
        _object("files", {"type": "array", "items": IMAGE_DOC}),
        _batch_files,
        "field files",
    ),
    Body(
        "application/octet-stream",
        {**IMAGE_DOC, "description": "N x 784 uint8 bytes, row-major, 0 = background"},
        _raw,
    ),
)


async def _admit(request: Request) -> ModelRepository:
    """API key and readiness, checked inline: on this hot path FastAPI's dependency solver would cost
    more than decoding the JSON pixels."""
    await require_api_key(request)
    models = repository(request)
    models.get()  # 503 while loading, before the body is read
    return models


def _flag(value: str, name: str) -> bool:
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise Invalid(f"query parameter {name} must be true or false, got {value!r}", Reason.VALIDATION)


def _predictions(result: Classification) -> list[dict[str, Any]]:
    """One response object per image, in order."""
    ref = {"name": result.name, "version": result.version}
    digits = result.probabilities.argmax(axis=1).tolist()
    scores = [None] * len(digits) if result.digit_score is None else result.digit_score.tolist()
    return [
        {
            "digit": digit,
            "confidence": row[digit],
            "probabilities": row,
            "is_digit": is_digit,
            "digit_score": score,
            "model": ref,
        }
        for digit, row, is_digit, score in zip(
            digits, result.probabilities, result.is_digit.tolist(), scores, strict=True
        )
    ]


async def _classify(models: ModelRepository, images: np.ndarray) -> list[dict[str, Any]]:
    """On the model serving now; a reload meanwhile lets this request finish on it."""
    with models.lease() as model:
        return _predictions(await model.classify(images))


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


@router.post(
    "/predict", response_model=Prediction, openapi_extra={**SINGLE.openapi(), "parameters": [DEBUG_DOC]}
)
async def predict(request: Request) -> Response:
    """One digit from JSON pixels, a multipart `file`, or a raw image/* body. `?debug=true` adds the
    28x28 image the model saw."""
    models = await _admit(request)
    debug = bool(request.scope["query_string"]) and _flag(request.query_params.get("debug", "false"), "debug")
    images = await SINGLE.reader(request)(request, models.get().runtime.image_shape)
    if not images.any():  # an empty image has no answer; a confident guess at one would mislead
        raise Invalid("no digit found: every pixel of the image is 0 (background)", Reason.NO_DIGIT)
    (result,) = await _classify(models, images)
    if debug:
        result["preprocessed"] = images[0]
    return _json(result)


@router.post("/predict/batch", response_model=Predictions, openapi_extra=BATCH.openapi())
async def predict_batch(request: Request) -> Response:
    """Many digits, in order: JSON `instances`, multipart `files`, or octet-stream N x 784 uint8. A blank
    image or one that is not a digit comes back with is_digit false; it never fails the batch."""
    models = await _admit(request)
    images = await BATCH.reader(request)(request, models.get().runtime.image_shape)
    return _json({"predictions": await _classify(models, images)})
