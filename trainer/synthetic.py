"""Synthetic images through the service's own image pipeline: realistic digits, digits and non-digits drawn by
the same renderers. What the model trains on is what the service would feed it.

Every image is file bytes -> service.preprocess.load_image -> to_mnist, exactly as an upload (raw-pixel noise
skips the pipeline, as pixel requests do). Rendering costs milliseconds per image, so a set is rendered once
by a pool of processes and cached under a key made of its recipe, the seed, the MNIST digits it draws on and
the source of every module that decides a pixel (the generators and the pipeline).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service import preprocess
from service.preprocess import ImageError, load_image, to_mnist
from trainer import drawing, negatives, realistic
from trainer.data import Split

NOT_DIGIT = -1  # label of a non-digit
MAX_PIXELS = 50_000_000  # above anything generated; the service's own limit is a request policy, not a pixel
CHUNK = 50
CACHE_ENV = "MNIST_RENDER_CACHE"
# The seeds of the three sets: fixed, like the MNIST validation split, so that every candidate trains and is
# chosen on the same images, and the test set is always fresh samples never trained or validated on.
SEEDS = {"train": 1, "validation": 2, "test": 3}


@dataclass(frozen=True)
class Part:
    """`count` items of one kind. source: "realistic" (trainer.realistic, from the given MNIST digits),
    "glyph" (negatives.DIGIT_KINDS: printed and pen digits) or "negative" (negatives.KINDS). Non-digits that
    come out of the pipeline as a single straight stroke (negatives.looks_like_a_stroke) are dropped unless
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


# Kinds a reader sees as a drawn or printed shape: only there is a lone straight stroke a "1". Noise, textures
# and photos are never digits to a reader, whatever the pipeline makes of them, so the figures score them all.
# (Training drops stroke-like images of every kind: it never learns to reject a 1.)
DRAWN = {
    "printed letters",
    "pen letters",
    "scribbles",
    "doodles",
    "partial strokes",
    "printed symbols (held out)",
    "pen kana and kanji (held out)",
}


def recipe(
    realistic_count: int, glyph_count: int, negative_counts: dict[str, int], *, figures: bool = False
) -> list[Part]:
    """A set: every realistic kind, both glyph-digit kinds, and the given negative kinds. `figures`: a set to
    report, where only DRAWN kinds drop stroke-like images."""
    return (
        [Part("realistic", kind, realistic_count) for kind in realistic.KINDS]
        + [Part("glyph", kind, glyph_count) for kind in negatives.DIGIT_KINDS]
        + [
            Part("negative", kind, count, drop_strokes=not figures or kind in DRAWN)
            for kind, count in negative_counts.items()
        ]
    )


# Training: more of the kinds that pass the pipeline and carry information (letters, doodles), fewer noise
# images (most never reach the model: the pipeline rejects them).
TRAIN_NEGATIVES = {
    "printed letters": 3000,
    "pen letters": 3000,
    "scribbles": 1500,
    "doodles": 1500,
    "partial strokes": 1000,
    "textures": 1500,
    "uniform noise": 600,
    "Gaussian noise": 600,
    "salt-and-pepper noise": 600,
    "smooth noise": 800,
    "raw-pixel noise (no pipeline)": 2000,
}
TRAIN = recipe(150, 2000, TRAIN_NEGATIVES)
VALIDATION = recipe(40, 300, dict.fromkeys(negatives.TRAINED, 200))
# The card's figures: modest, as tests/test_shipped_model.py renders them again (bench/notdigit.py: more).
TEST = recipe(60, 150, dict.fromkeys(negatives.KINDS, 150), figures=True)


# --- rendering (in worker processes) ------------------------------------------------------------------------

_digits: Split | None = None


def _set_digits(digits: Split | None) -> None:
    global _digits
    _digits = digits


def _pipeline(data: bytes) -> np.ndarray | None:
    try:
        return to_mnist(load_image(data, MAX_PIXELS))
    except ImageError:
        return None


