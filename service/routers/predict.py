"""POST /predict and /predict/batch: pixels as JSON, image files, or raw uint8 bytes."""

from __future__ import annotations

from typing import Annotated, Any

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
from service.errors import Busy, Invalid, Reason, Timeout, TooLarge, Unauthorized, Unsupported
from service.media import Accepts, Body, raw_images
from service.model import Classification
from service.openapi import INKED_PIXELS, PIXELS, error_responses
from service.repository import ModelRepository

router = APIRouter(tags=["predict"])


Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class ModelRef(BaseModel):
    name: str
    version: str


class Prediction(BaseModel):
    digit: int = Field(ge=0, le=9, description="the most likely digit (trust it only if is_digit)")
    confidence: Probability = Field(description="its probability, calibrated on digits")
    probabilities: list[Probability] = Field(
        min_length=10, max_length=10, description="digits 0..9, summing to 1"
    )
    is_digit: bool = Field(description="whether the input is a digit at all (digit_score >= the threshold)")
    digit_score: Probability | None = Field(
        description="the model's probability that the input is a digit (null: the model cannot tell)"
    )
    model: ModelRef = Field(description="the model that answered")
    preprocessed: list[list[Annotated[int, Field(ge=0, le=255)]]] | None = Field(
        None, description="with ?debug=true: the 28 x 28 image the model saw"
    )


class Predictions(BaseModel):
    predictions: list[Prediction] = Field(description="one per image, in the order sent")


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
            message = f"multipart body has no file field {field!r} (a part with a filename)"
            raise Invalid(message, Reason.INVALID_MULTIPART)
        codecs.check_count(len(uploads), max_items)
        return [await upload.read() for upload in uploads]
    finally:
        await form.close()


async def _images(request: Request, files: list[bytes], *, batch: bool = False) -> np.ndarray:
    """Image files -> MNIST-normalized uint8 [n, 28, 28], decoded off the event loop (a tiny one inline); the
    work stops if the client goes."""
    decoder: ImageDecoder = request.app.state.decoder
    return await decoder.decode(files, request.is_disconnected, batch=batch)


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


INSTANCES = {
    "type": "array",
    "items": PIXELS,
    "minItems": 1,
    "description": "at most MNIST_MAX_BATCH_ITEMS (413 beyond)",
}
SINGLE = Accepts(
    Body("application/json", _object("pixels", INKED_PIXELS), _pixels),
    Body("multipart/form-data", _object("file", IMAGE_DOC), _file, "field file", parts={"file": "image/*"}),
    Body("image/*", IMAGE_DOC, _image),
)
BATCH = Accepts(
    Body("application/json", _object("instances", INSTANCES), _instances),
    Body(
        "multipart/form-data",
        _object("files", {"type": "array", "items": IMAGE_DOC, "minItems": 1}),
        _batch_files,
        "field files",
        parts={"files": "image/*"},
    ),
    Body(
        "application/octet-stream",
        {**IMAGE_DOC, "description": "N x 784 uint8 bytes, row-major, 0 = background"},
        _raw,
        least_images=raw_images,
    ),
)
# What the predict routes can refuse, in the order they check: key, readiness, content type, queue room,
# then the body.
REFUSALS = error_responses(Unauthorized, Busy, Unsupported, TooLarge, Invalid, Timeout)


async def _admit(request: Request, accepts: Accepts) -> tuple[ModelRepository, Body]:
    """API key, readiness, content type and room in the batching queue for as many images as the headers
    promise, all before the body is read: a refusal under overload costs no read or parse. Inline: on
    this hot path FastAPI's dependency solver would cost more than decoding the JSON pixels."""
    await require_api_key(request)
    models = repository(request)
    model = models.get()  # 503 while loading
    body = accepts.select(request)
    length = request.headers.get("content-length")  # BodyLimit has checked that it is a number
    height, width = model.runtime.image_shape
    await model.batcher.room(body.least_images(int(length) if length else None, height * width))
    return models, body


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


async def _classify(request: Request, models: ModelRepository, images: np.ndarray) -> list[dict[str, Any]]:
    """On the model serving now; a reload meanwhile lets this request finish on it."""
    with models.lease() as model:
        request.state.model_version = model.version  # for the access log (service/app.py's Observe)
        return _predictions(await model.classify(images))


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


@router.post(
    "/predict",
    response_model=Prediction,
    responses=REFUSALS,
    openapi_extra={**SINGLE.openapi(), "parameters": [DEBUG_DOC]},
)
async def predict(request: Request) -> Response:
    """One digit from JSON pixels, a multipart `file`, or a raw image/* body. `?debug=true` adds the
    28x28 image the model saw."""
    models, body = await _admit(request, SINGLE)
    debug = bool(request.scope["query_string"]) and _flag(request.query_params.get("debug", "false"), "debug")
    images = await body.read(request, models.get().runtime.image_shape)
    if not images.any():  # an empty image has no answer; a confident guess at one would mislead
        raise Invalid("no digit found: every pixel of the image is 0 (background)", Reason.NO_DIGIT)
    (result,) = await _classify(request, models, images)
    if debug:
        result["preprocessed"] = images[0]
    return _json(result)


@router.post("/predict/batch", response_model=Predictions, responses=REFUSALS, openapi_extra=BATCH.openapi())
async def predict_batch(request: Request) -> Response:
    """Many digits, in order: JSON `instances`, multipart `files`, or octet-stream N x 784 uint8. A blank
    image or one that is not a digit comes back with is_digit false; it never fails the batch."""
    models, body = await _admit(request, BATCH)
    images = await body.read(request, models.get().runtime.image_shape)
    return _json({"predictions": await _classify(request, models, images)})
