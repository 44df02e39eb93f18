"""Real-world image -> MNIST 28x28: decode safely, then normalize photos and canvas exports like MNIST.

MNIST digits are white ink on black, size-normalized so the longest side is 20 px (antialiased, so edges are
grey) and centred by centre of mass in a 28x28 field. Photos and canvas exports differ in polarity, lighting,
paper texture and framing; `to_mnist` removes those differences. numpy + Pillow only.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageError(ValueError):
    """An upload the pipeline cannot use. No HTTP here: service/codecs.py maps each kind to its status."""


class UnsupportedFormat(ImageError):
    pass


class ImageTooLarge(ImageError):
    pass


class CorruptImage(ImageError):
    pass


class NoDigitFound(ImageError):
    pass


FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
WORK_SIDE = 512  # working resolution: keeps a small digit in a phone photo legible, and processing fast
DIGIT_SIDE = 20  # MNIST: longest side of the digit
FIELD = 28
MIN_CONTRAST = 0.2  # ink must be at least this much darker than paper (fraction of paper brightness)
MIN_DIGIT_FRACTION = 0.04  # a digit spans at least this fraction of the image's longest side ...
MIN_DIGIT_PIXELS = 5  # ... and at least this many working pixels


def load_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode bytes to an RGB or L image: size checked before decoding, EXIF-oriented, alpha flattened."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked below
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise UnsupportedFormat("unsupported image format: send PNG, JPEG, BMP, GIF, WebP or TIFF") from None
    except Image.DecompressionBombError:
        raise _too_large(max_pixels) from None
    except Exception:  # any failure parsing untrusted bytes is the client's corrupt image, never a 500
        raise _corrupt() from None
    width, height = image.size
    if width * height > max_pixels:
        raise _too_large(max_pixels)
    if width == 0 or height == 0:
        raise _corrupt()
    try:
        if image.format in ("JPEG", "MPO"):  # MPO: multi-picture JPEG from phone cameras
            image.draft(image.mode, (WORK_SIDE, WORK_SIDE))  # decode at reduced scale: fast for phone photos
        image.load()  # first frame of an animation
        image = ImageOps.exif_transpose(image)
        return _flatten(image)
    except Exception:
        raise _corrupt() from None


def _too_large(max_pixels: int) -> ImageTooLarge:
    return ImageTooLarge(f"image too large: more than {max_pixels} pixels")


def _corrupt() -> CorruptImage:
    return CorruptImage("image could not be decoded: corrupt or truncated file")


def _flatten(image: Image.Image) -> Image.Image:
    """One frame as L or RGB; transparent pixels become paper (canvas exports hide black RGB there): white,
    or black behind light strokes (_backdrop)."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit/float TIFF: stretch to 8 bits
        values = np.asarray(image.convert("F"), dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(scaled.astype(np.uint8))
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _backdrop(rgba)), rgba).convert("RGB")
    return image if image.mode in ("L", "RGB") else image.convert("RGB")


