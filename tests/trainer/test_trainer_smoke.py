"""`mnist-train --limit 2000 --epochs 1` end to end, in a real subprocess, checked through onnxruntime."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from trainer.report import sha256_file
from trainer.synth.negatives import KINDS as NEGATIVE_KINDS

METADATA_KEYS = {
    "name",
    "version",
    "created",
    "test_accuracy",
    "training_config",
    "data_sha256",
    "temperature",
    "digit_threshold",
    "self_test",
}


@pytest.fixture(scope="module")
def smoke_run(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("smoke")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "--limit",
            "2000",
            "--epochs",
            "1",
            "--data-dir",
            str(mnist_dir),
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MNIST_RENDER_CACHE": str(out / "rendered")},  # fresh: renders, and caches there
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch  1/1" in result.stdout + result.stderr
    return out


def test_onnx_loads_and_probabilities_sum_to_one(smoke_run: Path) -> None:
    session = ort.InferenceSession(str(smoke_run / "lenet5.onnx"), providers=["CPUExecutionProvider"])
    [image] = session.get_inputs()
    assert (image.name, image.type, image.shape[1:]) == ("image", "tensor(float)", [1, 28, 28])
    assert isinstance(image.shape[0], str)  # symbolic batch dimension
    outputs = {o.name: o for o in session.get_outputs()}
    assert list(outputs) == ["logits", "probabilities", "digit_score"]
    assert all(o.type == "tensor(float)" and isinstance(o.shape[0], str) for o in outputs.values())
    assert [o.shape[1:] for o in outputs.values()] == [[10], [10], []]
    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    logits, probabilities, digit_score = session.run(None, {"image": x})
    assert logits.shape == probabilities.shape == (5, 10)
    assert digit_score.shape == (5,) and digit_score.dtype == np.float32
    assert ((digit_score > 0) & (digit_score < 1)).all()
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)


def test_self_test_reference_is_decodable_and_the_model_agrees(smoke_run: Path) -> None:
    path = smoke_run / "lenet5.onnx"
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    threshold = float(metadata["digit_threshold"])
    assert 0 < threshold < 1
    reference = json.loads(metadata["self_test"])
    labels = reference["labels"]
    images = np.frombuffer(base64.b64decode(reference["images"]), np.uint8).reshape(len(labels), 784)
    assert len(labels) == 16 and all(labels.count(d) >= 2 for d in range(8))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = (images.astype(np.float32) / 255).reshape(-1, 1, 28, 28)
    _, probabilities, digit_score = session.run(None, {"image": x})
    assert probabilities.argmax(1).tolist() == labels
    assert (digit_score >= threshold).all()


def test_metadata_and_card(smoke_run: Path) -> None:
    path = smoke_run / "lenet5.onnx"
    model = onnx.load(str(path))
    assert model.opset_import[0].version >= 17
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata.keys() >= METADATA_KEYS
    assert metadata["name"] == "lenet5"
    assert json.loads(metadata["training_config"])["limit"] == 2000
    assert len(json.loads(metadata["data_sha256"])) == 4
    card = json.loads((smoke_run / "lenet5.json").read_text())
    assert card["onnx_sha256"] == sha256_file(path)
    assert metadata["test_accuracy"] == f"{card['test_accuracy']:.4f}"
    assert float(metadata["temperature"]) == card["temperature"] > 0
    assert card["data"]["train"] == 2000 and card["training"]["epochs"] == 1
    assert float(metadata["digit_threshold"]) == card["digit_threshold"] == card["not_a_digit"]["threshold"]
    assert card["not_a_digit"]["validation_digits_accepted"] >= 0.997
    figures = card["not_a_digit"]
    assert set(figures["negatives"]) == set(NEGATIVE_KINDS)
    assert {"MNIST test (raw pixels)", "printed fonts", "pen-drawn digits"} <= set(figures["digits"])
    for row in figures["negatives"].values():
        assert row["n"] >= 1 and 0 <= row["rejected"] <= 1 and 0 <= row["auroc"] <= 1
    assert not list(smoke_run.glob(".*partial"))  # written atomically: no temporary file left behind
    assert sum(map(sum, card["confusion_matrix"])) == card["test_count"] == 10_000
    assert set(card["per_class"]) == {str(d) for d in range(10)}
    assert {"before", "after"} <= card["ece"].keys()
    for plot in card["plots"].values():
        assert (smoke_run / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
