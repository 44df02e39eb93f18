"""Ink and paper for synthetic images: printed glyphs, pen strokes, and the surfaces they are uploaded on.

The same renderers draw non-digits (letters, symbols, doodles) and digits (printed and pen-drawn), so that the
only difference the model can learn between them is the shape, never the style. An "ink" is a float alpha
mask [h, w] in [0, 1]; a surface lays it on paper or a canvas and returns the file bytes a client would send.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
from fontTools.ttLib import TTFont
from HersheyFonts import HersheyFonts
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from trainer.realistic import INKS, Rng, encode, finish, lighting, paper, place, ruled, specks

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
Strokes = list[np.ndarray]  # polylines, each [k, 2] (x, y) with y pointing down


# --- printed glyphs -----------------------------------------------------------------------------------------


@cache
def _faces() -> tuple[tuple[Path, frozenset[int]], ...]:
    """Every DejaVu face (MathTeX aside: it is a maths font) with the code points it really has."""
    faces = sorted(p for p in FONT_DIR.glob("DejaVu*.ttf") if "MathTeX" not in p.name)
    if not faces:
        raise RuntimeError(
            f"no DejaVu fonts in {FONT_DIR} (apt-get install fonts-dejavu-core fonts-dejavu-extra)"
        )
    return tuple((path, frozenset(TTFont(str(path)).getBestCmap())) for path in faces)


def printed_ink(rng: Rng, text: str, height: int) -> np.ndarray:
    """`text` in a random DejaVu face that has all its characters, about `height` px tall: regular, bold
    outline (stroke) or hollow, upright or slanted."""
    faces = [path for path, points in _faces() if all(ord(c) in points for c in text)]
    font = ImageFont.truetype(str(faces[rng.integers(len(faces))]), size=height)
    stroke = int(rng.integers(1, max(2, height // 12))) if rng.random() < 0.25 else 0
    canvas = Image.new("L", (height * (len(text) + 2), height * 2), 0)
    draw = ImageDraw.Draw(canvas)
    position = (height // 2, height // 3)
    draw.text(position, text, fill=255, font=font, stroke_width=stroke, stroke_fill=255)
    if stroke and rng.random() < 0.4:  # hollow letters: the outline only
        draw.text(position, text, fill=0, font=font)
    shear = rng.uniform(-0.3, 0.3) if rng.random() < 0.3 else 0.0
    angle = rng.uniform(-8, 8)
    canvas = canvas.transform(canvas.size, Image.Transform.AFFINE, (1, shear, -shear * height, 0, 1, 0))
    canvas = canvas.rotate(angle, Image.Resampling.BICUBIC)
    box = canvas.getbbox()
    return np.asarray(canvas.crop(box), dtype=np.float32) / 255 if box else np.zeros((1, 1), np.float32)


# --- pen strokes --------------------------------------------------------------------------------------------


@cache
def _hershey(font: str) -> HersheyFonts:
    hershey = HersheyFonts()
    hershey.load_default_font(font)
    return hershey


def hershey_strokes(font: str, text: str) -> Strokes:
    """The centre lines of `text` in a Hershey stroke font (single-line glyphs, as a pen draws them)."""
    strokes = [np.asarray(s, dtype=np.float32) for s in _hershey(font).strokes_for_text(text)]
    strokes = [s for s in strokes if len(s) > 1]
    if not strokes:
        raise ValueError(f"Hershey font {font!r} has no strokes for {text!r}")
    return strokes


def smooth_wobble(rng: Rng, count: int, amount: float) -> np.ndarray:
    """A slowly varying 2-D offset for `count` points along a stroke: a hand is not a plotter."""
    knots = max(2, count // 8 + 2)
    coarse = rng.normal(0, amount, (knots, 2))
    at = np.linspace(0, knots - 1, count)
    return np.stack([np.interp(at, np.arange(knots), coarse[:, i]) for i in range(2)], 1)


def densify(stroke: np.ndarray, step: float) -> np.ndarray:
    """Points every `step` units along a polyline, so wobble bends long straight segments too."""
    lengths = np.hypot(*np.diff(stroke, axis=0).T)
    total = float(lengths.sum())
    if total == 0:
        return stroke
    along = np.concatenate([[0], np.cumsum(lengths)])
    at = np.linspace(0, total, max(2, int(total / step) + 1))
    return np.stack([np.interp(at, along, stroke[:, 0]), np.interp(at, along, stroke[:, 1])], 1)


def pen_ink(
    rng: Rng, strokes: Strokes, height: int, *, wobble: float = 0.02, width: float | None = None
) -> np.ndarray:
    """Strokes drawn by hand `height` px tall: random slant, rotation and aspect, wobble, a round pen of
    random width (a fraction of the height), antialiased by drawing at 2x."""
    points = np.concatenate(strokes)
    low, high = points.min(0), points.max(0)
    extent = float(max(high - low))
    if extent == 0:
        raise ValueError("strokes have no extent")
    angle = np.radians(rng.uniform(-12, 12))
    shear = rng.uniform(-0.25, 0.25)
    aspect = rng.uniform(0.8, 1.25)
    matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.array(
        [[aspect, shear], [0, 1]]
    )
    shapes = []
    for stroke in strokes:
        unit = densify((stroke - low) / extent, 0.03)
        shapes.append((unit + smooth_wobble(rng, len(unit), wobble)) @ matrix.T)
    everything = np.concatenate(shapes)
    low, high = everything.min(0), everything.max(0)
    scale = 2 * height / max(float((high - low)[1]), 0.3 * float(max(high - low)), 1e-6)
    pen = 2 * (width if width is not None else rng.uniform(0.06, 0.14) * height)
    pad = int(pen) + 4
    size = (high - low) * scale + 2 * pad
    canvas = Image.new("L", (int(size[0]) + 1, int(size[1]) + 1), 0)
    draw = ImageDraw.Draw(canvas)
    for shape in shapes:
        xy = [tuple(p) for p in (shape - low) * scale + pad]
        draw.line(xy, fill=255, width=max(1, round(pen)), joint="curve")
        for x, y in (xy[0], xy[-1]):  # round caps
            r = pen / 2
            draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    canvas = canvas.resize((max(1, canvas.width // 2), max(1, canvas.height // 2)), Image.Resampling.BOX)
    box = canvas.getbbox()
    return np.asarray(canvas.crop(box), dtype=np.float32) / 255 if box else np.zeros((1, 1), np.float32)


# --- surfaces: ink -> the file a client uploads -------------------------------------------------------------


def _fit(alpha: np.ndarray, side: int) -> np.ndarray:
    """Resize the ink so its longest side is `side` px."""
    h, w = alpha.shape
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = Image.fromarray((alpha * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255


def drawing_page(rng: Rng, alpha: np.ndarray) -> bytes:
    """The service's drawing page: black ink on a white 280 x 280 canvas, PNG."""
    canvas = np.full((280, 280, 3), 255, np.float32)
    place(rng, canvas, _fit(alpha, int(rng.integers(120, 250))), (0, 0, 0), 0.03)
    return encode(finish(rng, canvas, 0), "PNG")


