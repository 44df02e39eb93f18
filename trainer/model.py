"""LeNet-5 (the one architecture definition): two conv+pool stages, three fully connected layers, and a
digit-vs-not head on the same features."""

from __future__ import annotations

import torch
from torch import nn

from service.contract import CLASSES, MNIST_MEAN, MNIST_STD

PARAMETER_BUDGET = 120_000


class LeNet5(nn.Module):
    """LeNet-5 with BatchNorm and dropout; input float [N,1,28,28] in [0,1], white ink on black. Two heads
    share every layer but the last: ten digit logits, and one logit for "this is a digit at all"."""

    def __init__(
        self, conv: tuple[int, int] = (16, 32), hidden: tuple[int, int] = (96, 64), dropout: float = 0.25
    ):
        super().__init__()
        c1, c2 = conv
        # The statistics live in the model, so the exported graph normalizes (the contract says so).
        self.register_buffer("mean", torch.tensor(MNIST_MEAN))
        self.register_buffer("std", torch.tensor(MNIST_STD))
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 5, padding=2, bias=False),  # 28x28 (padding keeps the classic 32x32 field)
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(c1, c2, 5, bias=False),  # 10x10
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 5x5
        )
        self.embedding = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c2 * 5 * 5, hidden[0]),
            nn.BatchNorm1d(hidden[0]),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(hidden[1], CLASSES)
        self.digit = nn.Linear(hidden[1], 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(digit logits [N,10], is-a-digit logit [N])."""
        shared = self.embedding(self.features((x - self.mean) / self.std))
        return self.classifier(shared), self.digit(shared).squeeze(1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
