"""Photo-like images and textures made here, never read from a file: natural textures (clouds, marble, wood,
cells, ridges, fibres, grain), gradients, blurred shapes, crops of synthetic scenes, and structured noise
(grids, dot lattices, halftones, moiré, plaids, zone plates, ...); deterministic by seed.

The sample photos that come with packages (scikit-image's, matplotlib's) stay out of training: they are the
held-out "photo crops" kind (trainer.synth.negatives), what anyone checking the service reaches for first.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from trainer.synth import Rng
from trainer.synth.paper import finish, lighting, png_or_jpeg

FIELD_SIDE = (
    192  # smooth fields are computed at most this large, then resized: detail finer than that is grain
)
MAX_DOTS = 3000  # random dots drawn one by one: enough to cover 800 px with 8 px dots
Pattern = Callable[[Rng, np.ndarray, np.ndarray], np.ndarray]  # (rng, x, y in px) -> values in [0, 1]


# --- building blocks ----------------------------------------------------------------------------------------


def _size(rng: Rng, low: int = 28, high: int = 800) -> tuple[int, int]:
    """Width and height, each log-uniform in [low, high]: any aspect ratio."""
    side = np.exp(rng.uniform(np.log(low), np.log(high), 2))
    return int(side[0]), int(side[1])


def _resized(values: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(
        Image.fromarray(values.astype(np.float32), "F").resize((width, height), Image.Resampling.BICUBIC)
    )


def fractal(
    rng: Rng, width: int, height: int, cells: float, octaves: int = 5, gain: float = 0.5
) -> np.ndarray:
    """Fractal (fBm) noise in [0, 1]: octaves of smooth random fields, the first with `cells` blobs across the
    longest side, each next twice as fine and `gain` as strong."""
    scale = min(1.0, FIELD_SIDE / max(width, height))
    w, h = max(2, round(width * scale)), max(2, round(height * scale))
    total = np.zeros((h, w), np.float32)
    for octave in range(octaves):
        across = cells * 2**octave
        if across > max(w, h) / 2:
            break
        grid = rng.random(
            (max(2, round(across * h / max(w, h)) + 1), max(2, round(across * w / max(w, h)) + 1))
        )
        total += gain**octave * _resized(grid, w, h)
    total = _resized(total, width, height) if (w, h) != (width, height) else total
    return (total - total.min()) / max(float(np.ptp(total)), 1e-6)


def _coordinates(rng: Rng, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by a random angle: patterns at any orientation."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    a = rng.uniform(0, np.pi)
    return xs * np.cos(a) + ys * np.sin(a), -xs * np.sin(a) + ys * np.cos(a)


def colours(rng: Rng, values: np.ndarray) -> Image.Image:
    """Values in [0, 1] mapped through 2-4 random colours (or greys, a third of the time), as an image."""
    stops = int(rng.integers(2, 5))
    grey = rng.random() < 1 / 3
    palette = rng.uniform(0, 255, (stops, 1 if grey else 3))
    at = np.sort(np.concatenate([[0, 1], rng.uniform(0, 1, stops - 2)]))
    channels = [np.interp(values, at, palette[:, c]) for c in range(palette.shape[1])]
    image = np.stack(channels, -1) if not grey else channels[0]
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def _photographed(rng: Rng, image: Image.Image, blur: float = 0.4, noise: float = 0.5) -> bytes:
    """Sometimes uneven light, blur and sensor noise; PNG or JPEG."""
    canvas = np.asarray(image.convert("RGB"), np.float32).copy()
    if rng.random() < 0.3:
        lighting(rng, canvas)
    image = finish(rng, canvas, float(rng.uniform(1, 8)) if rng.random() < noise else 0.0)
    if rng.random() < blur:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 2.0)))
    if rng.random() < 0.3:
        image = image.convert("L")
    return png_or_jpeg(rng, image, 0.5, (40, 95))


# --- natural textures ---------------------------------------------------------------------------------------


def _cells(rng: Rng, width: int, height: int) -> np.ndarray:
    """Voronoi cells (stones, scales, cracked mud): distance to the nearest random point, or the gap between
    the two nearest (the cracks)."""
    scale = min(1.0, 96 / max(width, height))
    w, h = max(2, round(width * scale)), max(2, round(height * scale))
    points = rng.random((int(rng.integers(6, 80)), 2)) * (w, h)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    distances = np.hypot(xs[..., None] - points[:, 0], ys[..., None] - points[:, 1])
    nearest = np.sort(np.partition(distances, 1, axis=-1)[..., :2], axis=-1)
    values = nearest[..., 0] if rng.random() < 0.5 else nearest[..., 1] - nearest[..., 0]
    return _resized(values / max(float(values.max()), 1e-6), width, height)


def natural_texture_values(rng: Rng, width: int, height: int) -> np.ndarray:
    """One natural texture in [0, 1]: clouds, marble, wood, cells, ridges, fibres or grain."""
    style = rng.integers(7)
    noise = fractal(rng, width, height, rng.uniform(1, 6), gain=rng.uniform(0.35, 0.65))
    if style == 0:  # clouds
        return noise
    if style in (1, 2):  # marble veins, wood rings: a sine warped by the noise
        u, v = _coordinates(rng, width, height)
        if style == 2:
            u = np.hypot(u - rng.uniform(-0.5, 1.5) * width, (v - rng.uniform(-0.5, 1.5) * height) * 0.3)
        period = rng.uniform(0.03, 0.3) * max(width, height)
        return 0.5 + 0.5 * np.sin(2 * np.pi * u / period + rng.uniform(2, 12) * noise)
    if style == 3:
        return _cells(rng, width, height)
    if style == 4:  # ridges, as rock or terrain
        return (1 - np.abs(2 * noise - 1)) ** rng.uniform(1, 3)
    if style == 5:  # fibres: grass, bark, hair, brushed metal
        long, short = int(rng.integers(20, 80)), 2
        across = rng.random() < 0.5
        fine = rng.random(
            (max(2, height // (short if across else long)), max(2, width // (long if across else short)))
        )
        return np.clip(0.6 * _resized(fine, width, height) + 0.4 * noise, 0, 1)
    grain = rng.random((height, width)).astype(np.float32)  # sand, concrete, paper fibre
    return np.clip(rng.uniform(0.3, 0.7) * grain + rng.uniform(0.3, 0.7) * noise, 0, 1)


def natural_textures(rng: Rng) -> bytes:
    """A natural texture, in colours or greys, 28 to 800 px, any aspect, as if photographed."""
    width, height = _size(rng)
    return _photographed(rng, colours(rng, natural_texture_values(rng, width, height)))


# --- gradients ----------------------------------------------------------------------------------------------


def gradient_values(rng: Rng, width: int, height: int) -> np.ndarray:
    """A linear, radial, conic or four-corner ramp in [0, 1]."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xs, ys = xs / max(width - 1, 1), ys / max(height - 1, 1)
    style = rng.integers(4)
    if style == 0:
        a = rng.uniform(0, 2 * np.pi)
        values = xs * np.cos(a) + ys * np.sin(a)
    elif style == 1:
        values = np.hypot(xs - rng.uniform(-0.2, 1.2), ys - rng.uniform(-0.2, 1.2))
    elif style == 2:
        values = np.arctan2(ys - rng.uniform(0, 1), xs - rng.uniform(0, 1)) / (2 * np.pi) % 1
    else:
        corners = rng.random(4)
        values = (corners[0] * (1 - xs) + corners[1] * xs) * (1 - ys) + (
            corners[2] * (1 - xs) + corners[3] * xs
        ) * ys
    return (values - values.min()) / max(float(np.ptp(values)), 1e-6)


