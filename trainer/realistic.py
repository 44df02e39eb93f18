"""Realistic digit images made from MNIST digits and printed fonts: what users really upload.

Each kind returns encoded file bytes (the service's input), so the whole path -- decode, EXIF, alpha, first
frame, normalization -- is exercised. Used by the trainer (realistic digits are positives in training, made
from MNIST training digits), tests/test_preprocess.py and bench/ (made from MNIST test digits).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from trainer.data import load_test

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
INKS = [(20, 20, 25), (35, 40, 110), (20, 45, 160), (150, 25, 30), (25, 90, 40), (70, 30, 110)]
Rng = np.random.Generator


def mnist_test(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 10k MNIST test images (uint8 [n, 28, 28]) and labels."""
    test = load_test(data_dir)
    return test.images, test.labels


# --- ink: a digit as an alpha mask (float [h, w] in [0, 1]) -------------------------------------------------


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


def font_ink(label: int, height: int, rng: Rng, angle: float = 0.0) -> np.ndarray:
    """A printed digit in a random DejaVu face, about `height` px tall."""
    fonts = sorted(p for p in FONT_DIR.glob("DejaVu*.ttf") if "MathTeX" not in p.name)
    font = ImageFont.truetype(str(fonts[rng.integers(len(fonts))]), size=height)
    canvas = Image.new("L", (height * 2, height * 2), 0)
    ImageDraw.Draw(canvas).text((height // 2, height // 4), str(label), fill=255, font=font)
    if angle:
        canvas = canvas.rotate(angle, Image.Resampling.BICUBIC)
    box = canvas.getbbox()
    return np.asarray(canvas.crop(box), dtype=np.float32) / 255


# --- paper, light and texture -------------------------------------------------------------------------------


def paper(rng: Rng, size: tuple[int, int]) -> np.ndarray:
    """Off-white paper, slightly tinted, float RGB [h, w, 3]."""
    width, height = size
    tone = rng.uniform(205, 250) - np.array([0, rng.uniform(0, 8), rng.uniform(0, 20)])
    return np.broadcast_to(tone.astype(np.float32), (height, width, 3)).copy()


def paint(canvas: np.ndarray, alpha: np.ndarray, color: tuple[int, int, int], top: int, left: int) -> None:
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


# --- the kinds: (rng, MNIST digit 28x28, label) -> file bytes --------------------------------------------


def _scan(
    rng: Rng,
    digit: np.ndarray,
    *,
    size: tuple[int, int] = (400, 400),
    fraction: tuple = (0.4, 0.8),
    angle: float = 4.0,
    ink: tuple[int, int, int] | None = None,
    margin: float = 0.05,
) -> np.ndarray:
    """A digit written on paper: the shared start of the paper kinds."""
    canvas = paper(rng, size)
    height = int(min(size) * rng.uniform(*fraction))
    alpha = mnist_ink(digit, height, rng.uniform(-angle, angle))
    place(rng, canvas, alpha, ink or INKS[0], margin)
    return canvas


def paper_scan(rng: Rng, digit: np.ndarray, label: int) -> bytes:
    """Dark ink on light paper, a flatbed scan."""
    return encode(finish(rng, _scan(rng, digit), 3), "PNG")


def off_centre(rng: Rng, digit: np.ndarray, label: int) -> bytes:
    """A small digit somewhere in a big canvas."""
    canvas = _scan(rng, digit, size=(900, 700), fraction=(0.12, 0.25), margin=0.02)
    return encode(finish(rng, canvas, 3), "PNG")


def rotated(rng: Rng, digit: np.ndarray, label: int) -> bytes:
    """Written or photographed a few degrees off vertical."""
    return encode(finish(rng, _scan(rng, digit, angle=10), 3), "PNG")


def shadowed(rng: Rng, digit: np.ndarray, label: int) -> bytes:
    """Light falling off across the page and a phone's soft shadow."""
    canvas = _scan(rng, digit)
    lighting(rng, canvas)
    return encode(finish(rng, canvas, 3), "PNG")


def jpeg(rng: Rng, digit: np.ndarray, label: int) -> bytes:
    """Heavy JPEG compression."""
    return encode(finish(rng, _scan(rng, digit), 3), "JPEG", quality=int(rng.integers(25, 60)))


def _notebook(rng: Rng, digit: np.ndarray, lines_per_digit: tuple[float, float], squared: bool) -> bytes:
    """The digit on notebook paper whose line spacing is its height over `lines_per_digit`."""
    canvas = paper(rng, (500, 500))
    height = int(500 * rng.uniform(0.3, 0.6))
    ruled(rng, canvas, height / rng.uniform(*lines_per_digit), squared=squared)
    place(rng, canvas, mnist_ink(digit, height, rng.uniform(-4, 4)), INKS[rng.integers(3)], 0.05)
    return encode(finish(rng, canvas, 3), "JPEG", quality=90)


def lined(rng: Rng, digit: np.ndarray, label: int) -> bytes:
    """Ruled notebook paper: the digit spans one or two lines."""
    return _notebook(rng, digit, (0.8, 1.8), squared=False)


def squared(rng: Rng, digit: np.ndarray, label: int) -> bytes:
    """Squared (grid) notebook paper."""
    return _notebook(rng, digit, (2, 5), squared=True)


def speckled(rng: Rng, digit: np.ndarray, label: int) -> bytes:
    """Dust, pen dots and sensor noise around the digit."""
    canvas = _scan(rng, digit, fraction=(0.3, 0.6))
    specks(rng, canvas, int(rng.integers(15, 60)))
    return encode(finish(rng, canvas, 8), "PNG")


def coloured(rng: Rng, digit: np.ndarray, label: int) -> bytes:
    """Blue, red, green or purple ink."""
    canvas = _scan(rng, digit, ink=INKS[1 + rng.integers(len(INKS) - 1)])
    return encode(finish(rng, canvas, 3), "PNG")


def canvas_png(rng: Rng, digit: np.ndarray, label: int, side: int | None = None) -> bytes:
    """A transparent web-canvas export: stroke colour under the strokes, black RGB under alpha 0."""
    side = side or int(rng.integers(200, 400))
    alpha = mnist_ink(digit, int(side * rng.uniform(0.5, 0.85)))
    rgba = np.zeros((side, side, 4), dtype=np.float32)
    place(rng, rgba, np.clip(alpha * 1.5, 0, 1), (255,) * 4, 0.03)  # alpha channel, and a white stroke mask
    color = np.asarray([(0, 0, 0), (30, 60, 200), (255, 255, 255)][rng.integers(3)], dtype=np.float32)
    rgba[..., :3] = (rgba[..., :3] > 0) * color
    return encode(Image.fromarray(rgba.astype(np.uint8), "RGBA"), "PNG")


def canvas_dark(rng: Rng, digit: np.ndarray, label: int) -> bytes:
    """An opaque canvas export in the MNIST convention: white strokes on black."""
    side = int(rng.integers(200, 400))
    canvas = np.zeros((side, side, 3), dtype=np.float32)
    place(rng, canvas, mnist_ink(digit, int(side * rng.uniform(0.5, 0.85))), (255, 255, 255), 0.03)
    return encode(finish(rng, canvas, 0), "PNG")


def printed(rng: Rng, digit: np.ndarray, label: int) -> bytes:
    """A printed digit in a DejaVu face (the MNIST digit only decides the label)."""
    canvas = paper(rng, (400, 400))
    place(rng, canvas, font_ink(label, int(rng.integers(80, 240)), rng, rng.uniform(-4, 4)), INKS[0], 0.05)
    return encode(finish(rng, canvas, 3), "JPEG", quality=85)


def exif_rotated(rng: Rng, digit: np.ndarray, label: int) -> bytes:
    """A phone JPEG stored sideways with an EXIF orientation tag saying how to turn it upright."""
    upright = finish(rng, _scan(rng, digit, size=(480, 640)), 3)
    orientation = [3, 6, 8][rng.integers(3)]
    stored = upright.transpose(
        {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[
            orientation
        ]
    )
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=90, exif=exif.tobytes())


def animated_gif(rng: Rng, digit: np.ndarray, label: int) -> bytes:
    """An animated GIF: the digit is the first frame, then other frames follow."""
    first = finish(rng, _scan(rng, digit), 3)
    blank = Image.fromarray(np.full((400, 400, 3), 255, np.uint8))
    others = [blank, first.transpose(Image.Transpose.ROTATE_90)]
    return encode(first, "GIF", save_all=True, append_images=others, duration=100, loop=0)


def phone_photo(rng: Rng, digit: np.ndarray, label: int) -> bytes:
    """A 1200x1600 phone photo: paper, uneven light, a slight tilt, noise, specks, JPEG."""
    size = (1200, 1600) if rng.random() < 0.5 else (1600, 1200)
    canvas = _scan(rng, digit, size=size, fraction=(0.15, 0.5), angle=6, ink=INKS[rng.integers(3)])
    specks(rng, canvas, int(rng.integers(0, 30)))
    lighting(rng, canvas)
    image = finish(rng, canvas, 5).filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    return encode(image, "JPEG", quality=int(rng.integers(70, 92)))


def large_canvas(side: int, compress_level: int = 6) -> bytes:
    """A transparent side x side RGBA canvas with one black stroke: a small file that decodes to side^2 x 4
    bytes (issue 14's valid 6300x6300 PNG is ~170 KB and 159 MB decoded)."""
    image = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    ImageDraw.Draw(image).line(
        [(side * 0.48, side * 0.15), (side * 0.52, side * 0.85)], fill=(0, 0, 0, 255), width=side // 16
    )
    return encode(image, "PNG", compress_level=compress_level)


KINDS: dict[str, Callable[[Rng, np.ndarray, int], bytes]] = {
    "paper scan": paper_scan,
    "off-centre small": off_centre,
    "rotated": rotated,
    "shadowed": shadowed,
    "JPEG q25-60": jpeg,
    "lined paper": lined,
    "squared paper": squared,
    "specks + noise": speckled,
    "coloured ink": coloured,
    "canvas PNG (alpha)": canvas_png,
    "canvas white-on-black": canvas_dark,
    "printed fonts": printed,
    "EXIF-rotated JPEG": exif_rotated,
    "animated GIF": animated_gif,
    "phone photo 1200x1600": phone_photo,
}


def generate(
    kind: str, images: np.ndarray, labels: np.ndarray, count: int, seed: int = 0
) -> Iterator[tuple[bytes, int]]:
    """`count` files of one kind from MNIST test digits drawn at random (seeded per kind), with labels."""
    rng = np.random.default_rng([seed, *kind.encode()])
    for i in rng.choice(len(images), size=count, replace=False):
        yield KINDS[kind](rng, images[i], int(labels[i])), int(labels[i])
