"""The request bodies a route accepts, declared once: the list drives the dispatch on Content-Type, the 415
message, the early queue check and the OpenAPI request body, so they cannot disagree."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request

from service.errors import Unsupported

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
