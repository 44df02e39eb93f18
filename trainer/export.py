"""ONNX export (the contract with the service), metadata, and verification of every exported file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from service.contract import (
    DIGIT_SCORE,
    INPUT,
    INPUT_SHAPE,
    OPSET,
    OUTPUT_SHAPES,
    OUTPUTS,
    PROBABILITIES,
    SIDE,
    to_input,
)
from trainer.data import Split
from trainer.train import predict

MAX_ABS_DIFF = 1e-4
MIN_COMPARED = 1000


class Deployable(nn.Module):
    """What the service runs: [0,1] images -> (logits, softmax(logits / T), sigmoid(digit logit));
    normalization is in the model."""

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        self.model = model
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, digit = self.model(image)
        return logits, torch.softmax(logits / self.temperature, dim=1), torch.sigmoid(digit)


def export_onnx(deployable: Deployable, path: Path) -> None:
    """Write the graph: the contract's opset, names and shapes, the batch dimension dynamic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deployable.cpu().eval()
    torch.onnx.export(
        deployable,
        (torch.zeros(1, 1, SIDE, SIDE),),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=[INPUT],
        output_names=list(OUTPUTS),
        dynamic_axes={name: {0: INPUT_SHAPE[0]} for name in (INPUT, *OUTPUTS)},
    )


def write_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Replace the file's metadata_props (strings only, as ONNX requires)."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, str(path))


def run_onnx(path: Path, images: np.ndarray, batch_size: int = 1000) -> dict[str, np.ndarray]:
    """Every output of the model for uint8 images [N,28,28] through onnxruntime on the CPU, as the service
    feeds them."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for i in range(0, len(images), batch_size):
        x = to_input(images[i : i + batch_size])
        for name, value in zip(names, session.run(names, {INPUT: x}), strict=True):
            outputs[name].append(value)
    return {name: np.concatenate(parts) for name, parts in outputs.items()}


@dataclass
class Verification:
    max_abs_diff: float  # probabilities and digit score, onnxruntime vs torch
    compared: int
    outputs: dict[str, np.ndarray]  # onnxruntime outputs on the whole split
    correct: int
    accuracy: float


def torch_outputs(deployable: Deployable, images: np.ndarray) -> dict[str, np.ndarray]:
    """The reference an exported file must match: the torch model's calibrated probabilities [N,10] and digit
    scores [N]."""
    logits, digit = predict(deployable.model, images, torch.device("cpu"))
    return {
        PROBABILITIES: torch.softmax(logits / deployable.temperature, dim=1).numpy(),
        DIGIT_SCORE: torch.sigmoid(digit).numpy(),
    }


def verify(path: Path, expected: dict[str, np.ndarray], split: Split) -> Verification:
    """onnx.checker; the three outputs with their shapes; onnxruntime vs the torch probabilities and digit
    scores `expected` for the whole split (>= 1000 images); accuracy via onnxruntime."""
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    if len(split.labels) < MIN_COMPARED:
        raise ValueError(f"need at least {MIN_COMPARED} images to compare onnxruntime with torch")
    outputs = run_onnx(path, split.images)
    n = len(split.labels)
    shapes = {name: value.shape for name, value in outputs.items()}
    if shapes != {name: (n, *shape[1:]) for name, shape in OUTPUT_SHAPES.items()}:
        raise RuntimeError(
            f"{path}: outputs {shapes}, expected logits and probabilities [N,10], digit_score [N]"
        )
    diff = max(float(np.abs(outputs[name] - expected[name]).max()) for name in expected)
    if diff > MAX_ABS_DIFF:
        raise RuntimeError(f"{path}: onnxruntime and torch outputs differ by {diff:.2e} > {MAX_ABS_DIFF}")
    correct = int((outputs[PROBABILITIES].argmax(1) == split.labels).sum())
    return Verification(diff, len(split.labels), outputs, correct, correct / len(split.labels))
