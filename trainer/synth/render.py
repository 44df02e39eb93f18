"""Rendering a set: every item's file bytes through the service's image pipeline, by a pool of processes.

Every image is file bytes -> `through_pipeline` -> 28 x 28, exactly as an upload (raw-pixel noise skips the
pipeline, as pixel requests do). What the model trains on is what the service would feed it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service import images
from service.contract import SIDE
from service.images import ImageError, read_digit  # ImageError: what through_pipeline raises
from trainer.data import Split
from trainer.synth import Rng, digits, negatives

NOT_DIGIT = -1  # label of a non-digit
MAX_PIXELS = 50_000_000  # above anything generated; the service's own limit is a request policy, not a pixel
CHUNK = 50
# The pipeline's source decides pixels too: trainer.synth.cache keys rendered sets by it.
PIPELINE_SOURCES = tuple(sorted(Path(images.__file__).parent.glob("*.py")))


def through_pipeline(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An uploaded file as the service preprocesses it: uint8 [28, 28], white ink on black. The one call
    into the service's image pipeline; ImageError (e.g. "no digit found") when the service would refuse it."""
    return read_digit(data, max_pixels)


@dataclass(frozen=True)
class Part:
    """`count` items of one kind. source: "realistic" (digits.KINDS, from the given MNIST digits), "glyph"
    (digits.GLYPH_KINDS: printed and pen digits) or "negative" (negatives.KINDS). Non-digits that come out of
    the pipeline as a single straight stroke (negatives.looks_like_a_stroke) are dropped unless
    `drop_strokes` is off."""

    source: str
    kind: str
    count: int
    drop_strokes: bool = True


@dataclass
class Rendered:
    images: np.ndarray  # uint8 [n, 28, 28]; zeros where the pipeline found no digit
    labels: np.ndarray  # int64 [n]: 0-9, or NOT_DIGIT
    kinds: np.ndarray  # int64 [n]: index into names
    names: list[str]
    found: np.ndarray  # bool [n]: the pipeline produced an image (False: "no digit found", rejected)
    excluded: dict[str, int]  # per negative kind: items left out as a single straight stroke (a 1)
    cpu_seconds: float = 0.0  # rendering, all processes (0 when read from the cache)

    def of(self, name: str) -> np.ndarray:
        """Mask of one kind's items."""
        return self.kinds == self.names.index(name)

    @property
    def is_digit(self) -> np.ndarray:
        return self.labels != NOT_DIGIT


def kind_rng(seed: int, kind: str, index: int) -> Rng:
    """One generator per (seed, kind, item): any item can be made alone, so a pool of processes can split
    the work and the result does not depend on how."""
    return np.random.default_rng([seed, *kind.encode(), index])


# --- in worker processes ------------------------------------------------------------------------------------

_digits: Split | None = None


def _set_digits(mnist: Split | None) -> None:
    global _digits
    _digits = mnist


def _made(part: Part, seed: int, start: int, stop: int) -> Iterator[tuple[bytes | np.ndarray, int]]:
    """The raw items of a part: file bytes (or raw pixels) and label."""
    if part.source == "realistic":  # one sequential generator per kind, as bench/realworld.py draws them
        assert _digits is not None
        yield from digits.generate(part.kind, _digits.images, _digits.labels, part.count, seed)
        return
    for index in range(start, stop):
        rng = kind_rng(seed, part.kind, index)
        if part.source == "glyph":
            yield digits.GLYPH_KINDS[part.kind](rng)
        else:
            yield negatives.KINDS[part.kind].make(rng), NOT_DIGIT


def _image(made: bytes | np.ndarray) -> np.ndarray | None:
    """Raw pixels as they are, a file through the pipeline; None where the pipeline refuses it."""
    if isinstance(made, np.ndarray):
        return made
    try:
        return through_pipeline(made)
    except ImageError:
        return None


def _render(part: Part, seed: int, start: int, stop: int) -> tuple[list, float]:
    """Items [start, stop) of a part through the pipeline: (image or None, label, excluded) each, and the
    CPU seconds spent."""
    cpu = time.process_time()
    items = []
    for made, label in _made(part, seed, start, stop):
        image = _image(made)
        stroke = (
            part.drop_strokes
            and label == NOT_DIGIT
            and image is not None
            and negatives.looks_like_a_stroke(image)
        )
        items.append((image, label, stroke))
    return items, time.process_time() - cpu


# --- in the parent ------------------------------------------------------------------------------------------


def _jobs(parts: list[Part]) -> list[tuple[Part, int, int]]:
    """A realistic part is one job (one sequential generator); the others are split into CHUNKs. The long
    sequential ones first."""
    jobs = []
    for part in parts:
        if part.source == "realistic":
            jobs.append((part, 0, part.count))
        else:
            jobs.extend(
                (part, start, min(start + CHUNK, part.count)) for start in range(0, part.count, CHUNK)
            )
    jobs.sort(key=lambda job: job[0].source != "realistic")
    return jobs


def render(parts: list[Part], seed: int, mnist: Split | None, workers: int | None = None) -> Rendered:
    """Render the parts (realistic ones from the `mnist` digits) with a pool of `workers` processes
    (default: the usable cores)."""
    jobs = _jobs(parts)
    workers = workers or len(os.sched_getaffinity(0))
    with ProcessPoolExecutor(workers, initializer=_set_digits, initargs=(mnist,)) as pool:
        futures = [pool.submit(_render, part, seed, start, stop) for part, start, stop in jobs]
        results = {(job[0], job[1]): future.result() for job, future in zip(jobs, futures, strict=True)}
    names = [part.kind for part in parts]
    images, labels, kinds, found = [], [], [], []
    excluded = {part.kind: 0 for part in parts if part.source == "negative"}
    cpu = 0.0
    for part, start, _ in sorted(jobs, key=lambda job: (names.index(job[0].kind), job[1])):
        items, seconds = results[(part, start)]
        cpu += seconds
        for image, label, left_out in items:
            if left_out:
                excluded[part.kind] += 1
                continue
            images.append(image if image is not None else np.zeros((SIDE, SIDE), np.uint8))
            labels.append(label)
            kinds.append(names.index(part.kind))
            found.append(image is not None)
    return Rendered(
        np.stack(images),
        np.asarray(labels, np.int64),
        np.asarray(kinds, np.int64),
        names,
        np.asarray(found, bool),
        excluded,
        cpu,
    )
