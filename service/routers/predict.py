"""POST /predict and /predict/batch: pixels as JSON, image files, or raw uint8 bytes."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from service import tracing
from service.bodies import BATCH, SINGLE, Accepts, Body
from service.dependencies import lease, require_api_key
from service.errors import Busy, Reason, Timeout, TooLarge, Unauthorized, Unprocessable, Unsupported
from service.model import Classification, ServedModel
from service.openapi import error_responses

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


DEBUG_DOC = {
    "name": "debug",
    "in": "query",
    "schema": {"type": "boolean", "default": False},
    "description": "add the 28x28 image the model saw",
}


# What the predict routes can refuse, in the order they check: key, readiness, content type, queue room,
# then the body.
REFUSALS = error_responses(Unauthorized, Busy, Unsupported, TooLarge, Unprocessable, Timeout)


async def _admit(request: Request, model: ServedModel, accepts: Accepts) -> Body:
    """Content type and room in the model's queue for as many images as the headers promise, before the
    body is read: a refusal under overload costs no read or parse. Inline: on this hot path FastAPI's
    dependency solver would cost more than decoding the JSON pixels."""
    body = accepts.select(request)
    length = request.headers.get("content-length")  # BodyLimit has checked that it is a number
    height, width = model.image_shape
    await model.admit(body.least_images(int(length) if length else None, height * width))
    request.state.model_version = model.version  # for the access record (service/middleware.py)
    return body


def _query_bool(request: Request, name: str) -> bool:
    """A true/false query parameter (absent: false)."""
    if not request.scope["query_string"]:
        return False
    value = request.query_params.get(name, "false").lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise Unprocessable(f"query parameter {name} must be true or false, got {value!r}", Reason.VALIDATION)


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
    28x28 image the model saw. One model serves the whole request, even if a reload swaps it meanwhile."""
    await require_api_key(request)
    with lease(request) as model:
        body = await _admit(request, model, SINGLE)
        debug = _query_bool(request, "debug")
        with tracing.span("decode"):
            images = await body.read(request, model.image_shape)
        if not images.any():  # an empty image has no answer; a confident guess at one would mislead
            raise Unprocessable("no digit found: every pixel of the image is 0 (background)", Reason.NO_DIGIT)
        (result,) = _predictions(await model.classify(images))
    if debug:
        result["preprocessed"] = images[0]
    return _json(result)


@router.post("/predict/batch", response_model=Predictions, responses=REFUSALS, openapi_extra=BATCH.openapi())
async def predict_batch(request: Request) -> Response:
    """Many digits, in order: JSON `instances`, multipart `files`, or octet-stream N x 784 uint8. A blank
    image or one that is not a digit comes back with is_digit false; it never fails the batch."""
    await require_api_key(request)
    with lease(request) as model:
        body = await _admit(request, model, BATCH)
        with tracing.span("decode"):
            images = await body.read(request, model.image_shape)
        return _json({"predictions": _predictions(await model.classify(images))})
