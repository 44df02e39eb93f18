"""CPU per image of the image pipeline (decode + MNIST normalization), in-process, per kind of image.

    MNIST_DATA_DIR=... python -m bench.images [--count 100] [--baseline 807899f] [--threads 1,2,4]

Measures the images wing as the service calls it (file bytes -> read_grey -> to_mnist) with
time.process_time, which other jobs on the shared cores disturb far less than wall time. `--baseline REF`
also measures the pipeline as it was at git revision REF, on the same files, side by side. The
HTTP-level cost is bench.run's job. "of which decoding": read_grey alone (decode to the working
resolution, orientation, transparency); the rest is the normalization. `--threads` adds a table
of images/s (wall) and CPU per image when that many threads share the decoding of the same files, as the
service's decoder threads do.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from bench.core import checkout, parser
from service.images import ImageError, read_digit, read_grey
from service.settings import Settings
from trainer.synth.digits import KINDS, mnist_test
from trainer.synth.ink import mnist_ink
from trainer.synth.paper import encode, place

MAX_PIXELS = Settings().max_image_pixels
Pipeline = Callable[[bytes], np.ndarray]


def mnist_png(rng: np.random.Generator, digit: np.ndarray, label: int) -> bytes:
    """A 28x28 MNIST test digit as a PNG, white on black."""
    return encode(Image.fromarray(digit), "PNG")


def scan_png(rng: np.random.Generator, digit: np.ndarray, label: int) -> bytes:
    """A 28x28 test digit dark on light, as bench.run posts it."""
    return encode(Image.fromarray(255 - digit), "PNG")


def drawn(rng: np.random.Generator, digit: np.ndarray) -> np.ndarray:
    """Round-pen strokes 280x280 (alpha in [0, 1]): the digit drawn about 200 px tall."""
    alpha = np.zeros((280, 280), dtype=np.float32)
    stroke = np.clip(mnist_ink(digit, int(rng.integers(150, 230))) * 1.5, 0, 1)
    place(rng, alpha[..., None], stroke, (1,), 0.04)
    return alpha


def canvas_alpha(rng: np.random.Generator, digit: np.ndarray, label: int) -> bytes:
    """A transparent 280x280 canvas export: black strokes, black RGB under alpha 0."""
    rgba = np.zeros((280, 280, 4), dtype=np.uint8)
    rgba[..., 3] = np.round(drawn(rng, digit) * 255)
    return encode(Image.fromarray(rgba, "RGBA"), "PNG")


def canvas_page(rng: np.random.Generator, digit: np.ndarray, label: int) -> bytes:
    """The drawing page's export: black strokes on an opaque white 280x280 canvas."""
    grey = np.round(255 * (1 - drawn(rng, digit))).astype(np.uint8)
    return encode(Image.fromarray(grey).convert("RGB"), "PNG")


# kind -> (maker, target in ms of server CPU per request, or None)
TARGET_KINDS: dict[str, tuple[Callable[..., bytes], float | None]] = {
    "28x28 PNG, dark on light": (scan_png, 0.6),
    "28x28 PNG, MNIST white on black": (mnist_png, 0.6),
    "280x280 canvas PNG, transparent": (canvas_alpha, 1.5),
    "280x280 canvas PNG, drawing page": (canvas_page, 1.5),
}
PAPER_JPEGS = {"JPEG q25-60", "lined paper", "squared paper", "printed fonts", "EXIF-rotated JPEG"}


def kinds() -> dict[str, tuple[Callable[..., bytes], float | None]]:
    """Every kind measured: the target kinds above, then trainer/synth/digits.py's (paper JPEGs <= 0.5 MP:
    2.5 ms, phone photos: 8 ms)."""
    out = dict(TARGET_KINDS)
    for name, maker in KINDS.items():
        target = 2.5 if name in PAPER_JPEGS else 8.0 if name.startswith("phone photo") else None
        out[name] = (maker, target)
    return out


