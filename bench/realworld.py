"""Accuracy on realistic images (photos, scans, canvas exports, fonts) vs MNIST test: same model and pipeline.

    MNIST_DATA_DIR=... python -m bench.realworld [--per-kind 300] [--model models/lenet5.onnx]

Every image goes the service's way: file bytes -> service.images.read_grey -> to_mnist -> the ONNX model.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.core import SHIPPED_MODEL, parser
from service.contract import PROBABILITIES
from service.runtime import ModelRuntime
from service.settings import Settings, cores
from trainer.synth import render
from trainer.synth.digits import KINDS, generate, mnist_test
from trainer.synth.paper import encode

MAX_PIXELS = Settings().max_image_pixels


def predict(runtime: ModelRuntime, images: np.ndarray) -> np.ndarray:
    """Digits for uint8 [n, 28, 28] MNIST-convention images, scaled and run as the service does."""
    return runtime.run(runtime.from_pixels(images))[PROBABILITIES].argmax(1)


def through_pipeline(files: list[bytes]) -> tuple[np.ndarray, np.ndarray, float]:
    """Preprocessed images, a mask of those that yielded a digit, and mean CPU ms per file (process time:
    other jobs on shared cores disturb it far less than wall time)."""
    out = np.zeros((len(files), 28, 28), dtype=np.uint8)
    ok = np.zeros(len(files), dtype=bool)
    start = time.process_time()
    for i, data in enumerate(files):
        try:
            out[i] = render.through_pipeline(data, MAX_PIXELS)
            ok[i] = True
        except render.ImageError:
            pass
    return out, ok, (time.process_time() - start) * 1000 / max(1, len(files))


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    options.add_argument("--data", type=Path, default=Path(os.environ.get("MNIST_DATA_DIR", "data/mnist")))
    options.add_argument("--per-kind", type=int, default=300)
    options.add_argument("--seed", type=int, default=0)
    args = options.parse_args()

    runtime = ModelRuntime(args.model, "cpu", cores())
    images, labels = mnist_test(args.data)
    rows = []
    raw = float((predict(runtime, images) == labels).mean())
    rows.append(("MNIST test, raw pixels", len(images), raw, 1.0, 0.0))
    files = [encode(Image.fromarray(image), "PNG") for image in images]
    done, ok, ms = through_pipeline(files)
    baseline = float((predict(runtime, done) == labels)[ok].sum() / len(labels))
    rows.append(("MNIST test, PNG through pipeline", len(images), baseline, float(ok.mean()), ms))
    for kind in KINDS:
        pairs = list(generate(kind, images, labels, args.per_kind, args.seed))
        done, ok, ms = through_pipeline([data for data, _ in pairs])
        truth = np.array([label for _, label in pairs])
        accuracy = float(((predict(runtime, done) == truth) & ok).mean())
        rows.append((kind, len(pairs), accuracy, float(ok.mean()), ms))

    print(
        f"model {args.model.name} version {runtime.version}; "
        f"{args.per_kind} images per kind (seed {args.seed}); "
        "a file with no digit found counts as wrong"
    )
    print(
        f"| {'images':32} | {'n':>5} | {'accuracy':>8} | {'vs pipeline MNIST':>17} | {'digit found':>11} "
        f"| {'CPU ms/image':>12} |"
    )
    print(f"|{'-' * 34}|{'-' * 7}:|{'-' * 9}:|{'-' * 18}:|{'-' * 12}:|{'-' * 13}:|")
    for name, n, accuracy, found, ms in rows:
        delta = 100 * (accuracy - baseline)
        print(
            f"| {name:32} | {n:5} | {100 * accuracy:7.2f}% | {delta:+16.2f}pt | {100 * found:10.1f}% "
            f"| {ms:12.2f} |"
        )


if __name__ == "__main__":
    main()
