"""Rendered training and validation sets on disk. Rendering costs milliseconds per image, so a set is rendered
once and cached under a key made of its recipe, the seed, the MNIST digits it draws on and the source of
every module that decides a pixel (this package and the service's pipeline)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.data import Mnist, Split
from trainer.synth.recipes import SEEDS, TRAIN, VALIDATION, recipe_for
from trainer.synth.render import PIPELINE_SOURCES, Part, Rendered, render

CACHE_ENV = "MNIST_RENDER_CACHE"
SOURCES = (*sorted(Path(__file__).parent.glob("*.py")), *PIPELINE_SOURCES)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mnist-serving" / "rendered")


def cache_key(parts: list[Part], seed: int, mnist: Split | None) -> str:
    """Everything that decides the pixels: recipe, seed, the digits drawn on, the generators' and the
    pipeline's source code."""
    digest = hashlib.sha256(json.dumps([[p.source, p.kind, p.count] for p in parts] + [seed]).encode())
    for source in SOURCES:
        digest.update(source.read_bytes())
    if mnist is not None:
        digest.update(mnist.images.tobytes())
        digest.update(mnist.labels.tobytes())
    return digest.hexdigest()[:20]


def _load(path: Path) -> Rendered:
    with np.load(path, allow_pickle=False) as saved:
        meta = json.loads(str(saved["meta"]))
        return Rendered(
            saved["images"], saved["labels"], saved["kinds"], meta["names"], saved["found"], meta["excluded"]
        )


def _store(path: Path, rendered: Rendered) -> None:
    """Atomically: a partial file, then a rename."""
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


def cached_render(
    name: str, mnist: Split | None, smoke: bool = False, workers: int | None = None
) -> Rendered:
    """The named set (train/validation), from the cache when its key matches, else rendered and stored."""
    parts = recipe_for({"train": TRAIN, "validation": VALIDATION}[name], smoke)
    seed = SEEDS[name]
    path = cache_dir() / f"{name}-{cache_key(parts, seed, mnist)}.npz"
    if path.is_file():
        return _load(path)
    rendered = render(parts, seed, mnist, workers)
    _store(path, rendered)
    return rendered


@dataclass
class TrainingSets:
    """The synthetic images mnist-train trains and validates on, and what rendering them cost."""

    train: Rendered
    validation: Rendered
    seconds: float  # wall clock
    cpu_seconds: float  # this process and the rendering processes
    cached: bool  # both read from the cache


def training_sets(data: Mnist, smoke: bool, workers: int | None = None) -> TrainingSets:
    """Train and validation sets from the MNIST training and validation digits (cached); tiny with `smoke`."""
    started, cpu_started = time.perf_counter(), time.process_time()
    train = cached_render("train", data.train, smoke, workers)
    validation = cached_render("validation", data.validation, smoke, workers)
    return TrainingSets(
        train,
        validation,
        round(time.perf_counter() - started, 1),
        round(time.process_time() - cpu_started + train.cpu_seconds + validation.cpu_seconds, 1),
        train.cpu_seconds == validation.cpu_seconds == 0,
    )
