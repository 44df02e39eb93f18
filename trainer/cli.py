"""`mnist-train`: data -> training -> calibration -> ONNX export + verification -> model card and plots."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import onnxruntime as ort
import torch

from trainer.calibrate import ECE_BINS, expected_calibration_error, fit_temperature
from trainer.data import DATA_DIR_ENV, MnistError, load_mnist
from trainer.export import (
    LOGITS,
    OPSET,
    PROBABILITIES,
    Deployable,
    export_onnx,
    torch_probabilities,
    verify,
    write_metadata,
)
from trainer.model import count_parameters
from trainer.report import (
    confusion_matrix,
    per_class,
    plot_confusion,
    plot_reliability,
    plot_training,
    sha256_file,
    write_card,
)
from trainer.train import TrainConfig, pick_device, predict_logits, train

NAME, VERSION = "lenet5", "1.0.0"
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
    parser.add_argument("--limit", type=int, help="train on the first N training images only (smoke tests)")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, limit=args.limit
    )
    device = pick_device(args.device)
    try:
        data = load_mnist(args.data_dir)
    except MnistError as error:
        print(f"mnist-train: {error}", file=sys.stderr)
        return 2
    out: Path = args.out
    load_before = os.getloadavg()
    print(
        f"training on {device} ({torch.get_num_threads()} threads), {len(data.train.labels[: args.limit])} "
        f"images, validation {len(data.validation.labels)}; load average {load_before[0]:.2f}"
    )
    model, history = train(data, config, device, out / "checkpoints" / f"{NAME}-best.pt")
    model = model.cpu()

    # Calibration: validation only.
    val_logits = predict_logits(model, data.validation.images, torch.device("cpu"))
    val_labels = torch.from_numpy(data.validation.labels)
    temperature = fit_temperature(val_logits, val_labels)
    val_ece = {
        t: expected_calibration_error(torch.softmax(val_logits / t, 1).numpy(), data.validation.labels)
        for t in (1.0, temperature)
    }

    # Export; only now, with the model and temperature fixed, is the test set used (torch as the reference,
    # accuracy through onnxruntime).
    onnx_path = out / f"{NAME}.onnx"
    deployable = Deployable(model, temperature)
    export_onnx(deployable, onnx_path)
    expected = torch_probabilities(deployable, data.test.images)
    first = verify(onnx_path, expected, data.test)
    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    write_metadata(
        onnx_path,
        {
            "name": NAME,
            "version": VERSION,
            "created": created,
            "test_accuracy": f"{first.accuracy:.4f}",
            "training_config": json.dumps(asdict(config), sort_keys=True),
            "data_sha256": json.dumps(data.sha256),
            "temperature": repr(temperature),
        },
    )
    final = verify(onnx_path, expected, data.test)  # the shipped bytes, re-verified after adding metadata
    if final.correct != first.correct:
        raise RuntimeError("test accuracy changed after writing metadata")

    labels = data.test.labels
    calibrated = final.outputs[PROBABILITIES]
    uncalibrated = torch.softmax(torch.from_numpy(final.outputs[LOGITS]), 1).numpy()
    matrix = confusion_matrix(labels, calibrated.argmax(1))
    plots = {
        "training": f"{NAME}-training.png",
        "confusion": f"{NAME}-confusion.png",
        "reliability": f"{NAME}-reliability.png",
    }
    plot_training(history, out / plots["training"])
    plot_confusion(matrix, out / plots["confusion"])
    plot_reliability(uncalibrated, calibrated, labels, out / plots["reliability"])
    load_after = os.getloadavg()
    cpu_name = platform.processor() or platform.machine()
    card = {
        "name": NAME,
        "version": VERSION,
        "created": created,
        "onnx_file": onnx_path.name,
        "onnx_sha256": sha256_file(onnx_path),
        "onnx_bytes": onnx_path.stat().st_size,
        "test_accuracy": final.accuracy,
        "test_correct": final.correct,
        "test_count": len(labels),
        "test_measured_with": f"onnxruntime {ort.__version__} CPUExecutionProvider",
        "validation_accuracy": history.best_val_accuracy,
        "per_class": per_class(matrix),
        "confusion_matrix": matrix.tolist(),
        "ece": {
            "before": expected_calibration_error(uncalibrated, labels),
            "after": expected_calibration_error(calibrated, labels),
            "split": "test",
            "bins": ECE_BINS,
            "validation_before": val_ece[1.0],
            "validation_after": val_ece[temperature],
        },
        "temperature": temperature,
        "parameters": count_parameters(model),
        "architecture": str(model),
        "onnx": {
            "opset": OPSET,
            "input": "image float32 [batch,1,28,28] in [0,1], white ink on black",
            "outputs": {
                LOGITS: "float32 [batch,10]",
                PROBABILITIES: "float32 [batch,10], softmax(logits / temperature)",
            },
            "max_abs_diff_vs_torch": final.max_abs_diff,
            "images_compared": final.compared,
        },
        "training": {
            "command": shlex.join(["mnist-train", *(sys.argv[1:] if argv is None else argv)]),
            "seconds": round(history.seconds, 1),
            "seconds_per_epoch": round(history.seconds / config.epochs, 1),
            "cpu_seconds": round(history.cpu_seconds, 1),
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
            "epochs": config.epochs,
            "best_epoch": history.best_epoch,
            "config": asdict(config),
            "history": history.epochs,
            "torch": torch.__version__,
        },
        "data": {
            "sha256": data.sha256,
            "train": len(data.train.labels[: args.limit]),
            "validation": len(data.validation.labels),
            "test": len(labels),
        },
        "plots": plots,
    }
    write_card(out / f"{NAME}.json", card)
    print(
        f"test accuracy {final.accuracy:.4f} (onnxruntime), ECE {card['ece']['before']:.4f} -> "
        f"{card['ece']['after']:.4f} at T={temperature:.3f}, {card['parameters']} parameters, "
        f"trained in {history.seconds:.0f}s; wrote {onnx_path} and {out / (NAME + '.json')}"
    )
    return 0
