"""The model card (models/lenet5.json) and its plots; the test-set figures come from onnxruntime outputs."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

from service.contract import DIGIT_SCORE, PROBABILITIES
from trainer.calibrate import reliability
from trainer.data import Split
from trainer.synth.render import Rendered
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


def plot_digit_scores(
    mnist_scores: np.ndarray, rendered: Rendered, scores: np.ndarray, threshold: float, path: Path
) -> None:
    """Digit score distributions on the test images: MNIST test and every drawn/realistic digit kind
    together, and each non-digit kind (images the pipeline rejected are left out: they never get a score)."""

    def log_odds(p: np.ndarray | float) -> np.ndarray:  # spreads the scores crowded near 0 and 1
        p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
        return np.log(p) - np.log1p(-p)

    figure = Figure(figsize=(10, 6))
    axis = figure.subplots()
    bins = np.linspace(-16, 16, 65)
    digits = np.concatenate([mnist_scores, scores[rendered.found & rendered.is_digit]])
    axis.hist(
        log_odds(digits), bins, histtype="step", linewidth=2.5, color="black", density=True, label="digits"
    )
    for name in rendered.names:
        mask = rendered.of(name) & rendered.found & ~rendered.is_digit
        if mask.sum() >= 5:
            axis.hist(log_odds(scores[mask]), bins, histtype="step", density=True, label=name)
    axis.axvline(log_odds(threshold), color="red", linestyle="--", label=f"threshold {threshold:.3g}")
    axis.set(
        title="digit_score on test images that reached the model",
        xlabel="log(digit_score / (1 - digit_score))",
        ylabel="density",
        yscale="log",
    )
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_mistakes(
    test: Split,
    mnist: dict[str, np.ndarray],
    rendered: Rendered,
    outputs: dict[str, np.ndarray],
    threshold: float,
    path: Path,
    per_row: int = 16,
) -> None:
    """What the model still gets wrong on test images: misclassified and rejected MNIST digits, rejected or
    misclassified realistic and drawn digits, and accepted non-digits (caption: what it said)."""
    rows: list[tuple[str, list[tuple[np.ndarray, str]]]] = []
    predicted = mnist[PROBABILITIES].argmax(1)
    wrong = np.flatnonzero(predicted != test.labels)[:per_row]
    rows.append(
        (
            "MNIST test, misclassified (label->said)",
            [(test.images[i], f"{test.labels[i]}->{predicted[i]}") for i in wrong],
        )
    )
    rejected = np.flatnonzero(mnist[DIGIT_SCORE] < threshold)[:per_row]
    rows.append(
        ("MNIST test, rejected (score)", [(test.images[i], f"{mnist[DIGIT_SCORE][i]:.2f}") for i in rejected])
    )
    said, score = outputs[PROBABILITIES].argmax(1), outputs[DIGIT_SCORE]
    bad_digit = rendered.found & rendered.is_digit & ((said != rendered.labels) | (score < threshold))
    accepted = rendered.found & ~rendered.is_digit & (score >= threshold)
    digit_rows, negative_rows = [], []
    for name in rendered.names:  # a few of each kind, the worst first
        of_kind = rendered.of(name)
        for i in sorted(np.flatnonzero(of_kind & bad_digit), key=lambda i: score[i])[:2]:
            digit_rows.append((rendered.images[i], f"{rendered.labels[i]}->{said[i]} {score[i]:.2f}"))
        for i in sorted(np.flatnonzero(of_kind & accepted), key=lambda i: -score[i])[:3]:
            negative_rows.append((rendered.images[i], f"{said[i]} {score[i]:.2f}"))
    rows.append(
        ("realistic and drawn digits, wrong or rejected (label->said, score)", digit_rows[: 2 * per_row])
    )
    rows.append(
        ("non-digits accepted, highest scores of each kind (said, score)", negative_rows[: 2 * per_row])
    )
    rows = [(title, cells) for title, cells in rows if cells]
    lines = [-(-len(cells) // per_row) for _, cells in rows]
    figure = Figure(figsize=(per_row * 0.75, 1.3 * sum(lines) + 0.4))
    axes = figure.subplots(len(rows), 1, squeeze=False, gridspec_kw={"height_ratios": lines})[:, 0]
    for axis, (title, cells) in zip(axes, rows, strict=True):
        lines = -(-len(cells) // per_row)
        mosaic = np.full((lines * 40, per_row * 32), 255, np.uint8)  # 28 px image, caption space below
        for k, (image, caption) in enumerate(cells):
            top, left = (k // per_row) * 40, (k % per_row) * 32
            mosaic[top : top + 28, left + 2 : left + 30] = 255 - image  # dark ink on white, like paper
            axis.text(left + 16, top + 35, caption, ha="center", va="center", fontsize=6)
        axis.imshow(mosaic, cmap="gray", vmin=0, vmax=255)
        axis.set_title(title, fontsize=9, loc="left")
        axis.set_axis_off()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_card(path: Path, card: dict) -> None:
    """Atomically (temporary file in the same folder, then rename): the service may read the card any time."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(partial, path)
