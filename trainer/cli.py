"""`mnist-train`: data -> training -> calibration -> ONNX export + verification -> model card and plots."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from trainer import card, openset
from trainer.calibrate import calibrate
from trainer.data import DATA_DIR_ENV, Mnist, MnistDataError, load_mnist
from trainer.ship import NAME, ship
from trainer.synth.cache import TrainingSets, training_sets
from trainer.synth.recipes import SMOKE_COUNT, TEST, recipe_for
from trainer.train import TrainConfig, pick_device, predict, train

DEFAULTS = TrainConfig()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mnist-train", description=__doc__)
    parser.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr, help="peak learning rate (one-cycle AdamW)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument(
        "--data-dir",
        help=f"folder with the MNIST idx files (default: ${DATA_DIR_ENV}, "
        "else ~/.cache/mnist; missing files are downloaded)",
    )
    parser.add_argument("--out", type=Path, default=Path("models"), help="where lenet5.onnx/.json/plots go")
    parser.add_argument(
        "--limit",
        type=int,
        help=f"train on the first N MNIST training images only, and {SMOKE_COUNT} synthetic images "
        "of each kind in every set (smoke tests)",
    )
    parser.add_argument("--conv", type=int, nargs=2, default=DEFAULTS.conv, help="conv channels")
    parser.add_argument("--hidden", type=int, nargs=2, default=DEFAULTS.hidden, help="hidden widths")
    parser.add_argument(
        "--workers", type=int, help="processes rendering synthetic images (default: the usable cores)"
    )
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def training_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        limit=args.limit,
        conv=tuple(args.conv),
        hidden=tuple(args.hidden),
    )


def starting(device: torch.device, data: Mnist, sets: TrainingSets, limit: int | None, load: float) -> str:
    """The line mnist-train starts training with: what it trains on, and how busy the machine is."""
    extra, validation = sets.train, sets.validation
    return (
        f"training on {device} ({torch.get_num_threads()} threads), {len(data.train.labels[:limit])} "
        f"MNIST images + {int(extra.found.sum())} synthetic "
        f"({int((~extra.is_digit & extra.found).sum())} not digits; "
        f"rendered in {sets.seconds}s{', cached' if sets.cached else ''}), validation "
        f"{len(data.validation.labels)} + {int(validation.found.sum())}; load average {load:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    """Data (MNIST and synthetic images through the service's pipeline) -> train -> calibrate (temperature on
    validation digits) -> export (the digit threshold on the exported graph, verified, atomically) -> the
    card (digit-or-not figures on fresh test images, plots)."""
    args = parse_args(argv)
    config, (device, why_cpu) = training_config(args), pick_device(args.device)
    if why_cpu is not None:
        print(f"mnist-train: training on CPU, not CUDA: {why_cpu}")
    try:
        data = load_mnist(args.data_dir)
    except MnistDataError as error:
        print(f"mnist-train: {error}", file=sys.stderr)
        return 2
    load_before = os.getloadavg()[0]
    smoke = args.limit is not None
    sets = training_sets(data, smoke, args.workers)
    print(starting(device, data, sets, args.limit, load_before))
    checkpoint = args.out / "checkpoints" / f"{NAME}-best.pt"
    model, history = train(data, sets.train, sets.validation, config, device, checkpoint)
    model = model.cpu()
    validation_logits, _ = predict(model, data.validation.images, torch.device("cpu"))
    calibration = calibrate(validation_logits, data.validation.labels)
    shipped = ship(model, calibration.temperature, data, sets.validation, config, args.out / f"{NAME}.onnx")
    test = openset.measure_test_set(
        shipped.path, shipped.threshold, data.test, recipe_for(TEST, smoke), args.workers
    )
    command = ["mnist-train", *(sys.argv[1:] if argv is None else argv)]
    run = card.Run(
        command, config, device, data, sets, model, history, calibration, shipped, test, load_before
    )
    print(card.summary(run, card.write(run, args.out)))
    return 0