def files_of(maker: Callable[..., bytes], images: np.ndarray, labels: np.ndarray, count: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    return [maker(rng, images[i], int(labels[i])) for i in rng.choice(len(images), count, replace=False)]


# Runs in a checkout of another revision: its own pipeline (the images wing, or the older
# service/preprocess.py) on the pickled files, printing median CPU ms per file as cpu_ms does.
_BASELINE = """
import contextlib, os, pickle, sys, time
files, rounds, max_pixels = pickle.load(sys.stdin.buffer)
if os.path.isdir("service/images"):  # this checkout's own, never the installed one's
    from service.images import ImageError, read_digit
    def run(data): return read_digit(data, max_pixels)
else:
    from service import preprocess
    from service.preprocess import ImageError
    def run(data): return preprocess.to_mnist(preprocess.load_image(data, max_pixels))
per_round = []
for data in files[:3]:
    with contextlib.suppress(ImageError):
        run(data)
for _ in range(rounds):
    started = time.process_time()
    for data in files:
        with contextlib.suppress(ImageError):
            run(data)
    per_round.append((time.process_time() - started) * 1000 / len(files))
print(sorted(per_round)[len(per_round) // 2])
"""


def baseline_ms(revision: str, files: list[bytes], rounds: int) -> float:
    """cpu_ms of the pipeline as it was at a git revision, in a subprocess on a checkout of it."""
    with checkout(revision) as folder:
        done = subprocess.run(
            [sys.executable, "-c", _BASELINE],
            input=pickle.dumps((files, rounds, MAX_PIXELS)),
            env={**os.environ, "PYTHONPATH": folder},
            cwd=folder,
            check=True,
            capture_output=True,
        )
    return float(done.stdout)


def cpu_ms(run: Pipeline, files: list[bytes], rounds: int) -> float:
    """Median over rounds of CPU ms per file (every thread of this process; files with no digit count)."""
    for data in files[:3]:
        _attempt(run, data)
    per_round = []
    for _ in range(rounds):
        started = time.process_time()
        for data in files:
            _attempt(run, data)
        per_round.append((time.process_time() - started) * 1000 / len(files))
    return float(np.median(per_round))


def _attempt(run: Pipeline, data: bytes) -> None:
    with contextlib.suppress(ImageError):
        run(data)


def threaded(run: Pipeline, files: list[bytes], threads: int) -> tuple[float, float]:
    """Images/s (wall) and CPU ms per image with `threads` threads sharing the files."""
    work = files * max(1, 4 * threads)
    index = iter(range(len(work)))
    lock = threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                i = next(index, None)
            if i is None:
                return
            _attempt(run, work[i])

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    wall, cpu = time.perf_counter(), time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return len(work) / wall, cpu * 1000 / len(work)


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--data", type=Path, default=Path(os.environ.get("MNIST_DATA_DIR", "data/mnist")))
    options.add_argument("--count", type=int, default=100, help="files per kind")
    options.add_argument("--rounds", type=int, default=3, help="passes over the files; the median is shown")
    options.add_argument("--baseline", metavar="REV", help="also measure the pipeline as it was at REV")
    options.add_argument("--threads", default="", help="comma-separated thread counts for the threads table")
    options.add_argument("--kinds", default="", help="comma-separated substrings: only kinds matching one")
    args = options.parse_args()

    images, labels = mnist_test(args.data)
    current: Pipeline = lambda data: read_digit(data, MAX_PIXELS)  # noqa: E731
    baseline = args.baseline
    selected = {
        name: value
        for name, value in kinds().items()
        if not args.kinds or any(part.strip() in name for part in args.kinds.split(","))
    }
    counts = [int(n) for n in args.threads.split(",") if n.strip()]
    print(f"CPU ms per image (time.process_time, median of {args.rounds} passes over {args.count} files)")
    head = "| kind | target (server CPU/request) |"
    head += (
        f" before ({args.baseline}) | after | of which decoding | x |"
        if baseline
        else " ms/image | of which decoding |"
    )
    print(head)
    print("|---|---:|" + ("---:|---:|---:|---:|" if baseline else "---:|---:|"))
    threads_rows = []
    for name, (maker, target) in selected.items():
        files = files_of(maker, images, labels, args.count)
        after = cpu_ms(current, files, args.rounds)
        decoding = cpu_ms(lambda data: read_grey(data, MAX_PIXELS), files, args.rounds)
        goal = f"<= {target:g} ms" if target else ""
        if baseline:
            before = baseline_ms(baseline, files, args.rounds)
            print(f"| {name} | {goal} | {before:.2f} | {after:.2f} | {decoding:.2f} | {before / after:.1f} |")
        else:
            print(f"| {name} | {goal} | {after:.2f} | {decoding:.2f} |")
        if counts:
            threads_rows.append((name, [threaded(current, files, n) for n in counts]))
    if counts:
        print("\nthreads sharing the files: images/s (wall) / CPU ms per image")
        print("| kind | " + " | ".join(f"{n} thread{'s' * (n > 1)}" for n in counts) + " |")
        print("|---|" + "---:|" * len(counts))
        for name, cells in threads_rows:
            print(f"| {name} | " + " | ".join(f"{rate:.0f} / {ms:.2f}" for rate, ms in cells) + " |")


if __name__ == "__main__":
    main()
