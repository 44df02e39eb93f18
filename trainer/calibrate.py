"""Fitted on validation: the softmax temperature (Guo et al. 2017) and the digit threshold; ECE and AUROC."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

ECE_BINS = 15
# The rule, written before the runs (README): the highest threshold that accepts at least this share of the
# validation digits (MNIST validation split + realistic and drawn validation digits that reach the model).
ACCEPT = 0.997


@dataclass
class Calibration:
    temperature: float
    validation_ece_before: float  # at T = 1
    validation_ece_after: float  # at the fitted temperature


def calibrate(logits: torch.Tensor, labels: np.ndarray) -> Calibration:
    """The temperature fitted on the validation digits' logits and labels, and their ECE before and after."""
    temperature = fit_temperature(logits, torch.from_numpy(labels))
    before, after = (
        expected_calibration_error(torch.softmax(logits / t, 1).numpy(), labels) for t in (1.0, temperature)
    )
    return Calibration(temperature, before, after)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 minimizing the NLL of softmax(logits / T): one scalar, so accuracy is unchanged."""
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Equal-width bins of top-1 confidence: count, mean confidence and accuracy (a reliability diagram)."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        members = which == b
        rows.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": int(members.sum()),
                "confidence": float(confidence[members].mean()) if members.any() else None,
                "accuracy": float(correct[members].mean()) if members.any() else None,
            }
        )
    return rows


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Count-weighted mean |accuracy - confidence| over the reliability bins."""
    return float(
        sum(
            row["count"] * abs(row["accuracy"] - row["confidence"])
            for row in reliability(probabilities, labels, bins)
            if row["count"]
        )
        / len(labels)
    )


def digit_threshold(scores: np.ndarray, accept: float = ACCEPT) -> float:
    """The highest t with (scores >= t).mean() >= accept: the k-th lowest score, k = floor((1-accept) n)."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    return float(ordered[int(np.floor((1 - accept) * len(ordered) + 1e-9))])


def auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(a random positive scores above a random negative), ties counting half (Mann-Whitney U)."""
    scores = np.concatenate([positives, negatives]).astype(np.float64)
    order = scores.argsort(kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.zeros(len(counts))
    np.add.at(sums, inverse, ranks)
    ranks = (sums / counts)[inverse]  # average rank within ties
    n_pos, n_neg = len(positives), len(negatives)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
