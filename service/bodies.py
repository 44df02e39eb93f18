"""The request bodies the predict routes accept, declared once: each content type with how it is read into
uint8 images [n, h, w], the fewest images its headers promise (admission before the body is read) and its
OpenAPI schema. The lists drive the dispatch on Content-Type, the 415 message, the early queue check and the
OpenAPI request body, so they cannot disagree. Pixels are parsed by service/pixels.py, image files decoded by
the images wing's pool."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from service import offload, pixels
from service.errors import Reason, Unprocessable, Unsupported
from service.images.pool import DecodePool
from service.openapi import INKED_PIXELS, PIXELS

# Reads one accepted body into uint8 images [n, h, w]; `shape` is the model's (h, w).
Reader = Callable[[Request, tuple[int, int]], Awaitable[np.ndarray]]
# The fewest images a body can hold, from its Content-Length (None: not sent) and the pixels per image,
# known before it is read: what the batching queue must have room for.
Counter = Callable[[int | None, int], int]


def one_image(length: int | None, pixels: int) -> int:
    """JSON and images: any non-empty body may hold a single image (whitespace can pad JSON at will)."""
    return 1


def raw_images(length: int | None, pixels: int) -> int:
    """Raw uint8 bytes: exactly length / pixels images."""
    return max(1, (length or 0) // pixels)


@dataclass(frozen=True)
class Body:
    media_type: str  # "image/*" matches every image subtype
    schema: dict[str, Any]
    read: Reader
    note: str = ""  # what else the client must know, e.g. the multipart field name
    least_images: Counter = one_image
    parts: dict[str, str] | None = (
        None  # multipart: the media type of each file field (parts with a filename)
    )

    def matches(self, media_type: str) -> bool:
        if self.media_type.endswith("/*"):
            return media_type.startswith(self.media_type[:-1])
        return media_type == self.media_type

    def __str__(self) -> str:
        return f"{self.media_type} ({self.note})" if self.note else self.media_type

    def openapi(self) -> dict[str, Any]:
        """Its OpenAPI media type object: the schema, and for multipart each file part's media type and that
        it is a file (a part without a filename is a text field)."""
        doc: dict[str, Any] = {"schema": self.schema}
        if self.parts:
            doc["encoding"] = {
                name: {
                    "contentType": kind,
                    "headers": {
                        "Content-Disposition": {
                            "schema": {"type": "string"},
                            "example": f'form-data; name="{name}"; filename="digit.png"',
                        }
                    },
                }
                for name, kind in self.parts.items()
            }
        return doc


class Accepts:
    """The bodies one route takes, in the order the docs list them."""

    def __init__(self, *bodies: Body) -> None:
        self.bodies = bodies

    def select(self, request: Request) -> Body:
        """The body this request's Content-Type declares; 415 naming every accepted type otherwise."""
        media_type = media_type_of(request)
        for body in self.bodies:
            if body.matches(media_type):
                return body
        accepted = ", ".join(str(body) for body in self.bodies)
        raise Unsupported(f"unsupported content type {media_type or '(none)'!r}; send {accepted}")

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI `requestBody` of the route (FastAPI's `openapi_extra`)."""
        content = {body.media_type: body.openapi() for body in self.bodies}
        return {"requestBody": {"required": True, "content": content}}


def media_type_of(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


IMAGE_DOC = {"type": "string", "format": "binary"}


async def _files(request: Request, field: str, max_items: int) -> list[bytes]:
    """The uploaded files of a multipart field (bounded by the body limit and max_items)."""
    try:
        form = await request.form(max_files=max_items + 1, max_fields=64)
    except HTTPException as exc:  # Starlette reports malformed or oversized multipart bodies this way
        if str(exc.detail).startswith("Too many files"):
            raise pixels.too_many(f"more than {max_items}", max_items) from None
        raise Unprocessable(f"invalid multipart body: {exc.detail}", Reason.INVALID_MULTIPART) from None
    try:
        uploads = [item for item in form.getlist(field) if isinstance(item, UploadFile)]
        if not uploads:
            message = f"multipart body has no file field {field!r} (a part with a filename)"
            raise Unprocessable(message, Reason.INVALID_MULTIPART)
        pixels.check_count(len(uploads), max_items)
        return [await upload.read() for upload in uploads]
    finally:
        await form.close()


async def _images(request: Request, files: list[bytes], *, batch: bool = False) -> np.ndarray:
    """Image files -> MNIST-normalized uint8 [n, 28, 28], decoded off the event loop (a tiny one inline); the
    work stops if the client goes."""
    pool: DecodePool = request.app.state.decode_pool
    return await pool.digits(files, request.is_disconnected, batch=batch)


def _max_items(request: Request) -> int:
    return request.app.state.settings.max_batch_items


async def _pixels(request: Request, shape: tuple[int, int]) -> np.ndarray:
    return pixels.single_json(await request.body(), shape)


async def _file(request: Request, shape: tuple[int, int]) -> np.ndarray:
    return await _images(request, await _files(request, "file", 1))


async def _image(request: Request, shape: tuple[int, int]) -> np.ndarray:
    return await _images(request, [await request.body()])


async def _instances(request: Request, shape: tuple[int, int]) -> np.ndarray:
    return await offload.parse(await request.body(), pixels.batch_json, shape, _max_items(request))


async def _batch_files(request: Request, shape: tuple[int, int]) -> np.ndarray:
    return await _images(request, await _files(request, "files", _max_items(request)), batch=True)


async def _raw(request: Request, shape: tuple[int, int]) -> np.ndarray:
    return pixels.batch_raw(await request.body(), shape, _max_items(request))


def _schema_with(field: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON object schema with one required field."""
    return {"type": "object", "properties": {field: schema}, "required": [field]}


INSTANCES = {
    "type": "array",
    "items": PIXELS,
    "minItems": 1,
    "description": "at most MNIST_MAX_BATCH_ITEMS (413 beyond)",
}
SINGLE = Accepts(
    Body("application/json", _schema_with("pixels", INKED_PIXELS), _pixels),
    Body(
        "multipart/form-data", _schema_with("file", IMAGE_DOC), _file, "field file", parts={"file": "image/*"}
    ),
    Body("image/*", IMAGE_DOC, _image),
)
BATCH = Accepts(
    Body("application/json", _schema_with("instances", INSTANCES), _instances),
    Body(
        "multipart/form-data",
        _schema_with("files", {"type": "array", "items": IMAGE_DOC, "minItems": 1}),
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
