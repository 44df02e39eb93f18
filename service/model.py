"""The model being served: one object owns the onnxruntime session with its spec and card, the batcher,
readiness and the per-model metric children. Routes call `classify` (uint8 images, /predict) and `infer`
(model inputs, V2) and nothing under it; a reload prepares a new one and swaps it (service/repository.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gc
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service import memory, metrics
from service.batching import Batcher, Outputs
from service.runtime import CPU, DIGIT_SCORE, PROBABILITIES, ModelLoadError, ModelRuntime
from service.settings import Settings

log = logging.getLogger(__name__)

# Reference digits for a model whose metadata carries none (`self_test`, written by the trainer).
SHIPPED_REFERENCES = Path(__file__).with_name("self_test.json")
# A candidate must read at least this share of its reference digits right (a retrained model may differ
# on one or two; a broken export, a permuted output or a wrong normalization misses most).
SELF_TEST_MIN_ACCURACY = 0.9


# Without a threshold in its metadata or MNIST_DIGIT_THRESHOLD, a model's digit_score is read at even odds.
DEFAULT_DIGIT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Classification:
    """What the digit routes need of a batch, and which model computed it."""

    probabilities: np.ndarray  # float32 [n, 10], the most likely digit first among equals
    digit_score: np.ndarray | None  # float32 [n]: P(the input is a digit); None if the model cannot tell
    is_digit: np.ndarray  # bool [n]: digit_score >= threshold, and never for a blank image
    name: str
    version: str


def references(metadata: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Reference images (uint8 [n, 28, 28]) and labels: the model's own `self_test` metadata, else the
    set the service ships."""
    text = metadata.get("self_test") or SHIPPED_REFERENCES.read_text()
    try:
        doc = json.loads(text)
        labels = np.asarray(doc["labels"], dtype=np.int64)
        images = np.frombuffer(base64.b64decode(doc["images"], validate=True), np.uint8)
        return images.reshape(len(labels), 28, 28), labels
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ModelLoadError(f"self_test metadata is malformed: {exc}") from None


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
    """The model at settings.model_path, checked (blocking: run it in a thread). `served`, the model
    serving now, fixes the contract a replacement must keep: the same name and the same input."""
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
    """Warm up every batch shape (no request pays for a first run) and self-test (blocking)."""
    try:
        runtime.warm_up(settings.max_batch_size)
    except Exception as exc:  # onnxruntime's own errors, e.g. a graph that fails at some batch size
        raise ModelLoadError(f"warm-up failed: {exc}") from exc
    self_test(runtime)


def prepare(settings: Settings, served: ModelRuntime | None = None) -> ModelRuntime:
    """load + verify: a model ready to serve, or ModelLoadError saying why not."""
    runtime = load(settings, served)
    verify(runtime, settings)
    return runtime


def digit_threshold(runtime: ModelRuntime, settings: Settings) -> float | None:
    """MNIST_DIGIT_THRESHOLD, else the threshold the trainer chose (ONNX metadata `digit_threshold`);
    None for a model without a digit_score output."""
    if not runtime.scores_digits:
        return None
    if settings.digit_threshold is not None:
        return settings.digit_threshold
    try:
        return float(runtime.metadata.get("digit_threshold", DEFAULT_DIGIT_THRESHOLD))
    except ValueError:
        text = runtime.metadata["digit_threshold"]
        raise ModelLoadError(f"digit_threshold metadata is not a number: {text!r}") from None


def release_memory() -> None:
    """Give what a dropped model held back to the OS (blocking: run it in a thread). Its objects sit in
    reference cycles (batcher and model, a refusal's traceback frames holding the candidate's session) that
    only a full collection frees, and glibc keeps freed heap in its per-thread arenas. Without this a
    worker's RSS grew by about 7 MiB per reload under load (bench/reload.py) until a full collection
    happened to run."""
    gc.collect()
    memory.trim()


