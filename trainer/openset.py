"""Digit or not: the threshold rule, AUROC, and the per-kind figures of the model card and bench/notdigit.py.

One definition of each figure, shared by mnist-train (which writes them into the card), bench/notdigit.py and
tests/trainer/test_shipped_model.py (which re-measure them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.contract import DIGIT_SCORE, PROBABILITIES
from trainer.calibrate import auroc
from trainer.data import Split
from trainer.export import run_onnx
from trainer.synth.recipes import SEEDS, TEST
from trainer.synth.render import Part, Rendered, render

# An image the pipeline rejects ("no digit found") never reaches the model: for AUROC it ranks below all.
PIPELINE_REJECTED_SCORE = -1.0


def test_set(
    mnist_test: Split, parts: list[Part] = TEST, seed: int = SEEDS["test"], workers: int | None = None
) -> Rendered:
    """Fresh realistic digits (from MNIST test digits) and negatives of every kind, through the pipeline."""
    return render(parts, seed, mnist_test, workers)


def measure(model: Path, threshold: float, mnist_test: Split, rendered: Rendered) -> dict:
    """Per digit kind (MNIST test as raw pixels, then each realistic and drawn kind): n, share accepted,
    accuracy; per negative kind: n, share rejected (pipeline or threshold), share the pipeline rejected, AUROC
    against the MNIST test digits. An image the pipeline rejects counts as not accepted and as wrong."""
    mnist = run_onnx(model, mnist_test.images)
    mnist_scores = mnist[DIGIT_SCORE]
    outputs = run_onnx(model, rendered.images)
    scores = np.where(rendered.found, outputs[DIGIT_SCORE], PIPELINE_REJECTED_SCORE)
    predicted = outputs[PROBABILITIES].argmax(1)
    digits = {
        "MNIST test (raw pixels)": {
            "n": len(mnist_test.labels),
            "accepted": float((mnist_scores >= threshold).mean()),
            "accuracy": float((mnist[PROBABILITIES].argmax(1) == mnist_test.labels).mean()),
        }
    }
    rejected = {}
    for name in rendered.names:
        mask = rendered.of(name)
        if not mask.any():
            continue
        accepted = scores[mask] >= threshold
        if rendered.is_digit[mask].all():
            digits[name] = {
                "n": int(mask.sum()),
                "accepted": float(accepted.mean()),
                "accuracy": float(((predicted[mask] == rendered.labels[mask]) & rendered.found[mask]).mean()),
            }
        else:
            rejected[name] = {
                "n": int(mask.sum()),
                "rejected": float(1 - accepted.mean()),
                "pipeline_rejected": float(1 - rendered.found[mask].mean()),
                "auroc": auroc(mnist_scores, scores[mask]),
                "excluded_as_stroke": rendered.excluded.get(name, 0),
            }
    return {"threshold": threshold, "digits": digits, "negatives": rejected}


@dataclass
class Measured:
    """A digit-or-not test set: its recipe, its images and their figures (`measure`)."""

    parts: list[Part]
    rendered: Rendered
    figures: dict


def measure_test_set(
    model: Path, threshold: float, mnist_test: Split, parts: list[Part], workers: int | None = None
) -> Measured:
    """Render the parts afresh (test seed, realistic kinds from MNIST test digits) and measure the model."""
    rendered = test_set(mnist_test, parts, workers=workers)
    return Measured(parts, rendered, measure(model, threshold, mnist_test, rendered))
