"""What the OpenAPI document says beyond what FastAPI infers from the routes: the error responses each route
can give (one JSON shape for all of them), the X-Request-ID header on every response, and the pixel
schemas. schemathesis checks the document against a real server (tests/system/test_openapi.py)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from service.errors import (
    ApiError,
    BadRequest,
    Busy,
    Forbidden,
    NotFound,
    Timeout,
    TooLarge,
    Unauthorized,
    Unprocessable,
    Unsupported,
)


class ErrorBody(BaseModel):
    """Every refusal and failure."""

    error: str = Field(description="what is wrong, and what the client can do about it")
    request_id: str = Field(description="the request's X-Request-ID, to find it in the server's logs")


_DESCRIPTIONS: dict[type[ApiError], str] = {
    BadRequest: "malformed request (KServe V2 answers every invalid request with 400)",
    Unauthorized: "MNIST_API_KEY is set and `Authorization: Bearer <key>` is missing or wrong",
    Forbidden: "the model repository API is disabled (MNIST_ADMIN_KEY is not set)",
    NotFound: "unknown model name or version",
    TooLarge: "body over MNIST_MAX_BODY_BYTES, more than MNIST_MAX_BATCH_ITEMS images, or an image over "
    "MNIST_MAX_IMAGE_PIXELS",
    Unsupported: "content type or Content-Encoding not accepted here, or an image format other than PNG, "
    "JPEG, BMP, GIF, WebP or TIFF",
    Unprocessable: "invalid input; the message says what and where (including `no digit found`)",
    Busy: "the model is loading, or the batching or decoding queue is full: retry after Retry-After seconds",
    Timeout: "the request did not finish within MNIST_REQUEST_TIMEOUT_S",
}
_HEADERS: dict[type[ApiError], dict[str, Any]] = {
    Unauthorized: {"WWW-Authenticate": {"required": True, "schema": {"type": "string", "enum": ["Bearer"]}}},
    Busy: {
        "Retry-After": {
            "required": True,
            "description": "seconds to wait before retrying",
            "schema": {"type": "integer", "minimum": 0},
        }
    },
}
REQUEST_ID_HEADER = {
    "required": True,
    "description": "the client's X-Request-ID if it sent a sane one (1-128 of A-Z a-z 0-9 . _ : = + / @ -), "
    "else a new one",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:=+/@-]{1,128}$"},
}


def error_responses(*kinds: type[ApiError]) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: the error classes it can raise, each documented with the error body."""
    return {
        kind.status: {
            "model": ErrorBody,
            "description": _DESCRIPTIONS[kind],
            "headers": _HEADERS.get(kind, {}),
        }
        for kind in kinds
    }


def document(app: FastAPI) -> None:
    """Every response of every operation carries X-Request-ID (service/app.py's Observe sets it). The 422
    FastAPI adds to every route with parameters goes: none of ours has a parameter FastAPI validates, and
    its `{"detail": [...]}` body is not what a client gets (routes that can answer 422 say so)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema["paths"].values():
                for operation in operations.values():
                    responses = operation["responses"]
                    if "HTTPValidationError" in str(responses.get("422")):
                        del responses["422"]
                    for response in responses.values():
                        response.setdefault("headers", {})["X-Request-ID"] = REQUEST_ID_HEADER
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# Pixels: MNIST's 28 x 28, in rows or flat, 0 = background. A single image needs ink (all-background
# pixels get 422 "no digit found"); in a batch a blank one is answered is_digit false.
SIDE = 28
PIXEL = {"type": "integer", "minimum": 0, "maximum": 255}
INK = {"type": "integer", "minimum": 1, "maximum": 255}
ROW = {"type": "array", "items": PIXEL, "minItems": SIDE, "maxItems": SIDE}
PIXELS = {
    "description": f"{SIDE} rows of {SIDE} integers 0..255, or {SIDE * SIDE} of them flat, row-major; "
    "0 = background (MNIST convention)",
    "oneOf": [{**ROW, "items": ROW}, {**ROW, "minItems": SIDE * SIDE, "maxItems": SIDE * SIDE}],
}
INKED_PIXELS = {
    "description": PIXELS["description"] + "; at least one pixel is not 0",
    "oneOf": [
        {**ROW, "items": ROW, "contains": {**ROW, "contains": INK}},
        {**ROW, "minItems": SIDE * SIDE, "maxItems": SIDE * SIDE, "contains": INK},
    ],
}
