"""The model card (models/lenet5.json) and its plots: what one mnist-train run produced, measured and cost.
The test-set figures come from onnxruntime outputs of the shipped file."""

from __future__ import annotations

import os
import platform
import shlex
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from service.contract import (
    DIGIT_SCORE,
    INPUT,
    INPUT_SHAPE,
    LOGITS,
    OPSET,
    OUTPUT_SHAPES,
    PROBABILITIES,
    Meta,
)
from trainer.calibrate import ACCEPT, ECE_BINS, Calibration, expected_calibration_error
from trainer.data import Mnist
from trainer.export import run_onnx
from trainer.model import count_parameters
from trainer.openset import Measured
from trainer.report import (
    confusion_matrix,
    per_class,
    plot_confusion,
    plot_digit_scores,
    plot_mistakes,
    plot_reliability,
    plot_training,
    sha256_file,
    write_card,
)
from trainer.ship import NAME, VERSION, Shipped
from trainer.synth.cache import TrainingSets
from trainer.synth.negatives import HELD_OUT
from trainer.synth.recipes import SEEDS
from trainer.train import History, TrainConfig

PLOTS = {
    "training": f"{NAME}-training.png",
    "confusion": f"{NAME}-confusion.png",
    "reliability": f"{NAME}-reliability.png",
    "digit_scores": f"{NAME}-digit-scores.png",
    "mistakes": f"{NAME}-mistakes.png",
}
METADATA_FORMATS = {
    Meta.DIGIT_THRESHOLD: "decimal",
    Meta.SELF_TEST: "JSON: base64 uint8 n x 784 images, labels",
}


@dataclass
class Run:
    """One mnist-train run, as the card reports it."""

    command: list[str]  # mnist-train and its arguments
    config: TrainConfig
    device: torch.device
    data: Mnist
    sets: TrainingSets
    model: nn.Module
    history: History
    calibration: Calibration
    shipped: Shipped
    test: Measured  # the digit-or-not test set
    load_before: float  # 1-minute load average before rendering

    @cached_property
    def calibrated(self) -> np.ndarray:
        return self.shipped.verification.outputs[PROBABILITIES]

    @cached_property
    def uncalibrated(self) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.shipped.verification.outputs[LOGITS]), 1).numpy()

    @cached_property
    def matrix(self) -> np.ndarray:
        return confusion_matrix(self.data.test.labels, self.calibrated.argmax(1))


def write(run: Run, out: Path) -> dict:
    """The plots, then the card beside the model (atomically); the card."""
    write_plots(run, out)
    card = build(run, os.getloadavg()[0])
    write_card(out / f"{NAME}.json", card)
    return card


def write_plots(run: Run, out: Path) -> None:
    labels, mnist, threshold = run.data.test.labels, run.shipped.verification.outputs, run.shipped.threshold
    plot_training(run.history, out / PLOTS["training"])
    plot_confusion(run.matrix, out / PLOTS["confusion"])
    plot_reliability(run.uncalibrated, run.calibrated, labels, out / PLOTS["reliability"])
    rendered = run.test.rendered
    outputs = run_onnx(run.shipped.path, rendered.images)
    plot_digit_scores(
        mnist[DIGIT_SCORE], rendered, outputs[DIGIT_SCORE], threshold, out / PLOTS["digit_scores"]
    )
    plot_mistakes(run.data.test, mnist, rendered, outputs, threshold, out / PLOTS["mistakes"])


def build(run: Run, load_after: float) -> dict:
    """The card; `load_after`: the load average once everything but the card is done."""
    shipped, final, labels = run.shipped, run.shipped.verification, run.data.test.labels
    return {
        "name": NAME,
        "version": VERSION,
        "created": shipped.created,
        "onnx_file": shipped.path.name,
        "onnx_sha256": sha256_file(shipped.path),
        "onnx_bytes": shipped.path.stat().st_size,
        "test_accuracy": final.accuracy,
        "test_correct": final.correct,
        "test_count": len(labels),
        "test_measured_with": f"onnxruntime {ort.__version__} CPUExecutionProvider",
        "validation_accuracy": run.history.best_val_accuracy,
        "validation_errors": run.history.best_val_errors,
        "per_class": per_class(run.matrix),
        "confusion_matrix": run.matrix.tolist(),
        "ece": {
            "before": expected_calibration_error(run.uncalibrated, labels),
            "after": expected_calibration_error(run.calibrated, labels),
            "split": "test",
            "bins": ECE_BINS,
            "validation_before": run.calibration.validation_ece_before,
            "validation_after": run.calibration.validation_ece_after,
        },
        "temperature": run.calibration.temperature,
        "digit_threshold": shipped.threshold,
        "not_a_digit": not_a_digit(run),
        "self_test_labels": shipped.self_test_labels,
        "parameters": count_parameters(run.model),
        "architecture": str(run.model),
        "onnx": onnx_section(shipped),
        "training": training(run, load_after),
        "data": data_counts(run),
        "plots": PLOTS,
    }


