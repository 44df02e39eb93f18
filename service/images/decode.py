"""Image file bytes -> 8-bit grey at a working resolution, safely: the header is read and its size checked
before anything is decoded; JPEG decodes grey at reduced scale straight from the DCT, other formats are
reduced a band of rows at a time right after decoding, so no full-size converted copy is made."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import cv2
import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from service.images.errors import (
    Checkpoint,
    CorruptImage,
    ImageTooLarge,
    Stopped,
    UnsupportedFormat,
    never_stop,
)

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
WIDE_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")  # 16-bit and float TIFF/PNG: stretched to 8 bits
# Working resolution: images are reduced by a whole factor to a longest side in [WORK_SIDE, 2 * WORK_SIDE) (a
# whole factor is what JPEG decodes at directly and what Pillow reduces fastest). A digit a tenth of the image
# tall is then >= 32 px, enough for a 20 px MNIST digit; the kinds of bench/realworld.py lose no accuracy.
WORK_SIDE = 320
BAND_PIXELS = 1 << 20  # a large image is converted and reduced this many source pixels at a time
READ_BLOCK = 16 * 1024  # Pillow decodes as it reads: a checkpoint every 16 KB of compressed data


class _Upload(io.BytesIO):
    """The uploaded bytes as the file Pillow reads; every read is a checkpoint."""

    def __init__(self, data: bytes, checkpoint: Checkpoint) -> None:
        super().__init__(data)
        self.checkpoint = checkpoint

    def read(self, size: int | None = -1) -> bytes:
        self.checkpoint()
        return super().read(size)


def open_image(data: bytes, max_pixels: int, checkpoint: Checkpoint = never_stop) -> Image.Image:
    """The header only: format known, size checked against `max_pixels`; nothing is decoded yet."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked below
            image = Image.open(_Upload(data, checkpoint), formats=FORMATS)
    except UnidentifiedImageError:
        raise UnsupportedFormat("unsupported image format: send PNG, JPEG, BMP, GIF, WebP or TIFF") from None
    except Image.DecompressionBombError:
        raise _too_large(max_pixels) from None
    except Stopped:
        raise
    except Exception:  # any failure parsing untrusted bytes is the client's corrupt image, never a 500
        raise _corrupt() from None
    width, height = image.size
    if width * height > max_pixels:
        raise _too_large(max_pixels)
    if width == 0 or height == 0:
        raise _corrupt()
    return image


def to_grey(image: Image.Image, checkpoint: Checkpoint = never_stop) -> Image.Image:
    """An opened image -> 8-bit grey ('L') at the working resolution: EXIF-oriented, first frame of an
    animation, transparency flattened onto paper. Memory: the decoded image plus one band."""
    try:
        if image.format in ("JPEG", "MPO"):  # MPO: multi-picture JPEG from phone cameras
            # grey and at reduced scale straight from the DCT: no chroma, a quarter or less of the pixels
            factor = working_factor(image.size)
            image.draft("L", (image.width // factor, image.height // factor))
        image.decodermaxblock = READ_BLOCK
        image.load()
        grey = Image.fromarray(_grey(image, working_factor(image.size), checkpoint))
        turn = _ORIENTATION.get(image.getexif().get(ExifTags.Base.Orientation, 1))
        return grey.transpose(turn) if turn is not None else grey
    except Stopped:
        raise
    except Exception:
        raise _corrupt() from None
    finally:
        image.close()  # the full-size pixels go now, not whenever the caller drops the image


def read_grey(data: bytes, max_pixels: int, checkpoint: Checkpoint = never_stop) -> Image.Image:
    """Decode bytes to 8-bit grey at the working resolution: size checked before decoding (see to_grey)."""
    return to_grey(open_image(data, max_pixels, checkpoint), checkpoint)


_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _too_large(max_pixels: int) -> ImageTooLarge:
    return ImageTooLarge(f"image too large: more than {max_pixels} pixels")


def _corrupt() -> CorruptImage:
    return CorruptImage("image could not be decoded: corrupt or truncated file")


def working_factor(size: tuple[int, int]) -> int:
    """The whole reduction factor that brings the longest side into [WORK_SIDE, 2 * WORK_SIDE)."""
    return max(1, max(size) // WORK_SIDE)


def _grey(image: Image.Image, factor: int, checkpoint: Checkpoint) -> np.ndarray:
    """One frame as uint8 grey, reduced by `factor`; transparent pixels become paper (canvas exports hide
    black RGB there): white, or black behind light strokes."""
    if image.mode in WIDE_MODES:
        (values,) = _reduced(image, lambda band: [np.asarray(band.convert("F"))], factor, checkpoint)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return scaled.astype(np.uint8)
    if image.has_transparency_data:
        return _flatten(*_reduced(image, _premultiplied, factor, checkpoint))
    (grey,) = _reduced(image, lambda band: [np.asarray(band.convert("L"))], factor, checkpoint)
    return grey


def _premultiplied(band: Image.Image) -> list[np.ndarray]:
    """Grey premultiplied by alpha, and alpha: what averages correctly when reduced."""
    if band.mode != "RGBA":
        band = band.convert("RGBA")  # grey+alpha, palette or colour-key transparency
    grey, alpha = np.asarray(band.convert("L")), np.asarray(band.getchannel("A"))  # 5x faster than "LA"
    return [cv2.multiply(grey, alpha, scale=1 / 255), alpha]


def _reduced(
    image: Image.Image,
    convert: Callable[[Image.Image], list[np.ndarray]],
    factor: int,
    checkpoint: Checkpoint,
) -> list[np.ndarray]:
    """The channels `convert(image)` gives, each reduced by `factor` (box average), a band of rows at a time:
    a full-size converted copy of a large image would be as big again as the decoded one."""
    width, height = image.size
    rows = max(1, BAND_PIXELS // (width * factor)) * factor
    bands = []
    for top in range(0, height, rows):
        checkpoint()
        band = image if rows >= height else image.crop((0, top, width, min(height, top + rows)))
        channels = convert(band)
        if factor > 1:
            channels = [np.asarray(Image.fromarray(channel).reduce(factor)) for channel in channels]
        bands.append(channels)
    return bands[0] if len(bands) == 1 else [np.concatenate(channel) for channel in zip(*bands, strict=True)]


def _flatten(ink: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite premultiplied grey onto paper: white, or black for light strokes on a mostly transparent
    canvas, which white would erase."""
    covered = int(alpha.sum(dtype=np.int64))
    # light strokes: their alpha-weighted mean brightness (premultiplied ink / alpha) is over 160
    if 0 < covered <= 0.5 * 255 * alpha.size and 255 * int(ink.sum(dtype=np.int64)) > 160 * covered:
        return ink
    return cv2.add(ink, cv2.bitwise_not(alpha))  # ink + white x (1 - alpha)
