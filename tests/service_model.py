"""A small model that honours the ONNX contract, built with onnx.helper, so service tests need no trainer run.

Normalize -> Conv(4 filters, 5x5) -> ReLU -> Flatten -> Linear(10); outputs `logits`,
`probabilities` = softmax(logits / T) and optionally `digit_score` = sigmoid(Linear(1)) [N]; metadata name,
version, digit_threshold and self_test (16 images with this model's own predictions); a card next to it with
test_accuracy and digit_threshold.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

NAME, VERSION, TEST_ACCURACY, DIGIT_THRESHOLD = "lenet5", "0.0.1-test", 0.5, 0.5
SELF_TEST_COUNT = 16


def build_model(path: Path, *, with_probabilities: bool = True, with_digit_score: bool = False) -> Path:
    """Write the model (and its card) to `path`; deterministic weights. `with_digit_score` adds the third
    output (off by default until the service tests expect it: they list the outputs)."""
    rng = np.random.default_rng(7)
    weights = {
        "mean": np.array(0.1307, np.float32),
        "std": np.array(0.3081, np.float32),
        "conv_w": rng.normal(0, 0.2, (4, 1, 5, 5)).astype(np.float32),
        "conv_b": rng.normal(0, 0.1, (4,)).astype(np.float32),
        "fc_w": rng.normal(0, 0.05, (4 * 24 * 24, 10)).astype(np.float32),
        "fc_b": rng.normal(0, 0.1, (10,)).astype(np.float32),
        "temperature": np.array(1.5, np.float32),
        "digit_w": rng.normal(0, 0.05, (4 * 24 * 24,)).astype(np.float32),
        "digit_b": np.array(0.0, np.float32),
    }
    nodes = [
        helper.make_node("Sub", ["image", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["normalized"]),
        helper.make_node("Conv", ["normalized", "conv_w", "conv_b"], ["conv"]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("Flatten", ["relu"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "fc_w"], ["matmul"]),
        helper.make_node("Add", ["matmul", "fc_b"], ["logits"]),
        helper.make_node("Div", ["logits", "temperature"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["probabilities"], axis=1),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])]
    if with_probabilities:
        outputs.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]))
    if with_digit_score:
        nodes += [
            helper.make_node("MatMul", ["flat", "digit_w"], ["digit_matmul"]),
            helper.make_node("Add", ["digit_matmul", "digit_b"], ["digit_logit"]),
            helper.make_node("Sigmoid", ["digit_logit"], ["digit_score"]),
        ]
        outputs.append(helper.make_tensor_value_info("digit_score", TensorProto.FLOAT, ["batch"]))
    else:
        del weights["digit_w"], weights["digit_b"]
    graph = helper.make_graph(
        nodes,
        "lenet5_test",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        outputs,
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    metadata = {"name": NAME, "version": VERSION, "test_accuracy": str(TEST_ACCURACY)}
    if with_probabilities:
        metadata |= {"digit_threshold": str(DIGIT_THRESHOLD), "self_test": json.dumps(self_test(path))}
    helper.set_model_props(model, metadata)
    onnx.save(model, path)
    path.with_suffix(".json").write_text(
        json.dumps(
            {
                "name": NAME,
                "version": VERSION,
                "test_accuracy": TEST_ACCURACY,
                "digit_threshold": DIGIT_THRESHOLD,
            }
        )
    )
    return path


def self_test(path: Path) -> dict:
    """The self_test reference: 16 deterministic images and what this model predicts for them."""
    images = np.zeros((SELF_TEST_COUNT, 28, 28), np.uint8)
    for i, image in enumerate(images):  # a bar and a block at varied places: distinct, well-defined outputs
        image[4 + i % 8 : 12 + i % 8, 3 + i : 9 + i] = 255
        image[16:24, 24 - i : 27 - i] = 128
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probabilities = session.run(["probabilities"], {"image": images[:, None].astype(np.float32) / 255})[0]
    return {
        "images": base64.b64encode(images.reshape(SELF_TEST_COUNT, 784).tobytes()).decode("ascii"),
        "labels": probabilities.argmax(1).tolist(),
    }
