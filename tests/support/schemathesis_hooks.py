"""schemathesis extensions for tests/system/test_openapi.py (named in tests/support/schemathesis.toml).

JSON Schema can say "binary" but not "a decodable image of a digit" or "whole 28 x 28 uint8 images", so
for those media types schemathesis draws bodies from these strategies: a printed digit on paper (random
face, size, place, ink and format) for image/* and for multipart image parts, and whole images with some
ink for application/octet-stream. Bodies it mutates from them are its negative cases.
"""

from __future__ import annotations

import numpy as np
import schemathesis
from hypothesis import strategies as st

from trainer.synth.ink import font_ink
from trainer.synth.paper import INKS, encode, finish, paper, place

IMAGE_BYTES = 28 * 28
FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}


def digit_image(seed: int, fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    side = int(rng.integers(60, 400))
    canvas = paper(rng, (side, side))
    ink = font_ink(int(rng.integers(10)), int(side * rng.uniform(0.4, 0.8)), rng, rng.uniform(-8, 8))
    place(rng, canvas, ink, INKS[int(rng.integers(len(INKS)))], 0.05)
    return encode(finish(rng, canvas, 2), fmt)


def raw_images(data: bytes) -> bytes:
    images = np.frombuffer(data, np.uint8).reshape(-1, IMAGE_BYTES).copy()
    images[:, IMAGE_BYTES // 2] |= 1  # at least one pixel of ink: all-background is "no digit found"
    return images.tobytes()


SEEDS = st.integers(0, 2**32 - 1)
for media_type, fmt in FORMATS.items():
    schemathesis.openapi.media_type(media_type, st.builds(digit_image, SEEDS, st.just(fmt)))
schemathesis.openapi.media_type(
    "application/octet-stream",
    st.integers(1, 16)
    .flatmap(lambda n: st.binary(min_size=n * IMAGE_BYTES, max_size=n * IMAGE_BYTES))
    .map(raw_images),
)


@schemathesis.hook
def filter_case(context: schemathesis.HookContext, case: schemathesis.Case) -> bool:
    """Drop multipart bodies that give an array-of-files field one bare value: schemathesis sends that part
    without a filename, and a part without one is a text field, not a file (the OpenAPI document says so)."""
    if not (case.media_type or "").startswith("multipart/") or not isinstance(case.body, dict):
        return True
    return isinstance(case.body.get("files", []), list)
