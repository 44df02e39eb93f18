"""POST /predict and /predict/batch: pixels as JSON, image files, or raw uint8 bytes."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from service import codecs
from service.batching import Batcher
from service.decoding import ImageDecoder
from service.dependencies import get_batcher, require_api_key
from service.errors import ApiError, Invalid, Reason, Unsupported
from service.runtime import PROBABILITIES

router = APIRouter(tags=["predict"])


class ModelRef(BaseModel):
    name: str
    version: str


class Prediction(BaseModel):
    digit: int
    confidence: float
    probabilities: list[float]
    model: ModelRef
    preprocessed: list[list[int]] | None = None


class Predictions(BaseModel):
    predictions: list[Prediction]


def _body_doc(*media: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    content = {kind: {"schema": schema} for kind, schema in media}
    return {"requestBody": {"required": True, "content": content}}


PIXELS_DOC = {"type": "array", "description": "28 rows of 28 or 784 flat integers 0..255, 0 = background"}
IMAGE_DOC = {"type": "string", "format": "binary"}
DEBUG_DOC = {
    "name": "debug",
    "in": "query",
    "schema": {"type": "boolean", "default": False},
    "description": "add the 28x28 image the model saw",
}
SINGLE_DOC = _body_doc(
    ("application/json", {"type": "object", "properties": {"pixels": PIXELS_DOC}, "required": ["pixels"]}),
    ("multipart/form-data", {"type": "object", "properties": {"file": IMAGE_DOC}, "required": ["file"]}),
    ("image/*", IMAGE_DOC),
)
INSTANCES_DOC = {"type": "array", "items": PIXELS_DOC}
FILES_DOC = {"type": "array", "items": IMAGE_DOC}
RAW_DOC = {**IMAGE_DOC, "description": "N x 784 uint8 bytes, row-major, 0 = background"}
BATCH_DOC = _body_doc(
    (
        "application/json",
        {"type": "object", "properties": {"instances": INSTANCES_DOC}, "required": ["instances"]},
    ),
    ("multipart/form-data", {"type": "object", "properties": {"files": FILES_DOC}, "required": ["files"]}),
    ("application/octet-stream", RAW_DOC),
)


async def _admit(request: Request) -> Batcher:
    """API key and readiness, checked inline: on this hot path FastAPI's dependency solver would cost
    more than decoding the JSON pixels."""
    await require_api_key(request)
    return await get_batcher(request)


def _flag(value: str, name: str) -> bool:
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise Invalid(f"query parameter {name} must be true or false, got {value!r}", Reason.VALIDATION)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def _unsupported(media_type: str, accepted: str) -> ApiError:
    return Unsupported(f"unsupported content type {media_type or '(none)'!r}; send {accepted}")


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


async def _images(request: Request, files: list[bytes]) -> np.ndarray:
    """Image files -> MNIST-normalized uint8 [n, 28, 28], decoded off the event loop (a tiny one inline); the
    work stops if the client goes."""
    decoder: ImageDecoder = request.app.state.decoder
    return await decoder.decode(files, request.is_disconnected)


async def _predictions(batcher: Batcher, images: np.ndarray) -> list[dict[str, Any]]:
    """Run uint8 images [n, h, w] through the batcher; one response object per image, in order."""
    blank = np.flatnonzero(images.reshape(len(images), -1).max(axis=1) == 0)
    if blank.size:  # an empty image has no answer; a confident guess at one would mislead
        where = "the image" if len(images) == 1 else f"images {blank[:10].tolist()}"
        raise Invalid(f"no digit found: every pixel of {where} is 0 (background)", Reason.NO_DIGIT)
    runtime = batcher.runtime
    probabilities = (await batcher.predict(runtime.from_pixels(images)))[PROBABILITIES]
    model = {"name": runtime.name, "version": runtime.version}
    digits = probabilities.argmax(axis=1).tolist()
    return [
        {"digit": digit, "confidence": row[digit], "probabilities": row, "model": model}
        for digit, row in zip(digits, probabilities, strict=True)
    ]


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


@router.post("/predict", response_model=Prediction, openapi_extra={**SINGLE_DOC, "parameters": [DEBUG_DOC]})
async def predict(request: Request) -> Response:
    """One digit from JSON pixels, a multipart `file`, or a raw image/* body. `?debug=true` adds the
    28x28 image the model saw."""
    batcher = await _admit(request)
    debug = bool(request.scope["query_string"]) and _flag(request.query_params.get("debug", "false"), "debug")
    media_type = _media_type(request)
    shape = batcher.runtime.image_shape
    if media_type == "application/json":
        images = codecs.single_json(await request.body(), shape)
    elif media_type == "multipart/form-data":
        images = await _images(request, await _files(request, "file", 1))
    elif media_type.startswith("image/"):
        images = await _images(request, [await request.body()])
    else:
        raise _unsupported(media_type, "application/json, multipart/form-data (file) or image/*")
    (result,) = await _predictions(batcher, images)
    if debug:
        result["preprocessed"] = images[0]
    return _json(result)


@router.post("/predict/batch", response_model=Predictions, openapi_extra=BATCH_DOC)
async def predict_batch(request: Request) -> Response:
    """Many digits, in order: JSON `instances`, multipart `files`, or octet-stream N x 784 uint8."""
    batcher = await _admit(request)
    settings = request.app.state.settings
    media_type = _media_type(request)
    shape = batcher.runtime.image_shape
    if media_type == "application/json":
        body = await request.body()
        if len(body) <= codecs.INLINE_PARSE_BYTES:
            images = codecs.batch_json(body, shape, settings.max_batch_items)
        else:
            images = await run_in_threadpool(codecs.batch_json, body, shape, settings.max_batch_items)
    elif media_type == "multipart/form-data":
        files = await _files(request, "files", settings.max_batch_items)
        images = await _images(request, files)
    elif media_type == "application/octet-stream":
        images = codecs.batch_raw(await request.body(), shape, settings.max_batch_items)
    else:
        accepted = "application/json, multipart/form-data (files) or application/octet-stream"
        raise _unsupported(media_type, accepted)
    return _json({"predictions": await _predictions(batcher, images)})
