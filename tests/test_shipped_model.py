"""The shipped models/lenet5.onnx is the one its card describes, and it meets the accuracy target."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from tests.liveserver import ROOT
from trainer.data import load_test
from trainer.export import PROBABILITIES, run_onnx
from trainer.report import sha256_file

MODELS = ROOT / "models"
TARGET = 0.995  # on the MNIST test set, through onnxruntime


def test_sha256_matches_card() -> None:
    card = json.loads((MODELS / "lenet5.json").read_text())
    assert card["onnx_sha256"] == sha256_file(MODELS / "lenet5.onnx")


def test_test_accuracy_through_onnxruntime(mnist_dir: Path) -> None:
    card = json.loads((MODELS / "lenet5.json").read_text())
    test = load_test(mnist_dir)
    predicted = run_onnx(MODELS / "lenet5.onnx", test.images)[PROBABILITIES].argmax(1)
    correct = int((predicted == test.labels).sum())
    accuracy = correct / len(test.labels)
    assert (correct, accuracy) == (card["test_correct"], card["test_accuracy"])
    metadata = {p.key: p.value for p in onnx.load(str(MODELS / "lenet5.onnx")).metadata_props}
    assert metadata["test_accuracy"] == f"{accuracy:.4f}"
    assert accuracy >= TARGET, f"shipped model: test accuracy {accuracy:.4f} is below the {TARGET} target"