def gradients(rng: Rng) -> bytes:
    """A smooth ramp of colours or greys, sometimes banded (few levels) or vignetted, 28 to 800 px."""
    width, height = _size(rng)
    values = gradient_values(rng, width, height)
    if rng.random() < 0.2:
        levels = int(rng.integers(3, 25))
        values = np.floor(values * levels) / (levels - 1)
    if rng.random() < 0.3:
        ys, xs = np.mgrid[0:height, 0:width]
        values = values * (1 - rng.uniform(0.2, 0.6) * np.hypot(xs / width - 0.5, ys / height - 0.5) ** 2 * 2)
    return _photographed(rng, colours(rng, np.clip(values, 0, 1)), blur=0.2)


# --- shapes: blurred, and scenes ----------------------------------------------------------------------------


def _shape(rng: Rng, draw: ImageDraw.ImageDraw, width: int, height: int, radius: float, fill: tuple) -> None:
    """An ellipse, a rectangle, a polygon or a thick line of about `radius` px at a random place."""
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    rx, ry = radius * rng.uniform(0.4, 1.6), radius * rng.uniform(0.4, 1.6)
    style = rng.integers(4)
    if style == 0:
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)
    elif style == 1:
        draw.rectangle([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)
    elif style == 2:
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 9))))
        draw.polygon([(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles], fill=fill)
    else:
        a = rng.uniform(0, np.pi)
        end = (cx + 2 * rx * np.cos(a), cy + 2 * rx * np.sin(a))
        draw.line([(cx, cy), end], fill=fill, width=max(1, int(ry / 3)))


def _colour(rng: Rng) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def blurred_shapes(rng: Rng) -> bytes:
    """Out-of-focus things: 1 to 12 shapes on a plain or graded background, blurred by 1 to 6 % of the size
    (bokeh discs, a defocused object), 28 to 800 px."""
    width, height = _size(rng)
    background = colours(rng, gradient_values(rng, width, height) * rng.uniform(0, 1)).convert("RGB")
    draw = ImageDraw.Draw(background)
    side = max(width, height)
    for _ in range(int(rng.integers(1, 13))):
        _shape(rng, draw, width, height, side * rng.uniform(0.03, 0.3), _colour(rng))
    image = background.filter(ImageFilter.GaussianBlur(side * rng.uniform(0.01, 0.06)))
    return _photographed(rng, image, blur=0.0)


def _leaf_radius(rng: Rng, side: int) -> float:
    """Dead-leaves sizes: density proportional to 1/r^3 between 1 % and 40 % of the side, so that there are
    objects at every scale, as in photographs."""
    low, high = 0.01 * side, 0.4 * side
    return float(1 / np.sqrt(low**-2 - rng.uniform() * (low**-2 - high**-2)))


def scene(rng: Rng, width: int, height: int) -> Image.Image:
    """A synthetic scene: a sky over textured ground, overlapping objects of every size (a dead-leaves
    picture), some of them textured, light and shade across it."""
    horizon = int(height * rng.uniform(0.1, 0.9))
    sky = colours(rng, gradient_values(rng, width, horizon)).convert("RGB")
    ground = colours(rng, natural_texture_values(rng, width, height - horizon)).convert("RGB")
    image = Image.new("RGB", (width, height))
    image.paste(sky, (0, 0))
    image.paste(ground, (0, horizon))
    draw = ImageDraw.Draw(image)
    side = max(width, height)
    for _ in range(int(rng.integers(40, 400))):
        _shape(rng, draw, width, height, _leaf_radius(rng, side), _colour(rng))
    for _ in range(int(rng.integers(0, 3))):  # textured objects
        mask = Image.new("L", (width, height), 0)
        _shape(rng, ImageDraw.Draw(mask), width, height, side * rng.uniform(0.1, 0.3), 255)
        texture = colours(rng, natural_texture_values(rng, width, height)).convert("RGB")
        image.paste(texture, (0, 0), mask)
    shade = 0.6 + 0.5 * fractal(rng, width, height, rng.uniform(1, 3), octaves=2)
    canvas = np.asarray(image, np.float32) * shade[..., None]
    if rng.random() < 0.5:
        lighting(rng, canvas)
    result = finish(rng, canvas, float(rng.uniform(0, 6)))
    if rng.random() < 0.4:  # out of focus
        result = result.filter(ImageFilter.GaussianBlur(side * rng.uniform(0.002, 0.01)))
    return result


def scene_crops(rng: Rng) -> bytes:
    """A random crop of a synthetic scene (as photo crops are cut from photos), rescaled, sometimes grey, PNG
    or JPEG."""
    width, height = _size(rng, 160, 560)
    image = scene(rng, width, height)
    side = int(np.exp(rng.uniform(np.log(28), np.log(min(width, height)))))
    w, h = min(width, int(side * rng.uniform(0.7, 1.4))), side
    left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    crop = image.crop((left, top, left + w, top + h))
    if rng.random() < 0.5:
        scale = rng.uniform(0.5, 2)
        crop = crop.resize((max(8, int(w * scale)), max(8, int(h * scale))), Image.Resampling.BILINEAR)
    if rng.random() < 0.3:
        crop = crop.convert("L")
    return png_or_jpeg(rng, crop, 0.5, (40, 95))


# --- structured noise ---------------------------------------------------------------------------------------


def _grid(rng: Rng, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    period = rng.uniform(5, 60)
    width = period * rng.uniform(0.08, 0.4)
    lines = (u % period) < width
    return lines | ((v % (period * rng.uniform(0.5, 2))) < width) if rng.random() < 0.7 else lines


def _lattice(rng: Rng, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Dots on a square or hexagonal lattice; with `halftone`, sized by a smooth image (print halftones)."""
    period = rng.uniform(4, 40)
    row = np.floor(v / period)
    shifted = u + (row % 2) * period / 2 if rng.random() < 0.5 else u
    distance = np.hypot((shifted % period) - period / 2, (v % period) - period / 2) / period
    if rng.random() < 0.5:
        h, w = u.shape
        return distance < 0.55 * np.sqrt(fractal(rng, w, h, rng.uniform(1, 4), octaves=3))
    return distance < rng.uniform(0.1, 0.45)


def _moire(rng: Rng, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Two gratings a few degrees or a few percent apart, or two sets of rings: the beat is the pattern."""
    period = rng.uniform(3, 20)
    if rng.random() < 0.3:
        h, w = u.shape
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        centres = rng.uniform(0, 1, (2, 2)) * (w, h)
        rings = [np.sin(2 * np.pi * np.hypot(xs - cx, ys - cy) / period) for cx, cy in centres]
        return 0.5 + 0.25 * (rings[0] + rings[1])
    a = np.radians(rng.uniform(1, 12))
    second = u * np.cos(a) + v * np.sin(a)
    gratings = np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * second / (period * rng.uniform(0.9, 1.1)))
    return gratings > 0 if rng.random() < 0.5 else 0.5 + 0.5 * gratings


def _plaid(rng: Rng, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bands of random widths repeated across and down: tartan, gingham, barcodes (one way only)."""
    widths = rng.uniform(2, 30, int(rng.integers(2, 8)))
    levels = rng.random(len(widths))
    edges = np.cumsum(widths)

    def bands(t: np.ndarray) -> np.ndarray:
        return levels[np.searchsorted(edges, t % edges[-1], side="right").clip(0, len(levels) - 1)]

    return bands(u) if rng.random() < 0.3 else 0.5 * (bands(u) + bands(v))


def _zone_plate(rng: Rng, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A chirp: rings (or stripes) ever closer, aliasing into moiré where they get fine."""
    h, w = u.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = (xs - rng.uniform(0, w)) ** 2 + ((ys - rng.uniform(0, h)) ** 2 if rng.random() < 0.7 else 0)
    return 0.5 + 0.5 * np.cos(np.pi * r2 / rng.uniform(50, 2000))


def _dots(rng: Rng, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Random dots: a spray, a speckle, polka dots at random places."""
    h, w = u.shape
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    radius = rng.uniform(1, 8)
    count = min(MAX_DOTS, int(rng.uniform(0.05, 0.5) * w * h / (np.pi * radius**2)))
    for x, y, r in zip(
        rng.uniform(0, w, count), rng.uniform(0, h, count), rng.uniform(0.5, 1.5, count) * radius, strict=True
    ):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    return np.asarray(layer, np.float32) / 255


def _warped(rng: Rng, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A checkerboard or stripes warped by smooth noise (fabric folds, a fingerprint, wood grain)."""
    h, w = u.shape
    amount = rng.uniform(5, 40)
    du = amount * (fractal(rng, w, h, rng.uniform(1, 4), octaves=3) - 0.5)
    dv = amount * (fractal(rng, w, h, rng.uniform(1, 4), octaves=3) - 0.5)
    period = rng.uniform(4, 40)
    if rng.random() < 0.5:
        return (np.floor((u + du) / period) + np.floor((v + dv) / period)) % 2
    return 0.5 + 0.5 * np.sin(2 * np.pi * (u + du) / period)


STRUCTURES: tuple[Pattern, ...] = (_grid, _lattice, _moire, _plaid, _zone_plate, _dots, _warped)


def structured_noise(rng: Rng) -> bytes:
    """A regular or semi-regular pattern (grids, dot lattices, halftones, moiré, plaids, zone plates, random
    dots, warped checkerboards and stripes), in colours or greys, 28 to 800 px, as if photographed."""
    width, height = _size(rng)
    u, v = _coordinates(rng, width, height)
    values = np.asarray(STRUCTURES[rng.integers(len(STRUCTURES))](rng, u, v), np.float32)
    return _photographed(rng, colours(rng, np.clip(values, 0, 1)))