def _made(part: Part, seed: int, start: int, stop: int) -> Iterator[tuple[bytes | np.ndarray, int]]:
    """The raw items of a part: file bytes (or raw pixels) and label."""
    if part.source == "realistic":  # one sequential generator per kind, as bench/realworld.py draws them
        assert _digits is not None
        yield from realistic.generate(part.kind, _digits.images, _digits.labels, part.count, seed)
        return
    for index in range(start, stop):
        rng = negatives.kind_rng(seed, part.kind, index)
        if part.source == "glyph":
            yield negatives.DIGIT_KINDS[part.kind](rng)
        else:
            yield negatives.KINDS[part.kind].make(rng), NOT_DIGIT


def _render(part: Part, seed: int, start: int, stop: int) -> tuple[list, float]:
    """Items [start, stop) of a part through the pipeline: (image or None, label, excluded) each, and the
    CPU seconds spent."""
    cpu = time.process_time()
    items = []
    for made, label in _made(part, seed, start, stop):
        image = made if isinstance(made, np.ndarray) else _pipeline(made)
        stroke = (
            part.drop_strokes
            and label == NOT_DIGIT
            and image is not None
            and negatives.looks_like_a_stroke(image)
        )
        items.append((image, label, stroke))
    return items, time.process_time() - cpu


def render(parts: list[Part], seed: int, digits: Split | None, workers: int | None = None) -> Rendered:
    """Render the parts with a pool of `workers` processes (default: the usable cores)."""
    jobs = []
    for part in parts:
        if part.source == "realistic":
            jobs.append((part, 0, part.count))
        else:
            jobs.extend(
                (part, start, min(start + CHUNK, part.count)) for start in range(0, part.count, CHUNK)
            )
    jobs.sort(key=lambda job: job[0].source != "realistic")  # the long sequential ones first
    workers = workers or len(os.sched_getaffinity(0))
    with ProcessPoolExecutor(workers, initializer=_set_digits, initargs=(digits,)) as pool:
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
            images.append(image if image is not None else np.zeros((28, 28), np.uint8))
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


# --- cache --------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mnist-serving" / "rendered")


def cache_key(parts: list[Part], seed: int, digits: Split | None) -> str:
    """Everything that decides the pixels: recipe, seed, the digits drawn on, the generators' and the
    pipeline's source code."""
    digest = hashlib.sha256(json.dumps([[p.source, p.kind, p.count] for p in parts] + [seed]).encode())
    for module in (negatives, drawing, realistic, preprocess):
        digest.update(Path(module.__file__).read_bytes())
    if digits is not None:
        digest.update(digits.images.tobytes())
        digest.update(digits.labels.tobytes())
    return digest.hexdigest()[:20]


SMOKE_COUNT = 2  # images of each kind with --limit: every kind still runs, in seconds


def recipe_for(parts: list[Part], smoke: bool) -> list[Part]:
    """The recipe, or with `smoke` the same kinds with SMOKE_COUNT images each."""
    return [Part(p.source, p.kind, SMOKE_COUNT, p.drop_strokes) for p in parts] if smoke else parts


def cached_render(
    name: str, digits: Split | None, smoke: bool = False, workers: int | None = None
) -> Rendered:
    """The named set (train/validation), from the cache when its key matches, else rendered and stored."""
    parts = recipe_for({"train": TRAIN, "validation": VALIDATION}[name], smoke)
    seed = SEEDS[name]
    path = cache_dir() / f"{name}-{cache_key(parts, seed, digits)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as saved:
            meta = json.loads(str(saved["meta"]))
            return Rendered(
                saved["images"],
                saved["labels"],
                saved["kinds"],
                meta["names"],
                saved["found"],
                meta["excluded"],
            )
    rendered = render(parts, seed, digits, workers)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part.npz")
    np.savez_compressed(
        partial,
        images=rendered.images,
        labels=rendered.labels,
        kinds=rendered.kinds,
        found=rendered.found,
        meta=json.dumps({"names": rendered.names, "excluded": rendered.excluded}),
    )
    os.replace(partial, path)
    return rendered
