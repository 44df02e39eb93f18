"""The model card (models/lenet5.json) and its plots; the test-set figures come from onnxruntime outputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

from trainer.calibrate import reliability
from trainer.train import History


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Rows: true digit, columns: predicted digit."""
    matrix = np.zeros((10, 10), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def per_class(matrix: np.ndarray) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each digit from the confusion matrix."""
    scores = {}
    for digit in range(10):
        hits = matrix[digit, digit]
        precision = hits / max(matrix[:, digit].sum(), 1)
        recall = hits / max(matrix[digit].sum(), 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        scores[str(digit)] = {
            "precision": round(float(precision), 4),
            "recall": round(float(recall), 4),
            "f1": round(float(f1), 4),
            "support": int(matrix[digit].sum()),
        }
    return scores


def plot_training(history: History, path: Path) -> None:
    epochs = [row["epoch"] for row in history.epochs]
    figure = Figure(figsize=(10, 4))
    loss, error = figure.subplots(1, 2)
    for split, name in (("train", "train (augmented, dropout)"), ("val", "validation (weight EMA)")):
        loss.plot(epochs, [row[f"{split}_loss"] for row in history.epochs], marker="o", label=name)
        error.plot(
            epochs, [100 * (1 - row[f"{split}_accuracy"]) for row in history.epochs], marker="o", label=name
        )
    error.axvline(history.best_epoch, color="grey", linestyle="--", label="best on validation")
    loss.set(title="cross-entropy", xlabel="epoch", yscale="log")
    error.set(title="error rate (%)", xlabel="epoch", yscale="log")
    for axis in (loss, error):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_confusion(matrix: np.ndarray, path: Path) -> None:
    figure = Figure(figsize=(6, 5.5))
    axis = figure.subplots()
    axis.imshow(np.log1p(matrix), cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            axis.text(
                col,
                row,
                str(count),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if row == col else "black",
            )
    axis.set(
        title="test confusion matrix (onnxruntime)",
        xlabel="predicted",
        ylabel="true",
        xticks=range(10),
        yticks=range(10),
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_reliability(before: np.ndarray, after: np.ndarray, labels: np.ndarray, path: Path) -> None:
    figure = Figure(figsize=(5, 5))
    axis = figure.subplots()
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect")
    for name, probabilities in (("T = 1", before), ("calibrated", after)):
        rows = [row for row in reliability(probabilities, labels) if row["count"]]
        axis.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=name)
    axis.set(title="test reliability (top-1)", xlabel="confidence", ylabel="accuracy")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def write_card(path: Path, card: dict) -> None:
    path.write_text(json.dumps(card, indent=2) + "\n")
