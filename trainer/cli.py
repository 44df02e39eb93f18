"""`mnist-train`: data -> training -> calibration -> ONNX export + verification -> model card and plots."""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from trainer import openset
from trainer.calibrate import ACCEPT, ECE_BINS, digit_threshold, expected_calibration_error, fit_temperature
from trainer.data import DATA_DIR_ENV, MnistError, Split, load_mnist
from trainer.export import (
    DIGIT_SCORE,
    LOGITS,
    OPSET,
    PROBABILITIES,
    Deployable,
    export_onnx,
    run_onnx,
    torch_outputs,
    verify,
    write_metadata,
)
from trainer.model import count_parameters
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
from trainer.synth import recipes
from trainer.synth.cache import cached_render
from trainer.synth.negatives import HELD_OUT
from trainer.train import TrainConfig, pick_device, predict, train

NAME, VERSION = "lenet5", "2.0.0"
DEFAULTS = TrainConfig()
SELF_TEST_CLASSES, SELF_TEST_PER_CLASS = range(8), 2  # 16 images: what the service checks a reloaded model on


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
        help=f"train on the first N MNIST training images only, and {recipes.SMOKE_COUNT} synthetic images "
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


def self_test(outputs: dict[str, np.ndarray], split: Split, threshold: float) -> dict:
    """The service's check of a reloaded model (metadata `self_test`): for each class in SELF_TEST_CLASSES
    the validation digits the model classifies right with the highest probability (and accepts)."""
    probabilities, scores = outputs[PROBABILITIES], outputs[DIGIT_SCORE]
    chosen = []
    for digit in SELF_TEST_CLASSES:
        candidates = np.flatnonzero(
            (split.labels == digit) & (probabilities.argmax(1) == digit) & (scores >= max(threshold, 0.5))
        )
        ranked = candidates[np.argsort(-probabilities[candidates, digit], kind="stable")]
        chosen.extend(ranked[:SELF_TEST_PER_CLASS].tolist())
    images = split.images[chosen].reshape(len(chosen), -1)
    return {
        "images": base64.b64encode(images.astype(np.uint8).tobytes()).decode("ascii"),
        "labels": split.labels[chosen].tolist(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        limit=args.limit,
        conv=tuple(args.conv),
        hidden=tuple(args.hidden),
    )
    device = pick_device(args.device)
    try:
        data = load_mnist(args.data_dir)
    except MnistError as error:
        print(f"mnist-train: {error}", file=sys.stderr)
        return 2
    out: Path = args.out
    load_before = os.getloadavg()
    # Synthetic images through the service's pipeline: train and validation sets (cached); tiny with --limit.
    smoke = args.limit is not None
    started, cpu_started = time.perf_counter(), time.process_time()
    extra = cached_render("train", data.train, smoke, args.workers)
    validation = cached_render("validation", data.validation, smoke, args.workers)
    rendering = {
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(
            time.process_time() - cpu_started + extra.cpu_seconds + validation.cpu_seconds, 1
        ),
        "cached": extra.cpu_seconds == validation.cpu_seconds == 0,
    }
    print(
        f"training on {device} ({torch.get_num_threads()} threads), {len(data.train.labels[: args.limit])} "
        f"MNIST images + {int(extra.found.sum())} synthetic "
        f"({int((~extra.is_digit & extra.found).sum())} not digits; "
        f"rendered in {rendering['seconds']}s{', cached' if rendering['cached'] else ''}), validation "
        f"{len(data.validation.labels)} + {int(validation.found.sum())}; load average {load_before[0]:.2f}"
    )
    model, history = train(data, extra, validation, config, device, out / "checkpoints" / f"{NAME}-best.pt")
    model = model.cpu()

    # Calibration: validation digits only, as before the digit head existed.
    val_logits, _ = predict(model, data.validation.images, torch.device("cpu"))
    val_labels = torch.from_numpy(data.validation.labels)
    temperature = fit_temperature(val_logits, val_labels)
    val_ece = {
        t: expected_calibration_error(torch.softmax(val_logits / t, 1).numpy(), data.validation.labels)
        for t in (1.0, temperature)
    }

    # Export to a temporary file beside the model: the service may poll lenet5.onnx, which only ever changes
    # by an atomic rename of a complete, verified file. Only now, with the model and temperature fixed, is the
    # test set used (torch as the reference, accuracy through onnxruntime).
    onnx_path = out / f"{NAME}.onnx"
    partial = out / f".{NAME}.onnx.partial"
    deployable = Deployable(model, temperature)
    export_onnx(deployable, partial)
    expected = torch_outputs(deployable, data.test.images)
    first = verify(partial, expected, data.test)

    # The threshold: validation digits only (MNIST validation + realistic and drawn ones reaching the model),
    # scored by the exported graph as the service will score them.
    val_outputs = run_onnx(partial, data.validation.images)
    drawn = validation.found & validation.is_digit
    val_scores = np.concatenate(
        [val_outputs[DIGIT_SCORE], run_onnx(partial, validation.images[drawn])[DIGIT_SCORE]]
    )
    threshold = digit_threshold(val_scores)
    val_negative_scores = run_onnx(partial, validation.images[validation.found & ~validation.is_digit])[
        DIGIT_SCORE
    ]
    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    reference = self_test(val_outputs, data.validation, threshold)
    write_metadata(
        partial,
        {
            "name": NAME,
            "version": VERSION,
            "created": created,
            "test_accuracy": f"{first.accuracy:.4f}",
            "training_config": json.dumps(asdict(config), sort_keys=True),
            "data_sha256": json.dumps(data.sha256),
            "temperature": repr(temperature),
            "digit_threshold": repr(threshold),
            "self_test": json.dumps(reference),
        },
    )
    final = verify(partial, expected, data.test)  # the shipped bytes, re-verified after adding metadata
    if final.correct != first.correct:
        raise RuntimeError("test accuracy changed after writing metadata")
    os.replace(partial, onnx_path)

    # Digit or not on fresh test images: realistic digits from MNIST test digits, every negative kind.
    test_parts = recipes.recipe_for(recipes.TEST, smoke)
    rendered = openset.test_set(data.test, test_parts, workers=args.workers)
    figures = openset.measure(onnx_path, threshold, data.test, rendered)

    labels = data.test.labels
    calibrated = final.outputs[PROBABILITIES]
    uncalibrated = torch.softmax(torch.from_numpy(final.outputs[LOGITS]), 1).numpy()
    matrix = confusion_matrix(labels, calibrated.argmax(1))
    plots = {
        "training": f"{NAME}-training.png",
        "confusion": f"{NAME}-confusion.png",
        "reliability": f"{NAME}-reliability.png",
        "digit_scores": f"{NAME}-digit-scores.png",
        "mistakes": f"{NAME}-mistakes.png",
    }
    plot_training(history, out / plots["training"])
    plot_confusion(matrix, out / plots["confusion"])
    plot_reliability(uncalibrated, calibrated, labels, out / plots["reliability"])
    test_outputs = run_onnx(onnx_path, rendered.images)
    plot_digit_scores(
        final.outputs[DIGIT_SCORE],
        rendered,
        test_outputs[DIGIT_SCORE],
        threshold,
        out / plots["digit_scores"],
    )
    plot_mistakes(data.test, final.outputs, rendered, test_outputs, threshold, out / plots["mistakes"])
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
        "validation_errors": history.best_val_errors,
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
        "digit_threshold": threshold,
        "not_a_digit": {
            "threshold_rule": f"the highest threshold accepting >= {ACCEPT:.1%} of validation digits (MNIST "
            "validation split + realistic and drawn validation digits that reach the model)",
            "validation_digits": len(val_scores),
            "validation_digits_accepted": float((val_scores >= threshold).mean()),
            "validation_negatives": len(val_negative_scores),
            "validation_negatives_rejected": float((val_negative_scores < threshold).mean()),
            "held_out_kinds": HELD_OUT,
            "test_set": {
                "seed": recipes.SEEDS["test"],
                "recipe": [[p.source, p.kind, p.count, p.drop_strokes] for p in test_parts],
                "measured_with": "trainer.openset.measure (bench/notdigit.py prints the same table)",
            },
            **figures,
        },
        "self_test_labels": reference["labels"],
        "parameters": count_parameters(model),
        "architecture": str(model),
        "onnx": {
            "opset": OPSET,
            "input": "image float32 [batch,1,28,28] in [0,1], white ink on black",
            "outputs": {
                LOGITS: "float32 [batch,10]",
                PROBABILITIES: "float32 [batch,10], softmax(logits / temperature)",
                DIGIT_SCORE: "float32 [batch], sigmoid of the digit-vs-not logit: is the input a digit",
            },
            "metadata": "name, version, created, test_accuracy, training_config, data_sha256, temperature, "
            "digit_threshold (decimal), self_test (JSON: base64 uint8 n x 784 images, labels)",
            "max_abs_diff_vs_torch": final.max_abs_diff,
            "images_compared": final.compared,
        },
        "training": {
            "command": shlex.join(["mnist-train", *(sys.argv[1:] if argv is None else argv)]),
            "seconds": round(history.seconds, 1),
            "seconds_per_epoch": round(history.seconds / config.epochs, 1),
            "cpu_seconds": round(history.cpu_seconds, 1),
            "rendering": rendering,
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
            "train_synthetic": int(extra.found.sum()),
            "train_synthetic_not_digits": int((extra.found & ~extra.is_digit).sum()),
            "validation": len(data.validation.labels),
            "validation_synthetic": int(validation.found.sum()),
            "test": len(labels),
        },
        "plots": plots,
    }
    write_card(out / f"{NAME}.json", card)
    print(
        f"test accuracy {final.accuracy:.4f} (onnxruntime), ECE {card['ece']['before']:.4f} -> "
        f"{card['ece']['after']:.4f} at T={temperature:.3f}, digit threshold {threshold:.4g}, "
        f"{card['parameters']} parameters, trained in {history.seconds:.0f}s; wrote {onnx_path} and "
        f"{out / (NAME + '.json')}"
    )
    return 0
