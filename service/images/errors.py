"""What the image pipeline refuses, and how a caller stops it. No HTTP here: the decode pool maps each kind to
the service's error vocabulary (service/images/pool.py)."""

from __future__ import annotations

from collections.abc import Callable


class ImageError(ValueError):
    """An upload the pipeline cannot use."""


class UnsupportedFormat(ImageError):
    pass


class ImageTooLarge(ImageError):
    pass


class CorruptImage(ImageError):
    pass


class NoDigitFound(ImageError):
    pass


class Stopped(Exception):
    """Raised by a caller's checkpoint to abandon a decode (the client left, the deadline passed)."""


Checkpoint = Callable[[], None]  # called between steps of a long decode; raises Stopped to abandon it


def never_stop() -> None:
    """The checkpoint of work too short to be worth stopping."""
