"""Grey image -> the MNIST 28x28 digit.

MNIST digits are white ink on black, size-normalized so the longest side is 20 px (antialiased, so edges are
grey) and centred by centre of mass in a 28x28 field. Photos and canvas exports differ in polarity, lighting,
paper texture and framing; `to_mnist` removes those differences. OpenCV does the pixel work on uint8 images
(SIMD, and it releases the GIL, so decode threads overlap).
"""

from __future__ import annotations

import contextlib
import functools

import cv2
import numpy as np
from PIL import Image

from service.contract import SIDE
from service.images.decode import working_factor
from service.images.errors import NoDigitFound

# The normalization runs first at a longest side in [COARSE_SIDE, 2 * COARSE_SIDE), and again at the working
# resolution only if the digit found is smaller than DETAIL px there (a 20 px digit made from 32 stays sharp).
COARSE_SIDE = 140
DETAIL = 32
DIGIT_SIDE = 20  # MNIST: longest side of the digit
MIN_CONTRAST = 0.2  # ink must be at least this much darker than paper (fraction of paper brightness)
MIN_DIGIT_FRACTION = 0.04  # a digit spans at least this fraction of the image's longest side ...
MIN_DIGIT_PIXELS = 5  # ... and at least this many working pixels
CLEAN_BACKGROUND = 0.5  # an image at least this much one exact value, ink all on one side of it, is clean


