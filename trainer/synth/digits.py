"""Digits as users upload them: the realistic kinds (MNIST digits on paper, canvases, photos; `KINDS`) and
the glyph kinds (printed and pen-drawn digits, drawn like the non-digits; `GLYPH_KINDS`).

Each kind returns encoded file bytes (the service's input), so the whole path -- decode, EXIF, alpha, first
frame, normalization -- is exercised. Realistic digits are made from MNIST training digits for training, from
MNIST test digits for the card's figures, tests/test_preprocess.py and bench/.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from trainer.data import load_test
from trainer.synth import Rng
from trainer.synth.exports import canvas_dark, canvas_transparent, upload
from trainer.synth.ink import PEN_FONTS, font_ink, hershey_strokes, mnist_ink, pen_ink, printed_ink
from trainer.synth.paper import INKS, encode, finish, lighting, paper, place, ruled, specks


def mnist_test(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 10k MNIST test images (uint8 [n, 28, 28]) and labels."""
    test = load_test(data_dir)
    return test.images, test.labels


# --- the realistic kinds: (rng, MNIST digit 28x28, label) -> file bytes ------------------------------------


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
    """A transparent web-canvas export of the digit, 200-400 px (or `side`) square."""
    return canvas_transparent(
        rng, partial(mnist_ink, digit), sides=(200, 400), fraction=(0.5, 0.85), side=side
    )


def canvas_white_on_black(rng: Rng, digit: np.ndarray, label: int) -> bytes:
    """An opaque canvas export in the MNIST convention, 200-400 px square."""
    return canvas_dark(rng, partial(mnist_ink, digit), sides=(200, 400), fraction=(0.5, 0.85))


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
    "canvas white-on-black": canvas_white_on_black,
    "printed fonts": printed,
    "EXIF-rotated JPEG": exif_rotated,
    "animated GIF": animated_gif,
    "phone photo 1200x1600": phone_photo,
}


def generate(
    kind: str, images: np.ndarray, labels: np.ndarray, count: int, seed: int = 0
) -> Iterator[tuple[bytes, int]]:
    """`count` files of one kind from MNIST digits drawn at random (seeded per kind), with labels."""
    rng = np.random.default_rng([seed, *kind.encode()])
    for i in rng.choice(len(images), size=count, replace=False):
        yield KINDS[kind](rng, images[i], int(labels[i])), int(labels[i])


# --- the glyph kinds: rng -> (file bytes, label), drawn as the non-digits are -------------------------------


def printed_digit(rng: Rng) -> tuple[bytes, int]:
    label = int(rng.integers(10))
    return upload(rng, printed_ink(rng, str(label), int(rng.integers(40, 160)))), label


def pen_digit(rng: Rng) -> tuple[bytes, int]:
    font = ("greek", "cyrillic", *PEN_FONTS)[rng.integers(len(PEN_FONTS) + 2)]
    label = int(rng.integers(10))
    return upload(rng, pen_ink(rng, hershey_strokes(font, str(label)), int(rng.integers(60, 200)))), label


GLYPH_KINDS: dict[str, Callable[[Rng], tuple[bytes, int]]] = {
    "printed digits (any surface)": printed_digit,
    "pen-drawn digits": pen_digit,
}
