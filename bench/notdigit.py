"""Digit or not, per kind: the share of non-digits rejected at the model's threshold and AUROC, the share of
digits accepted and accuracy. With the defaults: the same images and figures as the card's `not_a_digit`.

    MNIST_DATA_DIR=... python -m bench.notdigit [--model models/lenet5.onnx] [--realistic 100 --drawn 200
        --negatives 200 --seed 3]
    python -m bench.notdigit --cost [--model ...]
    python -m bench.notdigit --update-card        # after a change to the pipeline or the generators

Every image goes the service's way (file bytes -> service.images -> the ONNX model); an image where the
pipeline finds no digit counts as rejected (and, for a digit, as wrong). --cost measures instead what the
digit_score output costs: process CPU time of the shipped graph vs the same graph without the digit head.
--update-card measures the card's own test set again (its recipe and seed) and writes the figures and the two
digit-or-not plots into the model's card, as mnist-train would: no retraining.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from bench.core import SHIPPED_MODEL, parser
from service.contract import DIGIT_SCORE, INPUT, LOGITS, PROBABILITIES
from trainer import openset
from trainer.data import Split, load_test
from trainer.export import run_onnx
from trainer.report import plot_digit_scores, plot_mistakes, write_card
from trainer.synth import recipes
from trainer.synth.negatives import KINDS
from trainer.synth.render import Part


def threshold_of(model: Path) -> float:
    metadata = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    return float(metadata["digit_threshold"])


def cost(model: Path, batches: tuple[int, ...] = (1, 64), seconds: float = 4.0) -> None:
    """CPU time per run, one intra-op thread, of the shipped graph and of the same graph cut before the digit
    head (onnx.utils.extract_model keeps what logits and probabilities need); rounds alternate."""
    with tempfile.TemporaryDirectory() as folder:
        headless = Path(folder) / "headless.onnx"
        onnx.utils.extract_model(str(model), str(headless), [INPUT], [LOGITS, PROBABILITIES])
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        sessions = {
            name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for name, path in (("without digit_score", headless), ("with digit_score", model))
        }
        rng = np.random.default_rng(0)
        print("| batch | without digit_score (us/run) | with digit_score (us/run) | extra |")
        print("|---:|---:|---:|---:|")
        for batch in batches:
            x = rng.random((batch, 1, 28, 28), dtype=np.float32)
            runs = {name: [] for name in sessions}
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                for name, session in sessions.items():  # alternate, so load on the machine hits both alike
                    start = time.process_time()
                    for _ in range(50):
                        session.run(None, {INPUT: x})
                    runs[name].append((time.process_time() - start) / 50)
            base, full = (float(np.median(runs[name])) * 1e6 for name in sessions)
            print(f"| {batch} | {base:.1f} | {full:.1f} | {100 * (full / base - 1):+.1f} % |")


def update_card(model: Path, test: Split) -> None:
    """The card's digit-or-not figures and plots, measured again on the card's own recipe and seed."""
    path = model.with_suffix(".json")
    card = json.loads(path.read_text())
    recipe = card["not_a_digit"]["test_set"]
    rendered = openset.test_set(test, [Part(*part) for part in recipe["recipe"]], recipe["seed"])
    threshold = card["digit_threshold"]
    card["not_a_digit"].update(openset.measure(model, threshold, test, rendered))
    write_card(path, card)
    mnist, outputs = run_onnx(model, test.images), run_onnx(model, rendered.images)
    folder = model.parent
    plot_digit_scores(
        mnist[DIGIT_SCORE], rendered, outputs[DIGIT_SCORE], threshold, folder / card["plots"]["digit_scores"]
    )
    plot_mistakes(test, mnist, rendered, outputs, threshold, folder / card["plots"]["mistakes"])
    print(f"updated {path} and its digit-or-not plots")


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    options.add_argument("--data", type=Path, default=Path(os.environ.get("MNIST_DATA_DIR", "data/mnist")))
    defaults = {p.source: p.count for p in recipes.TEST}
    options.add_argument(
        "--realistic", type=int, default=defaults["realistic"], help="images per realistic kind"
    )
    options.add_argument("--drawn", type=int, default=defaults["glyph"], help="printed/pen digits per kind")
    options.add_argument(
        "--negatives", type=int, default=defaults["negative"], help="images per non-digit kind"
    )
    options.add_argument("--seed", type=int, default=recipes.SEEDS["test"])
    options.add_argument("--threshold", type=float, help="default: the model's digit_threshold metadata")
    options.add_argument("--cost", action="store_true", help="measure the CPU cost of digit_score instead")
    options.add_argument("--update-card", action="store_true", help="re-measure the card's figures into it")
    args = options.parse_args()
    if args.cost:
        cost(args.model)
        return
    if args.update_card:
        update_card(args.model, load_test(args.data))
        return

    threshold = args.threshold if args.threshold is not None else threshold_of(args.model)
    test = load_test(args.data)
    parts = recipes.recipe(args.realistic, args.drawn, dict.fromkeys(KINDS, args.negatives), figures=True)
    started = time.perf_counter()
    rendered = openset.test_set(test, parts, args.seed)
    figures = openset.measure(args.model, threshold, test, rendered)
    print(
        f"model {args.model.name}, digit threshold {threshold:.6g}; seed {args.seed}; rendered "
        f"{len(rendered.labels)} images in {time.perf_counter() - started:.0f} s"
    )
    print("\n| digits | n | accepted | accuracy |\n|---|---:|---:|---:|")
    for name, row in figures["digits"].items():
        print(f"| {name} | {row['n']} | {100 * row['accepted']:.2f} % | {100 * row['accuracy']:.2f} % |")
    print("\n| not digits | trained on | n | rejected | by the pipeline | AUROC |")
    print("|---|---|---:|---:|---:|---:|")
    for name, row in figures["negatives"].items():
        trained = "yes" if KINDS[name].trained else "**no**"
        print(
            f"| {name} | {trained} | {row['n']} | {100 * row['rejected']:.1f} % "
            f"| {100 * row['pipeline_rejected']:.1f} % | {row['auroc']:.4f} |"
        )


if __name__ == "__main__":
    main()
