"""The training loop: augmented mini-batches of digits and non-digits, one-cycle AdamW, weight EMA,
best-on-validation checkpoint."""

from __future__ import annotations

import copy
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from service import gpu
from service.contract import PIXEL_MAX
from trainer.calibrate import digit_threshold
from trainer.data import Mnist, Split
from trainer.model import LeNet5
from trainer.synth.render import NOT_DIGIT, Rendered


@dataclass
class TrainConfig:
    """Everything that decides the trained weights (recorded in the model card and ONNX metadata)."""

    epochs: int = 40
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    limit: int | None = None
    # Affine jitter: rotation (degrees), scale (+-fraction), shift (pixels).
    rotate: float = 10.0
    scale: float = 0.1
    shift: float = 2.0
    # Exponential moving average of the weights (and BatchNorm statistics): the model that is evaluated,
    # checkpointed and shipped. It smooths out the last noisy steps at no extra forward/backward cost.
    ema_decay: float = 0.999
    # Architecture (trainer.model.LeNet5): conv channels, hidden widths.
    conv: tuple[int, int] = (16, 40)
    hidden: tuple[int, int] = (80, 64)
    # Weight of the digit-vs-not loss (binary cross-entropy) next to the digits' cross-entropy.
    digit_loss_weight: float = 1.0


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_accuracy: float = 0.0
    best_val_errors: int | None = None
    seconds: float = 0.0  # wall clock
    cpu_seconds: float = 0.0  # this process, all threads: not inflated by other processes sharing the CPU


def cuda_problem() -> str | None:
    """Why torch cannot train on CUDA here, or None. The driver is asked first (service/gpu.py): torch's own
    CUDA start on a host without one only adds a warning to the answer."""
    if torch.version.cuda is None:
        return f"this PyTorch build ({torch.__version__}) has no CUDA"
    problem = gpu.problem()
    if problem is not None:
        return problem
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if torch.cuda.is_available():
            return None
    return "PyTorch cannot use the GPU" + (f": {caught[0].message}" if caught else "")


def pick_device(choice: str) -> tuple[torch.device, str | None]:
    """auto -> CUDA when it can run, else CPU; with the reason when auto chose CPU (None otherwise).
    Asking for CUDA where it cannot run is an error that says why."""
    problem = cuda_problem() if choice != "cpu" else None
    if choice == "auto":
        choice = "cpu" if problem else "cuda"
    elif choice == "cuda" and problem:
        raise SystemExit(
            f"mnist-train: --device cuda: CUDA cannot run here: {problem} (use --device cpu or auto)"
        )
    if choice == "cpu":
        # One intra-op thread per core; more only adds contention on small convolutions.
        cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
        torch.set_num_threads(len(cores))
    return torch.device(choice), problem if choice == "cpu" else None


def seed_everything(seed: int) -> None:
    """Same seed, device and thread count -> same weights. Ops without a deterministic kernel only warn,
    so an untested CUDA build still trains."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [N,28,28] on the host -> float [N,1,28,28] in [0,1] on the device (pinned, async on CUDA). The
    contract's scaling (service.contract.to_input) done in torch on the device: uint8 crosses to the GPU, 4x
    fewer bytes than float32."""
    if device.type == "cuda":
        images = images.pin_memory()
    return images.to(device, non_blocking=True).unsqueeze(1).float().div_(PIXEL_MAX)


