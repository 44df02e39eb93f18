"""Ink: what is drawn, as a float alpha mask [h, w] in [0, 1] -- printed glyphs in DejaVu faces, pen strokes
after Hershey's single-line fonts, and MNIST digits.

Non-digits (letters, symbols, doodles) and digits (printed and pen-drawn) are drawn by the same functions, so
that the only difference the model can learn between them is the shape, never the style.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from fontTools.ttLib import TTFont
from HersheyFonts import HersheyFonts
from PIL import Image, ImageDraw, ImageFont

from trainer.synth import Rng

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
Strokes = list[np.ndarray]  # polylines, each [k, 2] (x, y) with y pointing down
# Hershey stroke fonts with Latin letters and digits (ASCII keys); "greek", "cyrillic" and "japanese" map
# ASCII to their own letters.
PEN_FONTS = (
    "futural",
    "futuram",
    "rowmans",
    "rowmand",
    "rowmant",
    "scripts",
    "scriptc",
    "cursive",
    "timesr",
    "timesi",
    "timesib",
    "timesrb",
)


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


def font_ink(label: int, height: int, rng: Rng, angle: float = 0.0) -> np.ndarray:
    """A printed digit in a random DejaVu face (any face: all have digits), about `height` px tall, plain
    (the realistic kind "printed fonts")."""
    fonts = [path for path, _ in _faces()]
    font = ImageFont.truetype(str(fonts[rng.integers(len(fonts))]), size=height)
    canvas = Image.new("L", (height * 2, height * 2), 0)
    ImageDraw.Draw(canvas).text((height // 2, height // 4), str(label), fill=255, font=font)
    if angle:
        canvas = canvas.rotate(angle, Image.Resampling.BICUBIC)
    box = canvas.getbbox()
    return np.asarray(canvas.crop(box), dtype=np.float32) / 255


# --- MNIST digits -------------------------------------------------------------------------------------------


def mnist_ink(digit: np.ndarray, height: int, angle: float = 0.0) -> np.ndarray:
    """An MNIST digit drawn `height` px tall: smooth upscaled strokes, optionally rotated (degrees)."""
    rows = np.flatnonzero(digit.any(axis=1))
    cols = np.flatnonzero(digit.any(axis=0))
    crop = Image.fromarray(digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    scale = height / max(crop.size)
    image = crop.resize(
        (max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.Resampling.BICUBIC
    )
    if angle:
        image = image.rotate(angle, Image.Resampling.BICUBIC, expand=True)
    return np.clip(np.asarray(image, dtype=np.float32) / 255 * 1.2, 0, 1)


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


def _by_hand(rng: Rng, strokes: Strokes, wobble: float) -> Strokes:
    """The strokes in a unit box, densified, wobbled, then slanted, rotated and stretched at random."""
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
    return shapes


def pen_ink(
    rng: Rng, strokes: Strokes, height: int, *, wobble: float = 0.02, width: float | None = None
) -> np.ndarray:
    """Strokes drawn by hand `height` px tall: random slant, rotation and aspect, wobble, a round pen of
    random width (a fraction of the height), antialiased by drawing at 2x."""
    shapes = _by_hand(rng, strokes, wobble)
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