def to_mnist(image: Image.Image, *, fast: bool = True) -> np.ndarray:
    """uint8 (28, 28), white ink on black, centred like MNIST; NoDigitFound when there is none.

    A clean image (a canvas export, an MNIST-style digit: one exact background value, all ink on one side of
    it) takes the fast path: no lighting to correct, no paper lines to remove. `fast=False` forces the full
    photo pipeline (tests compare the two). Both run first at a coarse resolution, and again at the working
    one only when the digit found is too small there to make a sharp 20 px MNIST digit."""
    pixels = _working(image)
    factor = max(1, max(pixels.shape) // COARSE_SIDE)
    if factor > 1:
        with contextlib.suppress(NoDigitFound):  # a small or faint digit may vanish when reduced
            digit, size = _normalize(np.asarray(Image.fromarray(pixels).reduce(factor)), fast)
            if size >= DETAIL:
                return digit
    return _normalize(pixels, fast)[0]


def _normalize(pixels: np.ndarray, fast: bool) -> tuple[np.ndarray, int]:
    """The 28x28 digit, and its longest side in pixels of `pixels`."""
    ink = _clean_ink(pixels) if fast else None
    photo = ink is None
    if ink is None:
        ink = _photo_ink(pixels)
    mask, floor = _threshold(ink)
    if photo:
        mask = _without_paper_lines(mask)
    digit = _crop(ink, _digit(mask), floor)
    return _center(digit), max(digit.shape)


def _working(image: Image.Image) -> np.ndarray:
    """uint8 grey at the working resolution (read_grey's output already is)."""
    grey = image if image.mode == "L" else image.convert("L")
    factor = working_factor(grey.size)
    return np.asarray(grey.reduce(factor) if factor > 1 else grey)


def _no_digit() -> NoDigitFound:
    return NoDigitFound("no digit found")


LEVELS = np.arange(256, dtype=np.float64)
SQUARE = np.ones((3, 3), np.uint8)


def _cumulative(values: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each level 0..255 of uint8 `values` (where `mask` is set): how many are at or below it, and their
    sum."""
    histogram = cv2.calcHist([values], [0], mask, [256], [0, 256]).ravel().astype(np.float64)
    return np.cumsum(histogram), np.cumsum(histogram * LEVELS)


def _quantiles(count: np.ndarray, q: tuple[float, ...]) -> np.ndarray:
    """np.percentile(values, q) (linear interpolation) from the values' cumulative counts: exact for uint8."""
    position = np.asarray(q) / 100 * (count[-1] - 1)
    below = np.floor(position)
    low = np.searchsorted(count, below, side="right")
    high = np.searchsorted(count, np.minimum(below + 1, count[-1] - 1), side="right")
    return low + (position - below) * (high - low)


@functools.lru_cache(maxsize=512)
def _ink_lut(paper_level: int, light_ink: bool) -> np.ndarray:
    """Ink 0..255 for each grey level on paper of one brightness: 1 - paper / paper_level, as in _ink."""
    paper = 255 - LEVELS if light_ink else LEVELS
    ratio = np.clip(np.round(255 * paper / max(paper_level, 1e-3)), 0, 255)
    return (255 - ratio).astype(np.uint8)


def _clean_ink(pixels: np.ndarray) -> np.ndarray | None:
    """Ink of a clean image (see to_mnist), or None when the image is not clean."""
    histogram = cv2.calcHist([pixels], [0], None, [256], [0, 256]).ravel()
    background = int(histogram.argmax())
    if histogram[background] < CLEAN_BACKGROUND * pixels.size:
        return None
    darker, lighter = histogram[:background].any(), histogram[background + 1 :].any()
    if darker and lighter:
        return None
    return cv2.LUT(pixels, _ink_lut(255 - background if lighter else background, bool(lighter)))


def _photo_ink(pixels: np.ndarray) -> np.ndarray:
    """Ink amount (uint8, 255 = full), either polarity. The background is the majority (median); ink is the
    tail farther from it in brightness *ratio*, since light multiplies: shadow halves paper and ink alike."""
    low, median, high = _quantiles(_cumulative(pixels)[0], (0.1, 50, 99.9)) + 8.0  # +8: sensor noise
    return _ink(pixels if median / low >= high / median else cv2.bitwise_not(pixels))


def _ink(paper: np.ndarray) -> np.ndarray:
    """Dark ink on light paper: 1 - paper / the local paper brightness (which removes shadows), x 255."""
    height, width = paper.shape
    block = max(4, -(-max(height, width) // 24))
    grid_h, grid_w = -(-height // block), -(-width // block)
    padded = cv2.copyMakeBorder(
        paper, 0, grid_h * block - height, 0, grid_w * block - width, cv2.BORDER_REPLICATE
    )
    step = max(1, block // 6)  # paper brightness is smooth: a sparse sample of each cell is enough, and fast
    cells = padded.reshape(grid_h, block, grid_w, block)[:, ::step, :, ::step]
    cells = cells.transpose(0, 2, 1, 3).reshape(grid_h, grid_w, -1)
    # the 90th percentile of each cell: paper shows through unless a stroke covers 90% of it
    position = 0.9 * (cells.shape[2] - 1)
    below = int(position)
    above = min(below + 1, cells.shape[2] - 1)
    ordered = np.partition(cells, [below, above], axis=2)
    low, high = ordered[..., below].astype(np.float32), ordered[..., above].astype(np.float32)
    level = low + (position - below) * (high - low)
    # grey closing: dark features up to 4 cells wide (strokes) vanish, large ones (shadows) keep their edges
    square = np.ones((5, 5), np.uint8)
    level = cv2.erode(cv2.dilate(level, square), square)
    background = cv2.resize(level, (grid_w * block, grid_h * block), interpolation=cv2.INTER_LINEAR)
    background = np.maximum(background[:height, :width], 0.15 * max(float(level.max()), 1.0))
    return cv2.bitwise_not(cv2.divide(paper, np.round(background).astype(np.uint8), scale=255))


def _threshold(ink: np.ndarray) -> tuple[np.ndarray, float]:
    """Thresholded ink (uint8 0/1), and the ink level of the background (its median)."""
    count, mass = _cumulative(ink)
    total, total_mass = count[-1], mass[-1]
    if count[round(MIN_CONTRAST * 255) - 1] == total:  # nothing reaches the minimum contrast
        raise _no_digit()
    median, strong = _quantiles(count, (50, 99.9))  # strong: stroke cores, even of a small digit
    with np.errstate(divide="ignore", invalid="ignore"):  # Otsu: the cut with most variance between sides
        between = count * (total - count) * (mass / count - (total_mass - mass) / (total - count)) ** 2
    otsu = int(np.argmax(np.nan_to_num(between)))
    cut = int(max(otsu, 0.4 * strong))  # Otsu alone lets faint shadow edges in beside dark ink
    outside, inside = count[cut], total - count[cut]
    if not inside or not outside:
        raise _no_digit()
    if (total_mass - mass[cut]) / inside - mass[cut] / outside < MIN_CONTRAST * 255:
        raise _no_digit()
    return cv2.threshold(ink, cut, 1, cv2.THRESH_BINARY)[1], float(median)


def _runs(mask: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """Pixels of `mask` inside a width x height all-ink rectangle (with a line: those whose run along it is at
    least that long), or None if there are none. Outside the image counts as paper."""
    kernel = np.ones((height, width), np.uint8)
    eroded = cv2.erode(mask, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.dilate(eroded, kernel) if cv2.countNonZero(eroded) else None


def _without_paper_lines(mask: np.ndarray) -> np.ndarray:
    """`mask` without long thin horizontal/vertical runs; where a stroke crosses a line the run is thick, so
    it is kept."""
    side = max(mask.shape)
    long_run = max(24, side // 10)  # longer than a small image's digit; a line tilted 2 degrees qualifies
    thin = max(2, round(0.008 * side))
    for along, across in (((long_run, 1), (1, thin + 1)), ((1, long_run), (thin + 1, 1))):
        lines = _runs(mask, *along)
        if lines is not None:
            thick = _runs(mask, *across)
            mask = cv2.subtract(mask, lines if thick is None else cv2.subtract(lines, thick))
    return mask


def _digit(mask: np.ndarray) -> tuple[slice, slice, np.ndarray]:
    """The largest 8-connected component and sizeable ones near it (broken strokes); specks and far blobs go.
    Returned as the rows and columns of the digit's box grown by one pixel, and the digit's mask there."""
    count, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
        mask,
        8,
        cv2.CV_32S,
        cv2.CCL_GRANA,  # with stats 3x faster than the default here
    )
    if count < 2:
        raise _no_digit()
    left, top, width, height, areas = stats[1:].T
    main = int(np.argmax(areas))
    size = max(height[main], width[main])
    if size < max(MIN_DIGIT_PIXELS, MIN_DIGIT_FRACTION * max(mask.shape)):
        raise _no_digit()
    if count == 2:  # one component: the digit
        keep = np.ones(1, dtype=bool)
    else:
        right, bottom = left + width - 1, top + height - 1
        gap_y = np.maximum(0, np.maximum(top - bottom[main], top[main] - bottom))
        gap_x = np.maximum(0, np.maximum(left - right[main], left[main] - right))
        near = np.maximum(gap_y, gap_x) <= 0.3 * size
        keep = (areas >= 0.08 * areas[main]) & near
        if areas[keep].sum() < 0.5 * areas.sum():  # ink scattered everywhere: noise or texture, not a digit
            raise _no_digit()
    # one pixel around the digit: the antialiased edge just outside the threshold
    rows = slice(max(0, int(top[keep].min()) - 1), min(mask.shape[0], int((top + height)[keep].max()) + 1))
    cols = slice(max(0, int(left[keep].min()) - 1), min(mask.shape[1], int((left + width)[keep].max()) + 1))
    if count == 2:
        return rows, cols, mask[rows, cols]
    return rows, cols, np.concatenate([[0], keep]).astype(np.uint8)[labels[rows, cols]]


def _crop(ink: np.ndarray, digit: tuple[slice, slice, np.ndarray], floor: float) -> np.ndarray:
    """The digit's grey levels (stroke core -> 1, antialiased edges kept), cropped to its bounding box."""
    rows, cols, mask = digit
    ink = ink[rows, cols]
    level = float(_quantiles(_cumulative(ink, mask)[0], (75,))[0])
    grey = (ink.astype(np.float32) - floor) * (1 / max(level - floor, 1e-6))
    grey = np.minimum(np.maximum(grey, 0.0, out=grey), 1.0, out=grey) * cv2.dilate(mask, SQUARE)  # + halo
    inked_rows = np.flatnonzero(grey.any(axis=1))
    inked_cols = np.flatnonzero(grey.any(axis=0))
    if inked_rows.size == 0:
        raise _no_digit()
    return grey[inked_rows[0] : inked_rows[-1] + 1, inked_cols[0] : inked_cols[-1] + 1]


def _center(digit: np.ndarray) -> np.ndarray:
    """Longest side to 20 px keeping the aspect ratio, then centre of mass at the centre of the field."""
    height, width = digit.shape
    scale = DIGIT_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != (width, height):
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
        digit = np.asarray(Image.fromarray(digit).resize(size, resample))
    digit = np.minimum(np.maximum(digit, 0.0), 1.0)
    total = float(digit.sum())  # not cv2.moments: it takes an N x 2 float array for N points
    cy = float(digit.sum(axis=1) @ np.arange(digit.shape[0])) / total
    cx = float(digit.sum(axis=0) @ np.arange(digit.shape[1])) / total
    top = int(np.clip(round(SIDE / 2 - cy), 0, SIDE - digit.shape[0]))
    left = int(np.clip(round(SIDE / 2 - cx), 0, SIDE - digit.shape[1]))
    field = np.zeros((SIDE, SIDE), dtype=np.float32)
    field[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return np.round(field * 255).astype(np.uint8)
