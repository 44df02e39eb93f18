"""A small model that honours the ONNX contract, built with onnx.helper, so service tests need no trainer run.

Normalize -> Conv(4 filters, 5x5) -> ReLU -> Flatten -> Linear(10); outputs `logits`,
`probabilities` = softmax(logits / T) and `digit_score` [N]; metadata name, version, `digit_threshold` and
`self_test` (the shipped reference digits with the labels this model gives them, as the trainer records its
own); a card next to it with test_accuracy. Variants a reload must refuse: another name, another input side,
a graph that runs at one batch size only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from service.loading import SHIPPED_REFERENCES, references

NAME, VERSION, TEST_ACCURACY, DIGIT_THRESHOLD = "lenet5", "0.0.1-test", 0.5, 0.5


def build_model(
    path: Path,
    *,
    with_probabilities: bool = True,
    version: str = VERSION,
    seed: int = 7,
    self_test_labels: str = "own",
    name: str = NAME,
    side: int = 28,
    fixed_batch: int | None = None,
) -> Path:
    """Write the model (and its card) to `path`; deterministic weights from `seed`. `self_test_labels`:
    "own" records the labels the model gives the reference digits (it passes its self-test), "wrong"
    records others (it fails it), "none" writes no self_test metadata (nor does a model whose input is
    not 28x28 or that runs at one batch size only). `side`: the input is [batch, 1, side, side].
    `fixed_batch`: the graph reshapes its input to that batch size, so it loads and runs at that size and
    fails at any other (a broken export that only warm-up finds)."""
    rng = np.random.default_rng(seed)
    features = 4 * (side - 4) ** 2
    weights = {
        "mean": np.array(0.1307, np.float32),
        "std": np.array(0.3081, np.float32),
        "conv_w": rng.normal(0, 0.2, (4, 1, 5, 5)).astype(np.float32),
        "conv_b": rng.normal(0, 0.1, (4,)).astype(np.float32),
        "fc_w": rng.normal(0, 0.05, (features, 10)).astype(np.float32),
        "fc_b": rng.normal(0, 0.1, (10,)).astype(np.float32),
        "temperature": np.array(1.5, np.float32),
        "score_shift": np.array(1.0, np.float32),
    }
    nodes = []
    if fixed_batch is not None:
        weights["fixed_shape"] = np.array([fixed_batch, 1, side, side], np.int64)
        nodes.append(helper.make_node("Reshape", ["image", "fixed_shape"], ["fixed"]))
    nodes += [
        helper.make_node("Sub", ["image" if fixed_batch is None else "fixed", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["normalized"]),
        helper.make_node("Conv", ["normalized", "conv_w", "conv_b"], ["conv"]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("Flatten", ["relu"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "fc_w"], ["matmul"]),
        helper.make_node("Add", ["matmul", "fc_b"], ["logits"]),
        helper.make_node("Div", ["logits", "temperature"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["probabilities"], axis=1),
        # digit_score [N]: a stand-in for a trained digit head, the sigmoid of the largest logit, shifted
        helper.make_node("ReduceMax", ["logits"], ["top"], axes=[1], keepdims=0),
        helper.make_node("Sub", ["top", "score_shift"], ["shifted"]),
        helper.make_node("Sigmoid", ["shifted"], ["digit_score"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])]
    if with_probabilities:
        outputs.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]))
    outputs.append(helper.make_tensor_value_info("digit_score", TensorProto.FLOAT, ["batch"]))
    graph = helper.make_graph(
        nodes,
        "lenet5_test",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, side, side])],
        outputs,
        [numpy_helper.from_array(value, key) for key, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    props = {
        "name": name,
        "version": version,
        "test_accuracy": str(TEST_ACCURACY),
        "digit_threshold": str(DIGIT_THRESHOLD),
    }
    if with_probabilities and self_test_labels != "none" and side == 28 and fixed_batch is None:
        props["self_test"] = _self_test(model, self_test_labels == "wrong")
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    path.with_suffix(".json").write_text(
        json.dumps({"name": name, "version": version, "test_accuracy": TEST_ACCURACY})
    )
    return path


def _self_test(model: onnx.ModelProto, wrong: bool) -> str:
    """The shipped reference digits labelled as this model reads them (or shifted by one: all wrong)."""
    images, _ = references({})  # no self_test of its own: the shipped set
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = (images / np.float32(255)).astype(np.float32).reshape(-1, 1, 28, 28)
    labels = session.run(["probabilities"], {"image": x})[0].argmax(axis=1)
    shipped = json.loads(SHIPPED_REFERENCES.read_text())["images"]
    return json.dumps({"images": shipped, "labels": ((labels + wrong) % 10).tolist()})