def not_a_digit(run: Run) -> dict:
    shipped = run.shipped
    digits, negatives = shipped.validation_digit_scores, shipped.validation_negative_scores
    return {
        "threshold_rule": f"the highest threshold accepting >= {ACCEPT:.1%} of validation digits (MNIST "
        "validation split + realistic and drawn validation digits that reach the model)",
        "validation_digits": len(digits),
        "validation_digits_accepted": float((digits >= shipped.threshold).mean()),
        "validation_negatives": len(negatives),
        "validation_negatives_rejected": float((negatives < shipped.threshold).mean()),
        "held_out_kinds": HELD_OUT,
        "test_set": {
            "seed": SEEDS["test"],
            "recipe": [[p.source, p.kind, p.count, p.drop_strokes] for p in run.test.parts],
            "measured_with": "trainer.openset.measure (bench/notdigit.py prints the same table)",
        },
        **run.test.figures,
    }


def _float32(shape: tuple) -> str:
    return f"float32 [{','.join(map(str, shape))}]"


def onnx_section(shipped: Shipped) -> dict:
    """The contract the file keeps (service.contract), and how closely it matches torch."""
    metadata = ", ".join(
        f"{k} ({METADATA_FORMATS[k]})" if k in METADATA_FORMATS else k for k in shipped.metadata
    )
    return {
        "opset": OPSET,
        "input": f"{INPUT} {_float32(INPUT_SHAPE)} in [0,1], white ink on black",
        "outputs": {
            LOGITS: _float32(OUTPUT_SHAPES[LOGITS]),
            PROBABILITIES: f"{_float32(OUTPUT_SHAPES[PROBABILITIES])}, softmax({LOGITS} / temperature)",
            DIGIT_SCORE: f"{_float32(OUTPUT_SHAPES[DIGIT_SCORE])}, sigmoid of the digit-vs-not logit: is the "
            "input a digit",
        },
        "metadata": metadata,
        "max_abs_diff_vs_torch": shipped.verification.max_abs_diff,
        "images_compared": shipped.verification.compared,
    }


def training(run: Run, load_after: float) -> dict:
    history, config, device = run.history, run.config, run.device
    return {
        "command": shlex.join(run.command),
        "seconds": round(history.seconds, 1),
        "seconds_per_epoch": round(history.seconds / config.epochs, 1),
        "cpu_seconds": round(history.cpu_seconds, 1),
        "rendering": {
            "seconds": run.sets.seconds,
            "cpu_seconds": run.sets.cpu_seconds,
            "cached": run.sets.cached,
        },
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine()
        ),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before_after": [round(run.load_before, 2), round(load_after, 2)],
        "epochs": config.epochs,
        "best_epoch": history.best_epoch,
        "config": asdict(config),
        "history": history.epochs,
        "torch": torch.__version__,
    }


def data_counts(run: Run) -> dict:
    data, extra, validation = run.data, run.sets.train, run.sets.validation
    return {
        "sha256": data.sha256,
        "train": len(data.train.labels[: run.config.limit]),
        "train_synthetic": int(extra.found.sum()),
        "train_synthetic_not_digits": int((extra.found & ~extra.is_digit).sum()),
        "validation": len(data.validation.labels),
        "validation_synthetic": int(validation.found.sum()),
        "test": len(data.test.labels),
    }


def summary(run: Run, card: dict) -> str:
    """The line mnist-train ends with."""
    return (
        f"test accuracy {card['test_accuracy']:.4f} (onnxruntime), ECE {card['ece']['before']:.4f} -> "
        f"{card['ece']['after']:.4f} at T={card['temperature']:.3f}, digit threshold "
        f"{card['digit_threshold']:.4g}, {card['parameters']} parameters, trained in "
        f"{run.history.seconds:.0f}s; wrote {run.shipped.path} and {run.shipped.path.with_suffix('.json')}"
    )
