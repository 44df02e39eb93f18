"""The model being served: one object owns the onnxruntime session with its spec and card, the batcher,
readiness and the per-model metric children, and offers everything a route needs (its input shape, admission
to its queue, its V2 signature and metadata, `classify`, `infer`). Routes take it once per request (a lease,
service/repository.py) and call nothing under it; a reload prepares a new one and swaps it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from service import memory, metrics
from service.batching import Batcher, Outputs
from service.contract import DIGIT_SCORE, PROBABILITIES
from service.loading import digit_threshold
from service.runtime import CPU, ModelRuntime
from service.settings import Settings
from service.v2.core import Signature

log = logging.getLogger(__name__)
PLATFORM = "onnxruntime_onnx"  # the KServe V2 platform name of an ONNX model on onnxruntime


@dataclass(frozen=True)
class Classification:
    """What the digit routes need of a batch, and which model computed it."""

    probabilities: np.ndarray  # float32 [n, 10], the most likely digit first among equals
    digit_score: np.ndarray | None  # float32 [n]: P(the input is a digit); None if the model cannot tell
    is_digit: np.ndarray  # bool [n]: digit_score >= threshold, and never for a blank image
    name: str
    version: str


class ServedModel:
    """One prepared model in service: its batcher, readiness, leases and metric children. `runtime` is the
    repository's (a candidate must keep its contract); routes use the rest."""

    def __init__(self, runtime: ModelRuntime, settings: Settings) -> None:
        self.runtime = runtime
        self.name = runtime.name
        self.version = runtime.version
        self.sha256 = runtime.sha256
        self.threshold = digit_threshold(runtime, settings)
        self.image_shape = runtime.image_shape  # (height, width) of one image, read from the model
        self.signature = Signature(
            runtime.input.name,
            runtime.item_shape,
            {spec.name: spec.datatype for spec in runtime.outputs},
            runtime.from_pixels,
        )
        labels = (self.name, self.version)
        self._info = metrics.MODEL_INFO.labels(*labels, self.sha256, runtime.provider)
        self._confidence = metrics.CONFIDENCE.labels(*labels)
        self._predictions = [metrics.PREDICTIONS.labels(*labels, str(digit)) for digit in range(10)]
        self._not_digits = metrics.PREDICTIONS.labels(*labels, "none")
        self._digit_score = metrics.DIGIT_SCORE.labels(*labels)
        self._batcher = Batcher(
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

    async def admit(self, images: int) -> None:
        """Wait (bounded) until the queue has room for `images` more, before the request's body is read:
        a refusal under overload then costs no read or parse. 503 + Retry-After when there is none."""
        await self._batcher.room(images)

    async def classify(self, images: np.ndarray) -> Classification:
        """uint8 images [n, h, w] (0..255, 0 = background) -> digit probabilities and whether each is a
        digit at all. A blank image is never a digit (digit_score 0), whatever the model makes of it."""
        outputs = await self._batcher.predict(self.runtime.from_pixels(images))
        blank = images.reshape(len(images), -1).max(axis=1) == 0
        score = outputs.get(DIGIT_SCORE)
        if score is None:
            return Classification(outputs[PROBABILITIES], None, ~blank, self.name, self.version)
        score = np.where(blank, np.float32(0), score)
        return Classification(outputs[PROBABILITIES], score, score >= self.threshold, self.name, self.version)

    async def infer(self, x: np.ndarray) -> Outputs:
        """Model inputs [n, *item_shape] -> every output by name (KServe V2)."""
        return await self._batcher.predict(x)

    def describe(self) -> dict[str, Any]:
        """/v1/models/<name>: name, version, sha256, test accuracy, providers, inputs and outputs."""
        return {**self.runtime.describe(), "digit_threshold": self.threshold}

    def metadata(self) -> dict[str, Any]:
        """KServe V2 model metadata: the spec read from the ONNX model (-1 = batch), the digit_score
        threshold under `parameters`."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": PLATFORM,
            "parameters": {"digit_threshold": self.threshold},
            "inputs": [spec.as_dict() for spec in self.runtime.inputs],
            "outputs": [spec.as_dict() for spec in self.runtime.outputs],
        }

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Serve: the batcher runs and the model-info metric says this model is active."""
        self._batcher.start()
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
        await self._batcher.stop()
        del self.runtime.session
        await asyncio.to_thread(memory.release)

    async def _finished(self) -> None:
        while self._leases:
            self._released.clear()
            await self._released.wait()
        await self._batcher.drain()

    async def stop(self) -> None:
        """Shutdown: queued requests get 503."""
        self._info.set(0)
        await self._batcher.stop()

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
