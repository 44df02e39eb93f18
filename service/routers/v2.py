"""Open Inference Protocol (KServe V2) over HTTP, for Triton/KServe clients such as tritonclient.

Same model, batcher, limits, metrics and errors as /predict: this router only translates the wire format.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from service.codecs import INLINE_PARSE_BYTES
from service.dependencies import ready_model, require_api_key, served_model
from service.errors import NotFound, Reason
from service.model import ServedModel
from service.runtime import ModelRuntime
from service.settings import Settings
from service.v2_protocol import (
    EXTENSIONS,
    HEADER_LENGTH,
    InferRequest,
    Signature,
    decompress,
    encode_infer_response,
    parse_infer_request,
)

router = APIRouter(prefix="/v2", tags=["KServe V2"])

SERVER_NAME = "mnist-serving"
PLATFORM = "onnxruntime_onnx"
AUTH = [Depends(require_api_key)]  # like /predict; health and metadata stay open for probes
INFER_DOC = {
    "requestBody": {
        "required": True,
        "description": (
            f"JSON inference request, or a JSON header of {HEADER_LENGTH} bytes followed by raw little-endian"
            " tensors (binary tensor extension)."
        ),
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": ["inputs"]},
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
    if version != model.version:
        message = f"unknown version {version!r} of model {model.name!r}; available: [{model.version!r}]"
        raise NotFound(message, Reason.UNKNOWN_MODEL)


VERSIONED = [Depends(served_version)]


def signature(runtime: ModelRuntime) -> Signature:
    """What the codec needs, read from the loaded model."""
    outputs = {spec.name: spec.datatype for spec in runtime.outputs}
    return Signature(runtime.input.name, runtime.item_shape, outputs, runtime.from_pixels)


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


@router.get("/health/ready", dependencies=[Depends(ready_model)])
async def server_ready() -> dict[str, bool]:
    """200 once the model is loaded and warm, else 503."""
    return {"ready": True}


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready", dependencies=VERSIONED)
async def model_ready(model: ModelDep) -> dict[str, Any]:
    """200 when this model (version) is ready; 404 for another model, 503 while loading."""
    return {"name": model.name, "ready": True}


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}", dependencies=VERSIONED)
async def model_metadata(model: ModelDep) -> dict[str, Any]:
    """Name, versions, platform and the input/output spec read from the ONNX model (-1 = batch); the
    digit_score threshold under `parameters`."""
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": PLATFORM,
        "parameters": {"digit_threshold": model.threshold},
        "inputs": [spec.as_dict() for spec in model.runtime.inputs],
        "outputs": [spec.as_dict() for spec in model.runtime.outputs],
    }


@router.post("/models/{name}/infer", dependencies=AUTH, openapi_extra=INFER_DOC)
@router.post(
    "/models/{name}/versions/{version}/infer", dependencies=AUTH + VERSIONED, openapi_extra=INFER_DOC
)
async def infer(request: Request, model: ModelDep) -> Response:
    """Inference on a batch of images: FP32 in [0, 1] or UINT8 0..255, shaped [N, 1, 28, 28] or [N, 784];
    JSON or binary tensors in and out."""
    spec = signature(model.runtime)
    body = await request.body()
    compressed = request.headers.get("content-encoding", "identity").strip().lower() != "identity"
    if len(body) <= INLINE_PARSE_BYTES and not compressed:
        parsed = _parse(body, request.headers, spec, request.app.state.settings)
    else:  # CPU work off the event loop, like inference: a small gzip body can inflate to megabytes
        parsed = await run_in_threadpool(_parse, body, request.headers, spec, request.app.state.settings)
    results = await model.infer(parsed.images)
    content, headers = encode_infer_response(parsed, results, spec, name=model.name, version=model.version)
    return Response(content, headers=headers)