def jitter(x: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Random small rotation/scale/shift of a whole batch at once (one affine_grid + grid_sample)."""
    n = x.shape[0]
    rand = torch.rand(n, 4, generator=generator, device=x.device) * 2 - 1
    angle = rand[:, 0] * math.radians(config.rotate)
    scale = 1 + rand[:, 1] * config.scale
    shift = rand[:, 2:] * (2 * config.shift / x.shape[-1])  # pixels -> normalized [-1, 1] coordinates
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@torch.no_grad()
def predict(
    model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """(digit logits [N,10], is-a-digit logits [N]) on the CPU for uint8 images [N,28,28], in eval mode."""
    model.eval()
    source = torch.from_numpy(images)
    parts = [model(to_device(source[i : i + batch_size], device)) for i in range(0, len(source), batch_size)]
    return torch.cat([p[0].float().cpu() for p in parts]), torch.cat([p[1].float().cpu() for p in parts])


def validate(model: nn.Module, split: Split, extra: Rendered, device: torch.device) -> dict:
    """Validation figures of one model. Errors, the number the best epoch minimizes: misclassified validation
    digits (MNIST and drawn/realistic) plus validation non-digits accepted at the threshold the rule picks on
    these same validation digits (trainer.calibrate.digit_threshold)."""
    logits, digit = predict(model, split.images, device)
    labels = torch.from_numpy(split.labels)
    reached = extra.found  # what the pipeline rejects never reaches the model
    extra_logits, extra_digit = predict(model, extra.images[reached], device)
    extra_labels = torch.from_numpy(extra.labels[reached])
    is_digit = extra_labels != NOT_DIGIT
    threshold = digit_threshold(torch.cat([digit, extra_digit[is_digit]]).sigmoid().numpy())
    wrong = int((logits.argmax(1) != labels).sum()) + int(
        (extra_logits.argmax(1) != extra_labels)[is_digit].sum()
    )
    accepted = int((extra_digit[~is_digit].sigmoid() >= threshold).sum())
    return {
        "val_loss": F.cross_entropy(logits, labels).item(),
        "val_accuracy": (logits.argmax(1) == labels).float().mean().item(),
        "val_drawn_accuracy": (extra_logits.argmax(1) == extra_labels)[is_digit].float().mean().item(),
        "val_threshold": threshold,
        "val_negatives_accepted": accepted / max(1, int((~is_digit).sum())),
        "val_errors": wrong + accepted,
    }


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for weights and BatchNorm running statistics alike."""
    for averaged, current in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        if averaged.dtype.is_floating_point:
            averaged.lerp_(current, 1 - decay)
        else:
            averaged.copy_(current)


def train_arrays(data: Mnist, extra: Rendered, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST training digits and the synthetic images that reached the model (label NOT_DIGIT: non-digits)."""
    reached = extra.found
    images = np.concatenate([data.train.images[:limit], extra.images[reached]])
    labels = np.concatenate([data.train.labels[:limit], extra.labels[reached]])
    return torch.from_numpy(images), torch.from_numpy(labels)


def losses(logits: torch.Tensor, digit: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over the digits in the batch (non-digits have no digit label) and binary cross-entropy
    of digit-vs-not over all of it."""
    is_digit = y != NOT_DIGIT
    classify = F.cross_entropy(logits, y.clamp(min=0), reduction="none")
    classify = (classify * is_digit).sum() / is_digit.sum().clamp(min=1)
    return classify, F.binary_cross_entropy_with_logits(digit, is_digit.float())


@dataclass
class Session:
    """What a training run carries from batch to batch."""

    config: TrainConfig
    device: torch.device
    model: LeNet5
    ema: LeNet5  # the weights' moving average: evaluated, checkpointed and shipped
    images: torch.Tensor  # uint8 [N, 28, 28] on the host
    labels: torch.Tensor
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.OneCycleLR
    scaler: torch.amp.GradScaler
    generator: torch.Generator  # augmentation draws, on the device
    shuffler: torch.Generator  # batch order

    @property
    def amp(self) -> bool:
        return self.device.type == "cuda"


def start(data: Mnist, extra: Rendered, config: TrainConfig, device: torch.device) -> Session:
    """Seeded: the same config, device and thread count give the same weights."""
    seed_everything(config.seed)
    model = LeNet5(config.conv, config.hidden).to(device)
    ema = copy.deepcopy(model).eval()
    generator = torch.Generator(device=device).manual_seed(config.seed)
    shuffler = torch.Generator().manual_seed(config.seed)
    images, labels = train_arrays(data, extra, config.limit)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.lr,
        epochs=config.epochs,
        steps_per_epoch=math.ceil(len(images) / config.batch_size),
    )
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    return Session(
        config, device, model, ema, images, labels, optimizer, schedule, scaler, generator, shuffler
    )


def step(session: Session, index: torch.Tensor) -> tuple[float, int, int]:
    """One optimizer step on the batch `index` (augmented), then the moving average: (loss, digits classified
    right, digits in the batch)."""
    config, device = session.config, session.device
    x = jitter(to_device(session.images[index], device), config, session.generator)
    y = session.labels[index].to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.float16, enabled=session.amp):
        logits, digit = session.model(x)
        classify, detect = losses(logits.float(), digit.float(), y)
        loss = classify + config.digit_loss_weight * detect
    session.optimizer.zero_grad(set_to_none=True)
    session.scaler.scale(loss).backward()
    session.scaler.step(session.optimizer)
    session.scaler.update()
    session.schedule.step()
    done = session.schedule.last_epoch  # optimizer steps so far; a short warm-up lets the average move early
    update_ema(session.ema, session.model, min(config.ema_decay, (1 + done) / (10 + done)))
    is_digit = y != NOT_DIGIT
    return loss.item(), (logits.argmax(1) == y)[is_digit].sum().item(), is_digit.sum().item()


