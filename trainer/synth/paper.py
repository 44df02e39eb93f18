"""Paper, light and texture under the ink, and the file bytes a client would send."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from trainer.synth import Rng

INKS = [(20, 20, 25), (35, 40, 110), (20, 45, 160), (150, 25, 30), (25, 90, 40), (70, 30, 110)]


def paper(rng: Rng, size: tuple[int, int]) -> np.ndarray:
    """Off-white paper, slightly tinted, float RGB [h, w, 3]."""
    width, height = size
    tone = rng.uniform(205, 250) - np.array([0, rng.uniform(0, 8), rng.uniform(0, 20)])
    return np.broadcast_to(tone.astype(np.float32), (height, width, 3)).copy()


def paint(canvas: np.ndarray, alpha: np.ndarray, color: tuple[int, ...], top: int, left: int) -> None:
    """Lay ink of `color` with coverage `alpha` onto the canvas at (top, left), in place."""
    h, w = alpha.shape
    region = canvas[top : top + h, left : left + w]
    a = alpha[: region.shape[0], : region.shape[1], None]
    region[:] = region * (1 - a) + np.asarray(color, dtype=np.float32) * a


def place(rng: Rng, canvas: np.ndarray, alpha: np.ndarray, color: tuple[int, ...], margin: float) -> None:
    """Paint the ink at a random position, keeping `margin` (fraction of the canvas) from the edges."""
    height, width = canvas.shape[:2]
    h, w = alpha.shape
    my, mx = int(margin * height), int(margin * width)
    top = int(rng.integers(my, max(my + 1, height - h - my)))
    left = int(rng.integers(mx, max(mx + 1, width - w - mx)))
    paint(canvas, alpha, color, top, left)


def ruled(rng: Rng, canvas: np.ndarray, spacing: float, squared: bool) -> None:
    """Notebook lines (and columns for squared paper), light blue or grey, 1-3 px, slightly tilted."""
    height, width = canvas.shape[:2]
    color = [(120, 160, 220), (150, 150, 155), (100, 140, 200)][rng.integers(3)]
    layer = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    thickness = int(rng.integers(1, 4))
    tilt = rng.uniform(-0.02, 0.02) * width
    offset = rng.uniform(0, spacing)
    for y in np.arange(offset, height + abs(tilt), spacing):
        draw.line([(0, y), (width, y + tilt)], fill=255, width=thickness)
    if squared:
        for x in np.arange(offset, width + abs(tilt), spacing):
            draw.line([(x, 0), (x - tilt, height)], fill=255, width=thickness)
    paint(canvas, np.asarray(layer, dtype=np.float32) / 255 * rng.uniform(0.5, 1.0), color, 0, 0)


def lighting(rng: Rng, canvas: np.ndarray) -> None:
    """Uneven light: a linear fall-off in a random direction and a soft-edged shadow, in place."""
    height, width = canvas.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ys, xs = ys / height, xs / width
    theta = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(theta) * xs + np.sin(theta) * ys
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    light = 1 - rng.uniform(0.25, 0.5) * ramp
    phi = rng.uniform(0, 2 * np.pi)
    edge = np.cos(phi) * (xs - rng.uniform(0.2, 0.8)) + np.sin(phi) * (ys - rng.uniform(0.2, 0.8))
    light *= 1 - rng.uniform(0.2, 0.4) / (1 + np.exp(-edge / rng.uniform(0.03, 0.08)))
    canvas *= light[..., None]


def specks(rng: Rng, canvas: np.ndarray, count: int) -> None:
    """Dust and pen dots: small dark blobs scattered over the page, in place."""
    height, width = canvas.shape[:2]
    layer = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    scale = max(width, height) / 500
    for _ in range(count):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.8, 2.5) * scale
        draw.ellipse([x - r, y - r * rng.uniform(0.6, 1.4), x + r, y + r], fill=int(rng.integers(120, 256)))
    paint(canvas, np.asarray(layer, dtype=np.float32) / 255, (30, 30, 30), 0, 0)


def finish(rng: Rng, canvas: np.ndarray, noise: float) -> Image.Image:
    """Sensor noise and 8-bit quantization."""
    if noise:
        canvas = canvas + rng.normal(0, noise, canvas.shape).astype(np.float32)
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    """The file bytes; PNG at zlib level 1 unless told (lossless either way: same pixels, 3-4x faster)."""
    if fmt == "PNG":
        options.setdefault("compress_level", 1)
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()
