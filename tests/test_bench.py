"""The benchmark's trivial model honours the serving contract, so comparing against it is fair."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.run import trivial_model
from service.runtime import PROBABILITIES, ModelRuntime


def test_trivial_model_is_servable_and_does_no_work(tmp_path: Path) -> None:
    runtime = ModelRuntime(trivial_model(tmp_path / "trivial.onnx"), "cpu")
    assert (runtime.name, runtime.item_shape) == ("trivial", (1, 28, 28))
    pixels = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    outputs = runtime.run(runtime.from_pixels(pixels))
    first = pixels.reshape(5, -1)[:, :10] / 255
    np.testing.assert_allclose(outputs["logits"], first, atol=1e-6)
    expected = np.exp(first) / np.exp(first).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(outputs[PROBABILITIES], expected, atol=1e-6)