def _backdrop(rgba: Image.Image) -> tuple[int, int, int, int]:
    """White paper; black only for light strokes on a mostly transparent canvas, which white would erase."""
    pixels = np.asarray(rgba, dtype=np.float32)
    alpha = pixels[..., 3] / 255
    coverage = float(alpha.mean())
    if coverage == 0 or coverage > 0.5:
        return (255, 255, 255, 255)
    luma = pixels[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    light = float((luma * alpha).sum() / alpha.sum()) > 160
    return (0, 0, 0, 255) if light else (255, 255, 255, 255)


def to_mnist(image: Image.Image) -> np.ndarray:
    """uint8 (28, 28), white ink on black, centred like MNIST; NoDigitFound when there is none."""
    gray = image.convert("L")
    scale = WORK_SIDE / max(gray.size)
    if scale < 1:
        size = (max(1, round(gray.width * scale)), max(1, round(gray.height * scale)))
        gray = gray.resize(size, Image.Resampling.BOX)
    ink = _ink_map(gray)
    mask = _clean(ink)
    return _center(_crop(ink, mask))


def _no_digit() -> NoDigitFound:
    return NoDigitFound("no digit found")


def _ink_map(gray: Image.Image) -> np.ndarray:
    """Ink amount in [0, 1], either polarity. The background is the majority (median); ink is the tail farther
    from it in brightness *ratio*, since light multiplies: a shadow halves paper and ink alike."""
    pixels = np.asarray(gray, dtype=np.float32)
    low, median, high = np.percentile(pixels, [0.1, 50, 99.9]) + 8.0  # +8: sensor noise in the dark
    return _ink(pixels) if median / low >= high / median else _ink(255.0 - pixels)


def _ink(paper: np.ndarray) -> np.ndarray:
    """Dark ink on light paper, in [0, 1]: divided by the local paper brightness to remove shadows."""
    height, width = paper.shape
    block = max(4, -(-max(height, width) // 24))
    grid_h, grid_w = -(-height // block), -(-width // block)
    padded = np.pad(paper, ((0, grid_h * block - height), (0, grid_w * block - width)), mode="edge")
    step = max(1, block // 6)  # paper brightness is smooth: a sparse sample of each cell is enough, and fast
    cells = padded.reshape(grid_h, block, grid_w, block)[:, ::step, :, ::step]
    cells = cells.transpose(0, 2, 1, 3).reshape(grid_h, grid_w, -1)
    level = np.percentile(cells, 90, axis=2)  # paper shows through unless a stroke covers 90% of a cell
    # grey closing: dark features up to 4 cells wide (strokes) vanish, large ones (shadows) keep their edges
    level = _filter(_filter(level, 5, np.max), 5, np.min)
    background = Image.fromarray(level.astype(np.float32), mode="F").resize(
        (grid_w * block, grid_h * block), Image.Resampling.BILINEAR
    )
    background = np.asarray(background, dtype=np.float32)[:height, :width]
    background = np.maximum(background, 0.15 * max(float(level.max()), 1.0))
    return np.clip(1.0 - paper / background, 0.0, 1.0)


def _filter(values: np.ndarray, size: int, reduce: Callable[..., np.ndarray]) -> np.ndarray:
    """A size x size maximum or minimum filter (edges replicated)."""
    padded = np.pad(values, size // 2, mode="edge")
    h, w = values.shape
    return reduce([padded[i : i + h, j : j + w] for i in range(size) for j in range(size)], axis=0)


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold on values in [0, 1]."""
    counts, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    weights = counts.astype(np.float64)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(weights)
    w1 = w0[-1] - w0
    m0 = np.cumsum(weights * centers)
    m1 = m0[-1] - m0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (m0 / w0 - m1 / w1) ** 2
    return float(edges[int(np.argmax(np.nan_to_num(between))) + 1])


def _clean(ink: np.ndarray) -> np.ndarray:
    """The digit's pixels: thresholded ink without ruled/squared paper lines and isolated specks."""
    if float(ink.max()) < MIN_CONTRAST:
        raise _no_digit()
    strong = float(np.percentile(ink, 99.9))  # the stroke cores, even for a small digit in a big photo
    mask = ink > max(_otsu(ink), 0.4 * strong)  # Otsu alone lets faint shadow edges in beside dark ink
    if not mask.any() or mask.all() or ink[mask].mean() - ink[~mask].mean() < MIN_CONTRAST:
        raise _no_digit()
    mask &= ~_paper_lines(mask)
    return _digit_components(mask)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of ink: row, start column and end column (exclusive) of each, in row-major order."""
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=bool)
    padded[:, 1:-1] = mask
    edges = np.flatnonzero(padded[:, 1:] != padded[:, :-1])  # alternating starts and ends
    rows, starts = np.divmod(edges[0::2], width + 1)
    return rows, starts, edges[1::2] - rows * (width + 1)


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """For every ink pixel, the length of the horizontal run of ink it belongs to."""
    _, starts, ends = _runs(mask)
    out = np.zeros(mask.shape, dtype=np.int32)
    out[mask] = np.repeat(ends - starts, ends - starts)
    return out


def _paper_lines(mask: np.ndarray) -> np.ndarray:
    """Long thin horizontal/vertical runs; where a stroke crosses a line the run is thick, so it is kept."""
    side = max(mask.shape)
    long_run = max(24, side // 10)  # longer than a small image's digit; a line tilted 2 degrees qualifies
    thin = max(2, round(0.008 * side))
    horizontal = _run_lengths(mask)
    vertical = _run_lengths(np.ascontiguousarray(mask.T)).T
    return ((horizontal >= long_run) & (vertical <= thin)) | ((vertical >= long_run) & (horizontal <= thin))


def _components(mask: np.ndarray) -> np.ndarray:
    """8-connected components via horizontal runs: a label per ink pixel, in row-major order."""
    rows, starts, ends = _runs(mask)
    key = mask.shape[1] + 2
    start_keys = rows * key + starts
    end_keys = rows * key + ends
    # runs in the next row touching run i (8-connected) form a contiguous range [first, last)
    first = np.searchsorted(end_keys, (rows + 1) * key + starts, side="left")
    last = np.searchsorted(start_keys, (rows + 1) * key + ends, side="right")
    counts = np.maximum(last - first, 0)
    a = np.repeat(np.arange(len(rows)), counts)
    b = first.repeat(counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    labels = np.arange(len(rows))
    while True:  # min-label propagation with pointer jumping; a few rounds for digit-like shapes
        low = np.minimum(labels[a], labels[b])
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        jumped = labels[labels]
        if np.array_equal(jumped, labels) and np.array_equal(labels[a], labels[b]):
            break
        labels = jumped
    return np.repeat(labels, ends - starts)


def _digit_components(mask: np.ndarray) -> np.ndarray:
    """The largest component and sizeable ones near it (broken strokes); specks and far blobs go."""
    if not mask.any():
        raise _no_digit()
    ids, index, areas = np.unique(_components(mask), return_inverse=True, return_counts=True)
    rows, cols = np.nonzero(mask)  # row-major, like the labels
    top = np.full(len(ids), mask.shape[0])
    left = np.full(len(ids), mask.shape[1])
    bottom = np.zeros(len(ids), dtype=np.int64)
    right = np.zeros(len(ids), dtype=np.int64)
    np.minimum.at(top, index, rows)
    np.minimum.at(left, index, cols)
    np.maximum.at(bottom, index, rows)
    np.maximum.at(right, index, cols)
    main = int(np.argmax(areas))
    size = max(bottom[main] - top[main], right[main] - left[main]) + 1
    if size < max(MIN_DIGIT_PIXELS, MIN_DIGIT_FRACTION * max(mask.shape)):
        raise _no_digit()
    gap_y = np.maximum(0, np.maximum(top - bottom[main], top[main] - bottom))
    gap_x = np.maximum(0, np.maximum(left - right[main], left[main] - right))
    near = np.maximum(gap_y, gap_x) <= 0.3 * size
    keep = (areas >= 0.08 * areas[main]) & near
    if areas[keep].sum() < 0.5 * areas.sum():  # ink scattered everywhere: noise or texture, not a digit
        raise _no_digit()
    digit = np.zeros(mask.shape, dtype=bool)
    digit[mask] = keep[index]
    return digit


def _crop(ink: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The digit's grey levels (stroke core -> 1, antialiased edges kept), cropped to its bounding box."""
    level = float(np.percentile(ink[mask], 75))
    floor = float(np.median(ink))
    halo = _filter(mask, 3, np.max)  # the antialiased edge just outside the threshold
    grey = np.where(halo, np.clip((ink - floor) / max(level - floor, 1e-6), 0.0, 1.0), 0.0)
    rows = np.flatnonzero(grey.any(axis=1))
    cols = np.flatnonzero(grey.any(axis=0))
    if rows.size == 0:
        raise _no_digit()
    return grey[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _center(digit: np.ndarray) -> np.ndarray:
    """Longest side to 20 px keeping the aspect ratio, then centre of mass at the centre of the field."""
    height, width = digit.shape
    scale = DIGIT_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != (width, height):
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
        digit = np.asarray(Image.fromarray(digit.astype(np.float32), mode="F").resize(size, resample))
    digit = np.clip(digit, 0.0, 1.0)
    total = float(digit.sum())
    ys, xs = np.indices(digit.shape)
    cy, cx = (ys * digit).sum() / total, (xs * digit).sum() / total
    top = int(np.clip(round(FIELD / 2 - cy), 0, FIELD - digit.shape[0]))
    left = int(np.clip(round(FIELD / 2 - cx), 0, FIELD - digit.shape[1]))
    field = np.zeros((FIELD, FIELD), dtype=np.float32)
    field[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return np.round(field * 255).astype(np.uint8)