def train_epoch(session: Session, epoch: int) -> dict:
    """One pass over the training images in a fresh order: mean loss, and accuracy on the digits (augmented,
    dropout on)."""
    config = session.config
    session.model.train()
    order = torch.randperm(len(session.images), generator=session.shuffler)
    total_loss, correct, seen = 0.0, 0, 0
    steps = math.ceil(len(session.images) / config.batch_size)
    bar = tqdm(range(steps), desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False)
    for at in bar:
        index = order[at * config.batch_size : (at + 1) * config.batch_size]
        loss, hits, digits = step(session, index)
        total_loss += loss * len(index)
        correct += hits
        seen += digits
        bar.set_postfix(loss=f"{loss:.4f}")
    bar.close()
    return {"train_loss": total_loss / len(session.images), "train_accuracy": correct / max(1, seen)}


def record(history: History, row: dict, ema: nn.Module, checkpoint: Path) -> bool:
    """Add the epoch's row; with the fewest validation errors so far, checkpoint the model. Is it the best?"""
    history.epochs.append(row)
    best = history.best_val_errors is None or row["val_errors"] < history.best_val_errors
    if best:
        history.best_epoch, history.best_val_accuracy = row["epoch"], row["val_accuracy"]
        history.best_val_errors = row["val_errors"]
        torch.save(ema.state_dict(), checkpoint)
    return best


def progress(row: dict, epochs: int, best: bool) -> str:
    return (
        f"epoch {row['epoch']:2d}/{epochs}  train loss {row['train_loss']:.4f} "
        f"acc {row['train_accuracy']:.4f}"
        f"  val acc {row['val_accuracy']:.4f} drawn {row['val_drawn_accuracy']:.4f}  threshold "
        f"{row['val_threshold']:.3g} non-digits accepted {row['val_negatives_accepted']:.4f}  errors "
        f"{row['val_errors']}  {row['seconds']:.1f}s{'  *best' if best else ''}"
    )


def train(
    data: Mnist,
    extra: Rendered,
    validation: Rendered,
    config: TrainConfig,
    device: torch.device,
    checkpoint: Path,
) -> tuple[LeNet5, History]:
    """Train LeNet5 on MNIST plus the synthetic `extra` images; return the epoch with the fewest validation
    errors (`validate`; also saved to `checkpoint`)."""
    session = start(data, extra, config, device)
    history = History()
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        row = {
            "epoch": epoch,
            **train_epoch(session, epoch),
            **validate(session.ema, data.validation, validation, device),
        }
        row["seconds"] = time.perf_counter() - epoch_start
        tqdm.write(progress(row, config.epochs, record(history, row, session.ema, checkpoint)))
    history.seconds = time.perf_counter() - started
    history.cpu_seconds = time.process_time() - cpu_started
    session.ema.load_state_dict(torch.load(checkpoint, map_location=device, weights_only=True))
    return session.ema, history