class ServedModel:
    """One prepared model in service: its batcher, readiness, leases and metric children."""

    def __init__(self, runtime: ModelRuntime, settings: Settings) -> None:
        self.runtime = runtime
        self.name = runtime.name
        self.version = runtime.version
        self.sha256 = runtime.sha256
        self.threshold = digit_threshold(runtime, settings)
        labels = (self.name, self.version)
        self._info = metrics.MODEL_INFO.labels(*labels, self.sha256, runtime.provider)
        self._confidence = metrics.CONFIDENCE.labels(*labels)
        self._predictions = [metrics.PREDICTIONS.labels(*labels, str(digit)) for digit in range(10)]
        self._not_digits = metrics.PREDICTIONS.labels(*labels, "none")
        self._digit_score = metrics.DIGIT_SCORE.labels(*labels)
        self.batcher = Batcher(
            runtime.run,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_batch_wait_ms,
            max_queue=settings.max_queue,
            queue_wait_s=settings.queue_wait_s,
            timeout_s=settings.request_timeout_s,
            # A GPU run waits on the device: never on the event loop, whatever its size.
            inline_max=settings.inline_batch_max if runtime.provider == CPU else 0,
            labels=labels,
            provider=runtime.provider,
            on_batch=self._observe,
        )
        self._leases = 0
        self._released = asyncio.Event()

    # --- what the routes call ------------------------------------------------------------------------

    async def classify(self, images: np.ndarray) -> Classification:
        """uint8 images [n, h, w] (0..255, 0 = background) -> digit probabilities and whether each is a
        digit at all. A blank image is never a digit (digit_score 0), whatever the model makes of it."""
        outputs = await self.batcher.predict(self.runtime.from_pixels(images))
        blank = images.reshape(len(images), -1).max(axis=1) == 0
        score = outputs.get(DIGIT_SCORE)
        if score is None:
            return Classification(outputs[PROBABILITIES], None, ~blank, self.name, self.version)
        score = np.where(blank, np.float32(0), score)
        return Classification(outputs[PROBABILITIES], score, score >= self.threshold, self.name, self.version)

    async def infer(self, x: np.ndarray) -> Outputs:
        """Model inputs [n, *item_shape] -> every output by name (KServe V2)."""
        return await self.batcher.predict(x)

    def describe(self) -> dict[str, Any]:
        return {**self.runtime.describe(), "digit_threshold": self.threshold}

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Serve: the batcher runs and the model-info metric says this model is active."""
        self.batcher.start()
        self._info.set(1)

    def acquire(self) -> ServedModel:
        """A request starts on this model; it finishes on it even if a reload swaps the model meanwhile."""
        self._leases += 1
        return self

    def release(self) -> None:
        self._leases -= 1
        if not self._leases:
            self._released.set()

    async def retire(self, timeout_s: float) -> None:
        """After a swap: let the requests that started here finish (bounded), then stop and free the
        session, so memory returns to the one-model level."""
        self._info.set(0)
        try:
            await asyncio.wait_for(self._finished(), timeout_s)
        except asyncio.TimeoutError:
            log.warning(
                "model %s %s: requests still running after %g s; stopping it",
                self.name,
                self.version,
                timeout_s,
            )
        await self.batcher.stop()
        del self.runtime.session
        await asyncio.to_thread(release_memory)

    async def _finished(self) -> None:
        while self._leases:
            self._released.clear()
            await self._released.wait()
        await self.batcher.drain()

    async def stop(self) -> None:
        """Shutdown: queued requests get 503."""
        self._info.set(0)
        await self.batcher.stop()

    def _observe(self, outputs: Outputs) -> None:
        """Per-batch prediction metrics, on the event loop: a digit count for inputs the model takes for
        digits, "none" for the others."""
        probabilities = outputs[PROBABILITIES]
        digits = probabilities.argmax(axis=1)
        score = outputs.get(DIGIT_SCORE)
        if score is not None:
            is_digit = score >= self.threshold
            digits = digits[is_digit]
            if rejected := len(is_digit) - len(digits):
                self._not_digits.inc(rejected)
            for value in score.tolist():
                self._digit_score.observe(value)
        for digit, count in enumerate(np.bincount(digits, minlength=10).tolist()):
            if count:
                self._predictions[digit].inc(count)
        for confidence in probabilities.max(axis=1).tolist():
            self._confidence.observe(confidence)
