"""The ONNX contract between the trainer and the service, in one place (no torch, no onnxruntime).

The trainer writes models that keep it, the service checks that a model keeps it (reading the spec from the
model itself), the tests build a small model that keeps it, and the benchmarks feed models through it:

- one input `image`, float32 [batch, 1, 28, 28], pixels / 255 in [0, 1], white ink on black (MNIST's
  convention); normalization by the MNIST statistics happens inside the graph;
- outputs `logits` [batch, 10], `probabilities` [batch, 10] (softmax of the calibrated logits, inside the
  graph) and optionally `digit_score` [batch] (the probability that the input is a digit at all);
- string metadata under the keys of `Meta`; `self_test` holds reference digits (`encode_references`).
"""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np

INPUT = "image"
LOGITS = "logits"
PROBABILITIES = "probabilities"  # the one output the service requires
DIGIT_SCORE = "digit_score"  # optional; a model without it cannot refuse non-digits
OUTPUTS = (LOGITS, PROBABILITIES, DIGIT_SCORE)

SIDE = 28  # MNIST: images are SIDE x SIDE
CLASSES = 10
INPUT_SHAPE = ("batch", 1, SIDE, SIDE)
OUTPUT_SHAPES = {LOGITS: ("batch", CLASSES), PROBABILITIES: ("batch", CLASSES), DIGIT_SCORE: ("batch",)}
OPSET = 17  # what the trainer exports and the test model is built with

PIXEL_MAX = 255  # uint8 pixels are divided by this: the model sees [0, 1]
# MNIST training-set pixel statistics (of pixels / PIXEL_MAX): the graph normalizes with them itself.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class Meta:
    """Keys of the model's ONNX metadata (all values are strings, as ONNX requires)."""

    NAME = "name"  # the model name clients address; a reload must keep it
    VERSION = "version"
    CREATED = "created"
    TEST_ACCURACY = "test_accuracy"
    TRAINING_CONFIG = "training_config"  # JSON
    DATA_SHA256 = "data_sha256"  # JSON: idx file stem -> SHA-256
    TEMPERATURE = "temperature"
    DIGIT_THRESHOLD = "digit_threshold"  # decimal: digit_score below it is not a digit
    SELF_TEST = "self_test"  # JSON, encode_references: what a loaded model must read right


def to_input(pixels: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """uint8 pixels [n, 28, 28] (or [n, 784]) -> the model input [n, 1, 28, 28] in [0, 1]."""
    return np.divide(pixels, PIXEL_MAX, dtype=dtype).reshape(len(pixels), 1, SIDE, SIDE)


def encode_references(images: np.ndarray, labels: np.ndarray) -> str:
    """The `self_test` metadata value: uint8 images [n, 28, 28] as base64, and the class each must get."""
    flat = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    return json.dumps(
        {"images": base64.b64encode(flat.tobytes()).decode("ascii"), "labels": np.asarray(labels).tolist()}
    )


def decode_references(text: str) -> tuple[np.ndarray, np.ndarray]:
    """encode_references' inverse; ValueError saying what is wrong with a malformed value."""
    try:
        doc = json.loads(text)
        labels = np.asarray(doc["labels"], dtype=np.int64)
        images = np.frombuffer(base64.b64decode(doc["images"], validate=True), np.uint8)
        return images.reshape(len(labels), SIDE, SIDE), labels
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ValueError(f"{Meta.SELF_TEST} metadata is malformed: {exc}") from None