def canvas_transparent(rng: Rng, alpha: np.ndarray) -> bytes:
    """A transparent web-canvas export: colour under the strokes, black RGB under alpha 0."""
    side = int(rng.integers(150, 400))
    rgba = np.zeros((side, side, 4), np.float32)
    place(rng, rgba, np.clip(_fit(alpha, int(side * rng.uniform(0.4, 0.85))) * 1.5, 0, 1), (255,) * 4, 0.03)
    colour = np.asarray([(0, 0, 0), (30, 60, 200), (255, 255, 255)][rng.integers(3)], np.float32)
    rgba[..., :3] = (rgba[..., :3] > 0) * colour
    return encode(Image.fromarray(rgba.astype(np.uint8), "RGBA"), "PNG")


def canvas_dark(rng: Rng, alpha: np.ndarray) -> bytes:
    """White strokes on black (the MNIST convention), PNG."""
    side = int(rng.integers(100, 400))
    canvas = np.zeros((side, side, 3), np.float32)
    place(rng, canvas, _fit(alpha, int(side * rng.uniform(0.4, 0.85))), (255, 255, 255), 0.03)
    return encode(finish(rng, canvas, 0), "PNG")


def paper_photo(rng: Rng, alpha: np.ndarray) -> bytes:
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
    place(rng, canvas, _fit(alpha, height), INKS[rng.integers(len(INKS))], 0.04)
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


SURFACES: Sequence[Callable[[Rng, np.ndarray], bytes]] = (
    drawing_page,
    canvas_transparent,
    canvas_dark,
    paper_photo,
)


def upload(rng: Rng, alpha: np.ndarray) -> bytes:
    """The ink on a random surface: the drawing page and paper most often."""
    return SURFACES[rng.choice(len(SURFACES), p=[0.3, 0.15, 0.15, 0.4])](rng, alpha)
