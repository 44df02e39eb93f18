"""A model file -> a runtime that may serve: the contract a replacement must keep, a warm-up of every batch
shape, and a self-test on reference digits. Blocking: the callers run it in a thread. The CLI runs the same
checks before any worker starts; a reload runs them on every candidate (service/repository.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.contract import PROBABILITIES, Meta, decode_references
from service.runtime import ModelLoadError, ModelRuntime
from service.settings import Settings

# Reference digits for a model whose metadata carries none (`self_test`, written by the trainer).
SHIPPED_REFERENCES = Path(__file__).with_name("self_test.json")
# A candidate must read at least this share of its reference digits right (a retrained model may differ
# on one or two; a broken export, a permuted output or a wrong normalization misses most).
SELF_TEST_MIN_ACCURACY = 0.9
# Without a threshold in its metadata or MNIST_DIGIT_THRESHOLD, a model's digit_score is read at even odds.
DEFAULT_DIGIT_THRESHOLD = 0.5


def references(metadata: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Reference images (uint8 [n, 28, 28]) and labels: the model's own `self_test` metadata, else the
    set the service ships."""
    try:
        return decode_references(metadata.get(Meta.SELF_TEST) or SHIPPED_REFERENCES.read_text())
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None


def self_test(runtime: ModelRuntime) -> None:
    """Refuse a model whose probabilities are not distributions or that misreads its reference digits."""
    images, labels = references(runtime.metadata)
    if images.shape[1:] != runtime.image_shape:
        raise ModelLoadError(
            f"self-test images are {images.shape[1:]}, the model takes {runtime.image_shape}"
        )
    try:
        probabilities = runtime.run(runtime.from_pixels(images))[PROBABILITIES]
    except Exception as exc:  # onnxruntime's own errors, e.g. a graph that fails at this batch size
        raise ModelLoadError(f"self-test failed: the model cannot run {len(images)} images: {exc}") from exc
    if not np.isfinite(probabilities).all() or not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3):
        raise ModelLoadError("self-test failed: probabilities are not finite distributions summing to 1")
    right = float((probabilities.argmax(axis=1) == labels).mean())
    if right < SELF_TEST_MIN_ACCURACY:
        raise ModelLoadError(
            f"self-test failed: {right:.0%} of {len(labels)} reference digits read right "
            f"(at least {SELF_TEST_MIN_ACCURACY:.0%} required)"
        )


def load(settings: Settings, served: ModelRuntime | None = None) -> ModelRuntime:
    """The model at settings.model_path, checked. `served`, the model serving now, fixes the contract a
    replacement must keep: the same name and the same input."""
    runtime = ModelRuntime(settings.model_path, settings.providers, settings.threads_per_worker)
    if served is not None:
        if runtime.name != served.name:
            raise ModelLoadError(f"candidate is named {runtime.name!r}; this server serves {served.name!r}")
        if runtime.input != served.input:
            raise ModelLoadError(
                f"candidate input {runtime.input.as_dict()} differs from the served {served.input.as_dict()}"
            )
    digit_threshold(runtime, settings)  # a malformed threshold is the candidate's fault, found now
    return runtime


def verify(runtime: ModelRuntime, settings: Settings) -> None:
    """Warm up every batch shape (no request pays for a first run) and self-test."""
    try:
        runtime.warm_up(settings.max_batch_size, settings.warmup_min_s)
    except Exception as exc:  # onnxruntime's own errors, e.g. a graph that fails at some batch size
        raise ModelLoadError(f"warm-up failed: {exc}") from exc
    self_test(runtime)


def prepare(settings: Settings, served: ModelRuntime | None = None) -> ModelRuntime:
    """load + verify: a model ready to serve, or ModelLoadError saying why not."""
    runtime = load(settings, served)
    verify(runtime, settings)
    return runtime


def digit_threshold(runtime: ModelRuntime, settings: Settings) -> float | None:
    """MNIST_DIGIT_THRESHOLD, else the threshold the trainer chose (metadata `digit_threshold`); None for a
    model without a digit_score output."""
    if not runtime.scores_digits:
        return None
    if settings.digit_threshold is not None:
        return settings.digit_threshold
    text = runtime.metadata.get(Meta.DIGIT_THRESHOLD)
    try:
        return float(text) if text is not None else DEFAULT_DIGIT_THRESHOLD
    except ValueError:
        raise ModelLoadError(f"digit_threshold metadata is not a number: {text!r}") from None
