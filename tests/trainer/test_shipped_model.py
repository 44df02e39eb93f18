"""The shipped models/lenet5.onnx is the one its card describes, and it meets the targets: test accuracy, and
digit-or-not figures re-measured from scratch (same seed, same recipe, same pipeline) equal to the card's."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from service.contract import DIGIT_SCORE, PROBABILITIES
from tests.support.liveserver import ROOT
from trainer import openset
from trainer.data import load_test
from trainer.export import run_onnx
from trainer.report import sha256_file
from trainer.synth.digits import KINDS as REALISTIC_KINDS
from trainer.synth.negatives import KINDS
from trainer.synth.render import Part

MODELS = ROOT / "models"
TARGET = 0.995  # on the MNIST test set, through onnxruntime
CARD = json.loads((MODELS / "lenet5.json").read_text())
METADATA = {p.key: p.value for p in onnx.load(str(MODELS / "lenet5.onnx")).metadata_props}


def test_sha256_matches_card() -> None:
    assert CARD["onnx_sha256"] == sha256_file(MODELS / "lenet5.onnx")


def test_test_accuracy_through_onnxruntime(mnist_dir: Path) -> None:
    test = load_test(mnist_dir)
    predicted = run_onnx(MODELS / "lenet5.onnx", test.images)[PROBABILITIES].argmax(1)
    correct = int((predicted == test.labels).sum())
    accuracy = correct / len(test.labels)
    assert (correct, accuracy) == (CARD["test_correct"], CARD["test_accuracy"])
    assert METADATA["test_accuracy"] == f"{accuracy:.4f}"
    assert accuracy >= TARGET, f"shipped model: test accuracy {accuracy:.4f} is below the {TARGET} target"


def test_threshold_and_self_test_in_metadata() -> None:
    threshold = float(METADATA["digit_threshold"])
    assert threshold == CARD["digit_threshold"]
    reference = json.loads(METADATA["self_test"])
    labels = reference["labels"]
    images = np.frombuffer(base64.b64decode(reference["images"]), np.uint8).reshape(len(labels), 28, 28)
    outputs = run_onnx(MODELS / "lenet5.onnx", images)
    assert outputs[PROBABILITIES].argmax(1).tolist() == labels
    assert (outputs[PROBABILITIES].max(1) > 0.99).all() and (outputs[DIGIT_SCORE] >= threshold).all()


@pytest.fixture(scope="module")
def remeasured(mnist_dir: Path) -> dict:
    """The card's digit-or-not figures, measured again from freshly rendered images."""
    test = load_test(mnist_dir)
    recipe = CARD["not_a_digit"]["test_set"]
    parts = [Part(*part) for part in recipe["recipe"]]
    rendered = openset.test_set(test, parts, recipe["seed"])
    return openset.measure(MODELS / "lenet5.onnx", CARD["digit_threshold"], test, rendered)


def test_not_a_digit_figures_are_the_cards(remeasured: dict) -> None:
    card = CARD["not_a_digit"]
    assert remeasured["digits"] == card["digits"]
    assert remeasured["negatives"] == card["negatives"]


# Below target on the card's test images (README, "Not a digit": not met). Listed, not hidden: the test fails
# if one of them starts to meet its target, so the README is corrected too.
MISSES = {"smooth noise", "photo crops (held out)", "printed symbols (held out)"}


def test_not_a_digit_targets() -> None:
    figures = CARD["not_a_digit"]
    assert figures["digits"]["MNIST test (raw pixels)"]["accepted"] >= 0.995
    for kind in REALISTIC_KINDS:
        assert figures["digits"][kind]["accepted"] >= 0.98, kind
    for kind, row in figures["negatives"].items():
        target = 0.97 if KINDS[kind].trained else 0.90
        if kind in ("uniform noise", "Gaussian noise"):
            target = 0.99
        assert (row["rejected"] >= target) == (kind not in MISSES), (kind, row["rejected"], target)
