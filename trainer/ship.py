"""Shipping a trained model: export to a partial file, the digit threshold and self-test references chosen
on the exported graph, metadata, verification before and after, then an atomic rename.

The service may poll the model file, which only ever changes by that rename of a complete, verified file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from torch import nn

from service.contract import DIGIT_SCORE, PROBABILITIES, Meta, encode_references
from trainer.calibrate import digit_threshold
from trainer.data import Mnist, Split
from trainer.export import (
    Deployable,
    Verification,
    export_onnx,
    run_onnx,
    torch_outputs,
    verify,
    write_metadata,
)
from trainer.synth.render import Rendered
from trainer.train import TrainConfig

NAME, VERSION = "lenet5", "2.0.0"
SELF_TEST_CLASSES, SELF_TEST_PER_CLASS = range(8), 2  # 16 images: what the service checks a reloaded model on


@dataclass
class Shipped:
    path: Path
    created: str  # ISO 8601, UTC, as in the metadata
    metadata: dict[str, str]  # as written, keys from service.contract.Meta
    verification: Verification  # of the shipped bytes
    threshold: float
    validation_digit_scores: np.ndarray  # the digits the threshold was chosen on
    validation_negative_scores: np.ndarray
    self_test_labels: list[int]


def self_test(
    outputs: dict[str, np.ndarray], split: Split, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """The service's check of a reloaded model (metadata `self_test`): images and labels of, for each class in
    SELF_TEST_CLASSES, the validation digits the model classifies right with the highest probability (and
    accepts)."""
    probabilities, scores = outputs[PROBABILITIES], outputs[DIGIT_SCORE]
    chosen = []
    for digit in SELF_TEST_CLASSES:
        candidates = np.flatnonzero(
            (split.labels == digit) & (probabilities.argmax(1) == digit) & (scores >= max(threshold, 0.5))
        )
        ranked = candidates[np.argsort(-probabilities[candidates, digit], kind="stable")]
        chosen.extend(ranked[:SELF_TEST_PER_CLASS].tolist())
    return split.images[chosen], split.labels[chosen]


def validation_scores(
    path: Path, mnist: dict[str, np.ndarray], validation: Rendered
) -> tuple[np.ndarray, np.ndarray]:
    """Digit scores of the validation digits (MNIST validation split, whose outputs are `mnist`, + realistic
    and drawn ones reaching the model) and of the validation non-digits reaching it, by the exported graph
    as the service will score them."""
    drawn = validation.found & validation.is_digit
    digits = np.concatenate([mnist[DIGIT_SCORE], run_onnx(path, validation.images[drawn])[DIGIT_SCORE]])
    negatives = run_onnx(path, validation.images[validation.found & ~validation.is_digit])[DIGIT_SCORE]
    return digits, negatives


def ship(
    model: nn.Module, temperature: float, data: Mnist, validation: Rendered, config: TrainConfig, path: Path
) -> Shipped:
    """The model with its temperature as a verified ONNX file at `path`. Only now, with the model and
    temperature fixed, is the test set used (torch as the reference, accuracy through onnxruntime); the
    threshold comes from validation digits only."""
    partial = path.with_name(f".{path.name}.partial")
    deployable = Deployable(model, temperature)
    export_onnx(deployable, partial)
    expected = torch_outputs(deployable, data.test.images)
    first = verify(partial, expected, data.test)
    mnist = run_onnx(partial, data.validation.images)
    digit_scores, negative_scores = validation_scores(partial, mnist, validation)
    threshold = digit_threshold(digit_scores)
    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    images, labels = self_test(mnist, data.validation, threshold)
    metadata = {
        Meta.NAME: NAME,
        Meta.VERSION: VERSION,
        Meta.CREATED: created,
        Meta.TEST_ACCURACY: f"{first.accuracy:.4f}",
        Meta.TRAINING_CONFIG: json.dumps(asdict(config), sort_keys=True),
        Meta.DATA_SHA256: json.dumps(data.sha256),
        Meta.TEMPERATURE: repr(temperature),
        Meta.DIGIT_THRESHOLD: repr(threshold),
        Meta.SELF_TEST: encode_references(images, labels),
    }
    write_metadata(partial, metadata)
    final = verify(partial, expected, data.test)  # the shipped bytes, re-verified after adding metadata
    if final.correct != first.correct:
        raise RuntimeError("test accuracy changed after writing metadata")
    os.replace(partial, path)
    return Shipped(path, created, metadata, final, threshold, digit_scores, negative_scores, labels.tolist())
