"""Ink -> the file a client uploads: a web-canvas export (transparent or white on black), the service's
drawing page, a photo or scan of paper.

A surface takes a sized ink (longest side in px -> alpha mask), so an MNIST digit is rendered at the size the
surface wants and a drawn glyph is resized to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from trainer.synth import Rng
from trainer.synth.paper import INKS, encode, finish, lighting, paper, place, ruled, specks

SizedInk = Callable[[int], np.ndarray]  # longest side in px -> alpha mask


def _fit(alpha: np.ndarray, side: int) -> np.ndarray:
    """Resize the ink so its longest side is `side` px."""
    h, w = alpha.shape
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = Image.fromarray((alpha * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255


def fitted(alpha: np.ndarray) -> SizedInk:
    """Ink already drawn, resized to whatever side a surface asks for."""
    return partial(_fit, alpha)


def canvas_transparent(
    rng: Rng,
    ink: SizedInk,
    sides: tuple[int, int] = (150, 400),
    fraction: tuple[float, float] = (0.4, 0.85),
    side: int | None = None,
) -> bytes:
    """A transparent web-canvas export, `side` (else drawn from `sides`) px square, the ink a `fraction` of
    it: colour under the strokes, black RGB under alpha 0, PNG."""
    side = side or int(rng.integers(*sides))
    rgba = np.zeros((side, side, 4), np.float32)
    alpha = np.clip(ink(int(side * rng.uniform(*fraction))) * 1.5, 0, 1)
    place(rng, rgba, alpha, (255,) * 4, 0.03)  # the alpha channel, and a white stroke mask
    colour = np.asarray([(0, 0, 0), (30, 60, 200), (255, 255, 255)][rng.integers(3)], np.float32)
    rgba[..., :3] = (rgba[..., :3] > 0) * colour
    return encode(Image.fromarray(rgba.astype(np.uint8), "RGBA"), "PNG")


def canvas_dark(
    rng: Rng, ink: SizedInk, sides: tuple[int, int] = (100, 400), fraction: tuple[float, float] = (0.4, 0.85)
) -> bytes:
    """An opaque canvas export in the MNIST convention: white strokes on black, PNG."""
    side = int(rng.integers(*sides))
    canvas = np.zeros((side, side, 3), np.float32)
    place(rng, canvas, ink(int(side * rng.uniform(*fraction))), (255, 255, 255), 0.03)
    return encode(finish(rng, canvas, 0), "PNG")


def drawing_page(rng: Rng, ink: SizedInk) -> bytes:
    """The service's drawing page: black ink on a white 280 x 280 canvas, PNG."""
    canvas = np.full((280, 280, 3), 255, np.float32)
    place(rng, canvas, ink(int(rng.integers(120, 250))), (0, 0, 0), 0.03)
    return encode(finish(rng, canvas, 0), "PNG")


def paper_photo(rng: Rng, ink: SizedInk) -> bytes:
    """Ink on paper, scanned or photographed: plain, ruled or squared paper, coloured ink, uneven light,
    specks, sensor noise, blur, PNG or JPEG."""
    size = (int(rng.integers(200, 700)), int(rng.integers(200, 700)))
    canvas = paper(rng, size)
    height = int(min(size) * rng.uniform(0.25, 0.8))
    surface = rng.integers(4)
    if surface == 1:
        ruled(rng, canvas, height / rng.uniform(0.8, 1.8), squared=False)
    elif surface == 2:
        ruled(rng, canvas, height / rng.uniform(2, 5), squared=True)
    place(rng, canvas, ink(height), INKS[rng.integers(len(INKS))], 0.04)
    if rng.random() < 0.3:
        specks(rng, canvas, int(rng.integers(5, 40)))
    if rng.random() < 0.4:
        lighting(rng, canvas)
    image = finish(rng, canvas, float(rng.uniform(0, 6)))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.5:
        return encode(image, "JPEG", quality=int(rng.integers(30, 95)))
    return encode(image, "PNG")


SURFACES: Sequence[Callable[[Rng, SizedInk], bytes]] = (
    drawing_page,
    canvas_transparent,
    canvas_dark,
    paper_photo,
)


def upload(rng: Rng, alpha: np.ndarray) -> bytes:
    """Drawn ink on a random surface: the drawing page and paper most often."""
    return SURFACES[rng.choice(len(SURFACES), p=[0.3, 0.15, 0.15, 0.4])](rng, fitted(alpha))


def large_canvas(side: int, compress_level: int = 6) -> bytes:
    """A transparent side x side RGBA canvas with one black stroke: a small file that decodes to side^2 x 4
    bytes (a valid 6300 x 6300 PNG of ~170 KB is 159 MB decoded)."""
    image = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    ImageDraw.Draw(image).line(
        [(side * 0.48, side * 0.15), (side * 0.52, side * 0.85)], fill=(0, 0, 0, 255), width=side // 16
    )
    return encode(image, "PNG", compress_level=compress_level)
