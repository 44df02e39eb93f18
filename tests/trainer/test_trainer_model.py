"""The architecture, the augmentation and the calibration maths, on real tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.calibrate import expected_calibration_error, fit_temperature
from trainer.export import Deployable
from trainer.model import PARAMETER_BUDGET, LeNet5, count_parameters
from trainer.train import TrainConfig, jitter


@pytest.mark.parametrize("batch", [1, 7])
def test_output_shapes(batch: int) -> None:
    model = LeNet5().eval()
    logits, probabilities, digit_score = Deployable(model, temperature=1.5)(torch.rand(batch, 1, 28, 28))
    assert logits.shape == probabilities.shape == (batch, 10)
    assert digit_score.shape == (batch,) and ((digit_score > 0) & (digit_score < 1)).all()
    assert torch.allclose(probabilities.sum(1), torch.ones(batch))


def test_parameter_budget() -> None:
    assert 50_000 < count_parameters(LeNet5()) <= PARAMETER_BUDGET


def test_jitter_keeps_shape_range_and_ink() -> None:
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 1.0
    out = jitter(x, TrainConfig(), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)
    # Small jitter: the stroke moves a little but stays on the canvas.
    assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=0.25)


def test_temperature_recovers_a_known_overconfidence() -> None:
    generator = torch.Generator().manual_seed(0)
    true_logits = torch.randn(20_000, 10, generator=generator) * 2
    labels = torch.multinomial(torch.softmax(true_logits, 1), 1, generator=generator).squeeze(1)
    assert fit_temperature(true_logits * 3, labels) == pytest.approx(3.0, rel=0.05)


def test_ece_zero_when_confidence_matches_accuracy() -> None:
    probabilities = np.full((10, 10), 0.05)
    probabilities[:, 0] = 0.55
    labels = np.zeros(10, dtype=np.int64)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.45)  # 55 % sure, all right
    both = np.concatenate([probabilities, probabilities])  # 55 % confident, right on 11 of 20 -> calibrated
    half_right = np.concatenate([np.zeros(11, dtype=np.int64), np.ones(9, dtype=np.int64)])
    assert expected_calibration_error(both, half_right) == pytest.approx(0.0)


def test_auto_device_says_why_not_cuda_without_asking_torch_on_a_host_without_a_driver(monkeypatch) -> None:
    """A CUDA build of torch on a host without a GPU: the driver's answer is the reason, and torch's CUDA
    start (its warnings) is never reached; --device cuda fails with the same reason."""
    from service import gpu
    from trainer import train

    def untouched() -> bool:
        raise AssertionError("torch.cuda.is_available was asked")

    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(gpu, "problem", lambda: "no NVIDIA driver (libcuda.so.1: not found)")
    monkeypatch.setattr(torch.cuda, "is_available", untouched)
    assert train.pick_device("auto") == (torch.device("cpu"), "no NVIDIA driver (libcuda.so.1: not found)")
    assert train.pick_device("cpu") == (torch.device("cpu"), None)
    with pytest.raises(SystemExit, match=r"--device cuda: CUDA cannot run here: no NVIDIA driver"):
        train.pick_device("cuda")


def test_auto_device_on_a_cpu_build_of_torch_names_the_build(monkeypatch) -> None:
    from trainer import train

    monkeypatch.setattr(torch.version, "cuda", None)
    device, reason = train.pick_device("auto")
    assert device == torch.device("cpu") and reason == f"this PyTorch build ({torch.__version__}) has no CUDA"
