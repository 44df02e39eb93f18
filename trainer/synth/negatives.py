"""Things that are not digits, as files a client would upload; deterministic by seed.

Each kind is a function rng -> file bytes (or, for raw-pixel noise, a 28x28 uint8 MNIST-convention array that
skips the image pipeline, as the JSON/octet-stream/V2 routes do). Kinds are split into those the model trains
on and those held out of training entirely (reported separately: the honest figure for inputs nobody
anticipated). Glyphs any reader could take for a digit are left out (AMBIGUOUS, documented in the README).

Digits drawn with the same renderers (printed and pen-drawn) are positives: trainer.synth.digits.GLYPH_KINDS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageFilter

from trainer.synth import Rng
from trainer.synth.exports import upload
from trainer.synth.ink import PEN_FONTS, Strokes, hershey_strokes, pen_ink, printed_ink
from trainer.synth.paper import encode

# --- what is a letter, and which glyphs are not honest negatives ------------------------------------------

LATIN = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
GREEK = "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩαβγδεζηθικλμνξοπρστυφχψω"
CYRILLIC = "АБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯабвгдежзийклмнопрстуфхцчшщъыьэюя"
# Read as a digit by some readers (0: O o Q D Θ θ Ο ο О о Φ φ Ф ф; 1: I l i j Ι ι; 2: Z z Ζ ζ; 3: З з Э э ε ξ;
# 4: Ч ч; 5: S s; 6: b G δ Б б Ь ь Ъ ъ σ; 7: τ; 8: B Β β В в; 9: g q a α а), and so never scored as negatives.
AMBIGUOUS = set("OoQDΘθΟοОоΦφФфIliјj|ΙιZzΖζЗзЭэεξЧчSsbGδБбЬьЪъσςτBΒβВвgqaαа")
LETTERS = "".join(c for c in LATIN + GREEK + CYRILLIC if c not in AMBIGUOUS)
# Held out: symbols, never letters. Left out as digit-like: $ § (5), ∂ (6), ∅ ° ∘ • (0), ∫ (1 or S), ¬ (7).
SYMBOLS = "?@#&*%+=<>~^∑∏√∞≈≠≤≥±×÷∇∀∃∈∩∪⊂⊃⊕⊗∧∨∠⊥∝∉≡⊆€£¥¢₽©®™¶µΩ‰†‡"

# Greek and Cyrillic Hershey fonts map ASCII to their own letters, so they have own lists.
PEN_LETTERS = {
    **{font: "".join(c for c in LATIN if c not in AMBIGUOUS) for font in PEN_FONTS},
    "greek": "ACDEGHKLMNPRTUWXYcghklmnpruwy",  # Α Χ Δ Ε Γ Η Κ Λ Μ Ν Π Ρ Τ Υ Ω Ξ Ψ χ γ η κ λ μ ν π ρ υ ω ψ
    "cyrillic": "ADEGHIKLMNPQRSTUWXY[^`deghiklmnpqrstuwxy{}$%&",  # А Д И Г Ж К Л М Н П Ш Р С Т Ю ...
}
# The Hershey "japanese" font maps ASCII to kana and kanji.
# Kept: kanji 円年大国人東中本京出時上者入 and
# kana あえおかきけさすせたとなにぬねはひふほまみむめもやゆよれわゐゑをんがぎげざ.
# Left out: the kanji numerals 一二三四五六七九十 and 日 (a seven-segment 8), and kana that look like
# digits or Latin strokes, with or without voicing marks:
# い う く ぐ こ ご し じ そ ち つ て の へ ら り る ろ.
KANA = "$%&'()*+,-./09ADEFGIKMNPTUVWXZ[\\^_`abcdfghlnoqrsxy{}"


# --- the kinds ----------------------------------------------------------------------------------------------


def printed_letters(rng: Rng) -> bytes:
    """Letters (Latin, Greek, Cyrillic; one, sometimes two or three) in a DejaVu face, on any surface."""
    text = "".join(rng.choice(list(LETTERS), size=rng.choice([1, 1, 1, 2, 3])))
    return upload(rng, printed_ink(rng, text, int(rng.integers(40, 160))))


def pen_letters(rng: Rng) -> bytes:
    """Letters drawn as pen strokes with jitter (Hershey: sans, serif, script, italic, Greek, Cyrillic)."""
    font = list(PEN_LETTERS)[rng.integers(len(PEN_LETTERS))]
    text = "".join(rng.choice(list(PEN_LETTERS[font]), size=rng.choice([1, 1, 1, 2])))
    return upload(rng, pen_ink(rng, hershey_strokes(font, text), int(rng.integers(60, 200))))


def printed_symbols(rng: Rng) -> bytes:
    """Punctuation, maths and currency symbols in a DejaVu face (held out)."""
    return upload(rng, printed_ink(rng, str(rng.choice(list(SYMBOLS))), int(rng.integers(40, 160))))


def pen_kana(rng: Rng) -> bytes:
    """Japanese kana and kanji drawn as pen strokes (held out)."""
    return upload(rng, pen_ink(rng, hershey_strokes("japanese", str(rng.choice(list(KANA)))), 150))


def _spline(points: np.ndarray, per_segment: int = 12) -> np.ndarray:
    """A smooth curve through the points (Catmull-Rom)."""
    p = np.concatenate([points[:1], points, points[-1:]])
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    pieces = [
        0.5
        * (
            2 * p[i]
            + (-p[i - 1] + p[i + 1]) * t
            + (2 * p[i - 1] - 5 * p[i] + 4 * p[i + 1] - p[i + 2]) * t**2
            + (-p[i - 1] + 3 * p[i] - 3 * p[i + 1] + p[i + 2]) * t**3
        )
        for i in range(1, len(p) - 2)
    ]
    return np.concatenate([*pieces, points[-1:]])


def scribble_strokes(rng: Rng) -> Strokes:
    """Random scribbles: a long wandering curve, zig-zag hatching, or a ball of loops."""
    style = rng.integers(3)
    if style == 0:
        return [_spline(rng.random((int(rng.integers(6, 16)), 2)))]
    if style == 1:
        count = int(rng.integers(7, 16))  # fewer turns draw a Z, i.e. a 2
        ys = np.linspace(0, 1, count) + rng.normal(0, 0.03, count)
        xs = np.where(np.arange(count) % 2, 1.0, 0.0) + rng.normal(0, 0.08, count)
        return [np.stack([xs, ys], 1)]
    t = np.linspace(0, 2 * np.pi * rng.uniform(3, 7), 400)
    drift = np.linspace(0, rng.uniform(0.5, 2), len(t))
    r = rng.uniform(0.3, 0.6)
    return [np.stack([drift + r * np.cos(t), r * rng.uniform(0.6, 1.4) * np.sin(t)], 1)]


def scribbles(rng: Rng) -> bytes:
    """Pen scribbles: wandering curves, hatching, loops."""
    strokes = [s for _ in range(rng.choice([1, 1, 2, 3])) for s in scribble_strokes(rng)]
    return upload(rng, pen_ink(rng, strokes, int(rng.integers(80, 220)), wobble=0.01))


def _circle(
    cx: float, cy: float, r: float, start: float = 0, stop: float = 2 * np.pi, ry: float | None = None
):
    t = np.linspace(start, stop, 48)
    return np.stack([cx + r * np.cos(t), cy + (ry or r) * np.sin(t)], 1)


def _poly(*points: tuple[float, float]) -> np.ndarray:
    return np.asarray(points, dtype=np.float32)


def _star(points: int, inner: float) -> np.ndarray:
    t = np.linspace(-np.pi / 2, 3 * np.pi / 2, 2 * points + 1)
    r = np.where(np.arange(len(t)) % 2, inner, 1.0)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 80)
    return np.stack(
        [16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))], 1
    )


def _bumps(count: int, depth: float) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 24 * count)
    r = 1 + depth * np.abs(np.sin(t * count / 2))
    return np.stack([r * np.cos(t), 0.7 * r * np.sin(t)], 1)


DOODLES: dict[str, Callable[[Rng], Strokes]] = {
    "smiley": lambda rng: [
        _circle(0, 0, 1),
        _circle(-0.35, -0.3, 0.12),
        _circle(0.35, -0.3, 0.12),
        _circle(0, 0.05, 0.5, 0.2 * np.pi, 0.8 * np.pi) * [1, 1 if rng.random() < 0.7 else -1]
        + [0, 0 if rng.random() < 0.7 else 0.75],
    ],
    "star": lambda rng: [_star(int(rng.integers(5, 8)), rng.uniform(0.35, 0.55))],
    "house": lambda rng: [
        _poly((0, 1), (0, 0.4), (1, 0.4), (1, 1), (0, 1)),
        _poly((-0.1, 0.45), (0.5, -0.1), (1.1, 0.45)),
        _poly((0.4, 1), (0.4, 0.7), (0.6, 0.7), (0.6, 1)),
    ],
    "heart": lambda rng: [_heart()],
    "arrow": lambda rng: [_poly((0, 0.5), (1, 0.5)), _poly((0.7, 0.25), (1, 0.5), (0.7, 0.75))],
    "cloud": lambda rng: [_bumps(int(rng.integers(5, 9)), rng.uniform(0.2, 0.35))],
    "sun": lambda rng: (
        [_circle(0, 0, 0.5)]
        + [
            _poly((0.7 * np.cos(a), 0.7 * np.sin(a)), (np.cos(a), np.sin(a)))
            for a in np.linspace(0, 2 * np.pi, 9)[:-1]
        ]
    ),
    "fir tree": lambda rng: [  # a round crown on a trunk would be a 9
        _poly(
            (0, -1), (-0.5, -0.3), (-0.2, -0.3), (-0.8, 0.5), (0.8, 0.5), (0.2, -0.3), (0.5, -0.3), (0, -1)
        ),
        _poly((-0.15, 0.5), (-0.15, 0.9), (0.15, 0.9), (0.15, 0.5)),
    ],
    "flower": lambda rng: (
        [_circle(0, 0, 0.2)]
        + [_circle(0.45 * np.cos(a), 0.45 * np.sin(a), 0.25) for a in np.linspace(0, 2 * np.pi, 7)[:-1]]
        + [_poly((0, 0.2), (0.05, 1.5))]
    ),
    "cat": lambda rng: [
        _circle(0, 0, 1),
        _poly((-0.8, -0.6), (-0.7, -1.4), (-0.2, -0.95)),
        _poly((0.8, -0.6), (0.7, -1.4), (0.2, -0.95)),
        _poly((-0.9, 0.2), (-0.3, 0.3)),
        _poly((0.9, 0.2), (0.3, 0.3)),
        _circle(-0.35, -0.2, 0.1),
        _circle(0.35, -0.2, 0.1),
    ],
    "stick figure": lambda rng: [
        _circle(0, -1.6, 0.35),
        _poly((0, -1.25), (0, 0.2)),
        _poly((-0.7, -0.8), (0, -0.6), (0.7, -0.8)),
        _poly((-0.5, 1.1), (0, 0.2), (0.5, 1.1)),
    ],
    "fish": lambda rng: [
        _circle(0, 0, 1, 0.15 * np.pi, 1.85 * np.pi, ry=0.55),
        _poly((0.85, -0.3), (1.5, 0.35), (1.5, -0.35), (0.85, 0.3)),
    ],
    "spiral": lambda rng: [
        np.stack([(t := np.linspace(0, 2 * np.pi * rng.uniform(2.5, 4), 300)) * np.cos(t), t * np.sin(t)], 1)
    ],
    "car": lambda rng: [
        _poly(
            (-1, 0.3),
            (-1, -0.1),
            (-0.5, -0.1),
            (-0.3, -0.5),
            (0.4, -0.5),
            (0.6, -0.1),
            (1, -0.1),
            (1, 0.3),
            (-1, 0.3),
        ),
        _circle(-0.55, 0.35, 0.2),
        _circle(0.55, 0.35, 0.2),
    ],
    "cross-hatch": lambda rng: (
        [_poly((0, y), (1, y + 0.1)) for y in (0.2, 0.5, 0.8)]
        + [_poly((x, 0), (x + 0.1, 1)) for x in (0.2, 0.5, 0.8)]
    ),
    "check mark": lambda rng: [_poly((0, 0.55), (0.35, 1), (1, 0))],
    "envelope": lambda rng: [
        _poly((0, 0), (1.4, 0), (1.4, 1), (0, 1), (0, 0)),
        _poly((0, 0), (0.7, 0.55), (1.4, 0)),
    ],
}


def doodles(rng: Rng) -> bytes:
    """Doodles: smileys, stars, houses, hearts, arrows, clouds, suns, trees, flowers, cats, figures ..."""
    name = list(DOODLES)[rng.integers(len(DOODLES))]
    strokes = DOODLES[name](rng)
    if name == "arrow":  # pointing left or right, up to 60 degrees off (an upright arrow is a 1 with a flag)
        a = np.radians(rng.uniform(-60, 60) + 180 * rng.integers(2))
        rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        strokes = [s @ rotation.T for s in strokes]
    return upload(rng, pen_ink(rng, strokes, int(rng.integers(80, 220)), wobble=0.015))


def partial_strokes(rng: Rng) -> bytes:
    """A fragment, an arc or a wave, as when a drawing is sent half done. Left out: straight lines (the
    generic filter), closed loops and hooks (by construction): they are a 1, a 0, a 7 or a J."""
    if rng.random() < 0.5:
        start = rng.uniform(0, 2 * np.pi)
        stroke = _circle(0, 0, 1, start, start + rng.uniform(0.4, 1.1) * np.pi, ry=rng.uniform(0.4, 1))
    else:
        t = np.linspace(0, 2 * np.pi * rng.uniform(1.2, 2.5), 120)
        stroke = np.stack([t / t[-1] * rng.uniform(2, 4), rng.uniform(0.3, 0.8) * np.sin(t)], 1)
    return upload(rng, pen_ink(rng, [stroke], int(rng.integers(40, 200)), wobble=0.01))


def _grey(rng: Rng, values: np.ndarray) -> Image.Image:
    """A float [h, w] pattern in [0, 1] as dark-on-light or light-on-dark 8-bit grey, random contrast."""
    low, high = sorted(rng.uniform(0, 255, 2))
    high = max(high, low + 60)
    return Image.fromarray(np.clip(low + (high - low) * values, 0, 255).astype(np.uint8))


def textures(rng: Rng) -> bytes:
    """Regular and irregular textures: stripes, checkerboards, dots, hatching, bricks, waves, blobs."""
    h, w = int(rng.integers(40, 700)), int(rng.integers(40, 700))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, np.pi)
    u, v = xs * np.cos(a) + ys * np.sin(a), -xs * np.sin(a) + ys * np.cos(a)
    period = rng.uniform(4, max(6.0, min(h, w) / 3))
    style = rng.integers(7)
    if style == 0:  # stripes, sharp or soft
        values = 0.5 + 0.5 * np.sin(2 * np.pi * u / period)
        values = values > 0.5 if rng.random() < 0.5 else values
    elif style == 1:  # checkerboard
        values = (np.floor(u / period) + np.floor(v / period)) % 2
    elif style == 2:  # dots
        r = rng.uniform(0.15, 0.4) * period
        values = np.hypot((u % period) - period / 2, (v % period) - period / 2) < r
    elif style == 3:  # cross-hatching
        values = ((u % period) < period * 0.2) | ((v % period) < period * 0.2)
    elif style == 4:  # bricks
        row = np.floor(v / period)
        values = ((v % period) < period * 0.15) | (((u + row * period) % (2 * period)) < period * 0.15)
    elif style == 5:  # waves
        values = 0.5 + 0.5 * np.sin(
            2 * np.pi * (u + period * 0.5 * np.sin(2 * np.pi * v / (3 * period))) / period
        )
    else:  # blobs: thresholded smooth noise
        small = Image.fromarray((rng.random((max(2, h // 16), max(2, w // 16))) * 255).astype(np.uint8))
        values = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), np.float32) / 255 > rng.uniform(
            0.4, 0.7
        )
    image = _grey(rng, np.asarray(values, np.float32))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    return (
        encode(image, "PNG")
        if rng.random() < 0.6
        else encode(image, "JPEG", quality=int(rng.integers(50, 95)))
    )


def _noise_size(rng: Rng) -> tuple[int, int]:
    """28 to 1000 px, log-uniform, any aspect ratio."""
    side = np.exp(rng.uniform(np.log(28), np.log(1000), 2))
    return int(side[0]), int(side[1])


def _noise_file(rng: Rng, values: np.ndarray) -> bytes:
    image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))
    return (
        encode(image, "PNG")
        if rng.random() < 0.7
        else encode(image, "JPEG", quality=int(rng.integers(50, 95)))
    )


def uniform_noise(rng: Rng) -> bytes:
    """Uniform noise, grey or colour, over a random range, 28 to 1000 px."""
    w, h = _noise_size(rng)
    low, high = sorted(rng.uniform(0, 255, 2))
    shape = (h, w, 3) if rng.random() < 0.5 else (h, w)
    return _noise_file(rng, rng.uniform(low, max(high, low + 20), shape))


def gaussian_noise(rng: Rng) -> bytes:
    """Gaussian noise around a random grey level, grey or colour, 28 to 1000 px."""
    w, h = _noise_size(rng)
    shape = (h, w, 3) if rng.random() < 0.5 else (h, w)
    return _noise_file(rng, rng.normal(rng.uniform(30, 225), rng.uniform(10, 90), shape))


def salt_and_pepper(rng: Rng) -> bytes:
    """Black and white specks (1 to 40 % of pixels) on a grey, white or black field, 28 to 1000 px."""
    w, h = _noise_size(rng)
    field = np.full((h, w), float(rng.choice([0, 255, rng.uniform(60, 200)])))
    hits = rng.random((h, w)) < rng.uniform(0.01, 0.4)
    field[hits] = np.where(rng.random(int(hits.sum())) < 0.5, 0, 255)
    return _noise_file(rng, field)


def smooth_noise(rng: Rng) -> bytes:
    """Blurred noise: clouds and blotches at random scales."""
    w, h = _noise_size(rng)
    values = rng.normal(128, 60, (h, w))
    image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(rng.uniform(1, 12))), np.float32)
    return _noise_file(rng, 128 + (blurred - blurred.mean()) * 255 / max(float(np.ptp(blurred)), 1.0))


def raw_noise(rng: Rng) -> np.ndarray:
    """28 x 28 uint8 noise sent as pixels (JSON, octet-stream, V2), which bypasses the image pipeline."""
    style = rng.integers(4)
    if style == 0:
        values = rng.uniform(0, rng.uniform(30, 256), (28, 28))
    elif style == 1:
        values = rng.normal(rng.uniform(0, 128), rng.uniform(10, 90), (28, 28))
    elif style == 2:
        values = (rng.random((28, 28)) < rng.uniform(0.02, 0.5)) * 255.0
    else:
        small = rng.random((int(rng.integers(3, 10)),) * 2) * 255
        values = np.asarray(
            Image.fromarray(small.astype(np.uint8)).resize((28, 28), Image.Resampling.BICUBIC), float
        )
    return np.clip(values, 0, 255).astype(np.uint8)


@cache
def _photos() -> tuple[Path, ...]:
    """Natural photos shipped with scikit-image and matplotlib (no text, no digits, no coins: they are 0s)."""
    names = (
        "astronaut.png",
        "camera.png",
        "chelsea.png",
        "coffee.png",
        "rocket.jpg",
        "motorcycle_left.png",
        "hubble_deep_field.jpg",
        "moon.png",
        "grass.png",
        "gravel.png",
        "brick.png",
        "clock_motion.png",
        "retina.jpg",
        "cell.png",
        "ihc.png",
    )
    skimage = resources.files("skimage") / "data"
    paths = [Path(str(skimage / name)) for name in names]
    paths.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise RuntimeError(f"sample photos missing: {missing} (pip install scikit-image matplotlib)")
    return tuple(paths)


@cache
def _photo(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def photo_crops(rng: Rng) -> bytes:
    """A random crop of a natural photo (people, animals, objects, space, textures), rescaled, PNG or JPEG
    (held out)."""
    photos = _photos()
    image = _photo(photos[rng.integers(len(photos))])
    side = int(np.exp(rng.uniform(np.log(28), np.log(min(image.size)))))
    w = min(image.width, int(side * rng.uniform(0.7, 1.4)))
    h = min(image.height, side)
    left, top = int(rng.integers(0, image.width - w + 1)), int(rng.integers(0, image.height - h + 1))
    crop = image.crop((left, top, left + w, top + h))
    if rng.random() < 0.5:
        scale = rng.uniform(0.5, 2)
        crop = crop.resize((max(8, int(w * scale)), max(8, int(h * scale))), Image.Resampling.BILINEAR)
    if rng.random() < 0.3:
        crop = crop.convert("L")
    return (
        encode(crop, "JPEG", quality=int(rng.integers(50, 95))) if rng.random() < 0.5 else encode(crop, "PNG")
    )


@dataclass(frozen=True)
class Kind:
    make: Callable[[Rng], bytes | np.ndarray]
    trained: bool  # False: held out of training, reported separately
    # A shape a reader sees as drawn or printed: only there is a lone straight stroke a "1", so only these
    # drop stroke-like images in the figures. Noise, textures and photos are never digits to a reader,
    # whatever the pipeline makes of them, so the figures score them all. (Training drops stroke-like
    # images of every kind: it never learns to reject a 1.)
    drawn: bool


KINDS: dict[str, Kind] = {
    "printed letters": Kind(printed_letters, trained=True, drawn=True),
    "pen letters": Kind(pen_letters, trained=True, drawn=True),
    "scribbles": Kind(scribbles, trained=True, drawn=True),
    "doodles": Kind(doodles, trained=True, drawn=True),
    "partial strokes": Kind(partial_strokes, trained=True, drawn=True),
    "textures": Kind(textures, trained=True, drawn=False),
    "uniform noise": Kind(uniform_noise, trained=True, drawn=False),
    "Gaussian noise": Kind(gaussian_noise, trained=True, drawn=False),
    "salt-and-pepper noise": Kind(salt_and_pepper, trained=True, drawn=False),
    "smooth noise": Kind(smooth_noise, trained=True, drawn=False),
    "raw-pixel noise (no pipeline)": Kind(raw_noise, trained=True, drawn=False),
    "photo crops (held out)": Kind(photo_crops, trained=False, drawn=False),
    "printed symbols (held out)": Kind(printed_symbols, trained=False, drawn=True),
    "pen kana and kanji (held out)": Kind(pen_kana, trained=False, drawn=True),
}
TRAINED = [name for name, kind in KINDS.items() if kind.trained]
HELD_OUT = [name for name, kind in KINDS.items() if not kind.trained]


def looks_like_a_stroke(image: np.ndarray) -> bool:
    """A single straight stroke, closer to vertical than horizontal, after preprocessing (ink spread along
    one axis only): that is a 1, so it is no honest negative. Applied to every generated negative. (A flat
    one is a dash: a negative.)"""
    ys, xs = np.nonzero(image > 64)
    if len(ys) < 3:  # faint all over (raw noise): no stroke at all
        return False
    cov = np.cov(np.stack([ys, xs]), aweights=image[ys, xs].astype(np.float64))
    (small, large), vectors = np.linalg.eigh(cov)
    along_y, along_x = np.abs(vectors[:, 1])
    return bool(small < 0.06 * large and along_y >= along_x)
