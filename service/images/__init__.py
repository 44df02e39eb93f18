"""The images wing: uploaded image files -> what the model reads.

- `decode.py`: file bytes -> 8-bit grey at a working resolution (header and size checked first);
- `normalize.py`: grey -> the MNIST 28x28 digit (`to_mnist`);
- `pool.py`: the bounded decode pool the routes use (threads, waits, deadlines, client-gone checks, and the
  pipeline's refusals as API errors).

Everything outside the wing that wants "an upload as the model sees it" (the trainer's synthetic images, the
benchmarks, the tests) calls `read_digit`, so it goes exactly the service's way.
"""

from __future__ import annotations

import cv2
import numpy as np

from service.images.decode import read_grey
from service.images.errors import (
    Checkpoint,
    CorruptImage,
    ImageError,
    ImageTooLarge,
    NoDigitFound,
    Stopped,
    UnsupportedFormat,
    never_stop,
)
from service.images.normalize import to_mnist

# The service has worker processes and decoder threads of its own: OpenCV's pool would oversubscribe cores.
cv2.setNumThreads(1)

__all__ = [
    "Checkpoint",
    "CorruptImage",
    "ImageError",
    "ImageTooLarge",
    "NoDigitFound",
    "Stopped",
    "UnsupportedFormat",
    "never_stop",
    "read_digit",
    "read_grey",
    "to_mnist",
]


def read_digit(data: bytes, max_pixels: int, checkpoint: Checkpoint = never_stop) -> np.ndarray:
    """Image file bytes -> the uint8 28x28 digit the model reads, as for an upload; ImageError otherwise."""
    return to_mnist(read_grey(data, max_pixels, checkpoint))
