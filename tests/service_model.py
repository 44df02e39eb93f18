"""A small model that honours the ONNX contract, built with onnx.helper, so service tests need no trainer run.

Normalize -> Conv(4 filters, 5x5) -> ReLU -> Flatten -> Linear(10); outputs `logits` and
`probabilities` = softmax(logits / T); metadata name/version; a card next to it with test_accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NAME, VERSION, TEST_ACCURACY = "lenet5", "0.0.1-test", 0.5


def build_model(path: Path, *, with_probabilities: bool = True) -> Path:
    """Write the model (and its card) to `path`; deterministic weights."""
    rng = np.random.default_rng(7)
    weights = {
        "mean": np.array(0.1307, np.float32),
        "std": np.array(0.3081, np.float32),
        "conv_w": rng.normal(0, 0.2, (4, 1, 5, 5)).astype(np.float32),
        "conv_b": rng.normal(0, 0.1, (4,)).astype(np.float32),
        "fc_w": rng.normal(0, 0.05, (4 * 24 * 24, 10)).astype(np.float32),
        "fc_b": rng.normal(0, 0.1, (10,)).astype(np.float32),
        "temperature": np.array(1.5, np.float32),
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
    graph = helper.make_graph(
        nodes,
        "lenet5_test",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        outputs,
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"name": NAME, "version": VERSION, "test_accuracy": str(TEST_ACCURACY)})
    onnx.checker.check_model(model)
    onnx.save(model, path)
    path.with_suffix(".json").write_text(
        json.dumps({"name": NAME, "version": VERSION, "test_accuracy": TEST_ACCURACY})
    )
    return path
