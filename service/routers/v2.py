"""Open Inference Protocol (KServe V2) over HTTP, for Triton/KServe clients such as tritonclient.

Same model, batcher, limits, metrics and errors as /predict: this router only translates the wire format.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.datastructures import Headers

from service import offload, tracing
from service.dependencies import ready_model, require_api_key, served_model
from service.errors import BadRequest, Busy, NotFound, Timeout, TooLarge, Unauthorized, Unsupported
from service.model import ServedModel
from service.openapi import error_responses
from service.settings import Settings
from service.v2.core import INPUT_TYPES, InferRequest, Signature, check_model
from service.v2.rest import (
    EXTENSIONS,
    HEADER_LENGTH,
    decompress,
    encode_infer_response,
    least_images,
    parse_infer_request,
)

router = APIRouter(prefix="/v2", tags=["KServe V2"])

SERVER_NAME = "mnist-serving"
AUTH = [Depends(require_api_key)]  # like /predict; health and metadata stay open for probes
# Tensor parameters this server refuses (400), and one that needs binary data after a JSON header.
_UNSUPPORTED = {"not": {"enum": ["shared_memory_region", "classification"]}}
_NOT_IN_JSON = {"not": {"enum": ["shared_memory_region", "classification", "binary_data_size"]}}
INPUT_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string", "description": "the model's input name (GET /v2/models/{name})"},
        "shape": {
            "type": "array",
            "items": {"type": "integer", "minimum": 1},
            "minItems": 2,
            "maxItems": 4,
            "description": "[N, 784] or [N, 1, 28, 28]; N at most MNIST_MAX_BATCH_ITEMS",
        },
        "datatype": {"enum": list(INPUT_TYPES)},
        "data": {
            "type": "array",
            "items": {"type": "number", "minimum": 0, "maximum": 255},
            "description": "N x 784 values, row-major: FP32 in [0, 1], UINT8 integers 0..255",
        },
        "parameters": {"type": ["object", "null"], "propertyNames": _NOT_IN_JSON},
    },
}
INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": ["string", "null"], "description": "echoed in the response"},
        "parameters": {
            "type": ["object", "null"],
            "properties": {"binary_data_output": {"type": "boolean"}},
        },
        "inputs": {"type": "array", "items": INPUT_TENSOR, "minItems": 1, "maxItems": 1},
        "outputs": {
            "type": ["array", "null"],
            "description": "none or null: every output",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "description": "an output of the model, at most once"},
                    "parameters": {
                        "type": ["object", "null"],
                        "properties": {"binary_data": {"type": "boolean"}},
                        "propertyNames": _UNSUPPORTED,
                    },
                },
            },
        },
    },
}
INFER_DOC = {
    "requestBody": {
        "required": True,
        "description": (
            f"JSON inference request, or a JSON header of {HEADER_LENGTH} bytes followed by raw little-endian"
            " tensors (binary tensor extension)."
        ),
        "content": {
            "application/json": {
                "schema": INFER_REQUEST,
                "example": {
                    "inputs": [{"name": "image", "shape": [1, 784], "datatype": "UINT8", "data": [0] * 784}],
                    "outputs": [{"name": "probabilities"}],
                },
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


ModelDep = Annotated[ServedModel, Depends(served_model)]


async def served_version(version: str, model: ModelDep) -> None:
    """/versions/{version} routes: 404 unless it is the loaded model's version."""
    check_model(model, model.name, version)


VERSIONED = [Depends(served_version)]


def _parse(body: bytes, headers: Headers, spec: Signature, settings: Settings) -> InferRequest:
    body = decompress(body, headers.get("content-encoding"), settings.max_body_bytes)
    return parse_infer_request(body, headers.get(HEADER_LENGTH), spec, settings.max_batch_items)


@router.get("")
async def server_metadata(request: Request) -> dict[str, Any]:
    """Server name, version and the protocol extensions it implements."""
    return {"name": SERVER_NAME, "version": request.app.version, "extensions": EXTENSIONS}


@router.get("/health/live")
async def server_live() -> dict[str, bool]:
    """200 while the process serves HTTP (the model may still be loading)."""
    return {"live": True}


@router.get("/health/ready", dependencies=[Depends(ready_model)], responses=error_responses(Busy))
async def server_ready() -> dict[str, bool]:
    """200 once the model is loaded and warm, else 503."""
    return {"ready": True}


MODEL_ERRORS = error_responses(NotFound, Busy)


@router.get("/models/{name}/ready", responses=MODEL_ERRORS)
@router.get("/models/{name}/versions/{version}/ready", dependencies=VERSIONED, responses=MODEL_ERRORS)
async def model_ready(model: ModelDep) -> dict[str, Any]:
    """200 when this model (version) is ready; 404 for another model, 503 while loading."""
    return {"name": model.name, "ready": True}


@router.get("/models/{name}", responses=MODEL_ERRORS)
@router.get("/models/{name}/versions/{version}", dependencies=VERSIONED, responses=MODEL_ERRORS)
async def model_metadata(model: ModelDep) -> dict[str, Any]:
    """Name, versions, platform and the input/output spec read from the ONNX model (-1 = batch); the
    digit_score threshold under `parameters`."""
    return model.metadata()


class OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[float] | None = Field(None, description="row-major values, unless sent as binary data")
    parameters: dict[str, int] | None = Field(None, description="binary_data_size of a binary output")


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = Field(None, description="the request's id, if it sent one")
    outputs: list[OutputTensor]


INFER_RESPONSES = {
    200: {
        "description": f"JSON, or with binary outputs a JSON header of {HEADER_LENGTH} bytes and the tensors",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    **error_responses(BadRequest, Unauthorized, NotFound, TooLarge, Unsupported, Busy, Timeout),
}


@router.post(
    "/models/{name}/infer",
    dependencies=AUTH,
    response_model=InferResponse,
    responses=INFER_RESPONSES,
    openapi_extra=INFER_DOC,
)
@router.post(
    "/models/{name}/versions/{version}/infer",
    dependencies=AUTH + VERSIONED,
    response_model=InferResponse,
    responses=INFER_RESPONSES,
    openapi_extra=INFER_DOC,
)
async def infer(request: Request, model: ModelDep) -> Response:
    """Inference on a batch of images: FP32 in [0, 1] or UINT8 0..255, shaped [N, 1, 28, 28] or [N, 784];
    JSON or binary tensors in and out."""
    spec = model.signature
    compressed = request.headers.get("content-encoding", "identity").strip().lower() != "identity"
    length = request.headers.get("content-length")  # BodyLimit has checked that it is a number
    if length and not compressed:  # room in the queue for what the headers promise, before reading
        await model.admit(least_images(int(length), request.headers.get(HEADER_LENGTH), spec))
    request.state.model_version = model.version  # for the access record (service/middleware.py)
    settings = request.app.state.settings
    body = await request.body()
    with tracing.span("parse"):
        parsed = await offload.parse(body, _parse, request.headers, spec, settings, inline=not compressed)
    results = await model.infer(parsed.images)
    content, headers = encode_infer_response(parsed, results, spec, name=model.name, version=model.version)
    return Response(content, headers=headers)
