"""mnist-predict: the digit in each image file, folder of images, or stdin (`-`), from a running service.

    mnist-predict digit.png scans/ --url http://127.0.0.1:8000 --json
Prints a table (or a JSON list with --json) in the order given; exits 1 if any image failed, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from mnist_client.client import DEFAULT_URL, AsyncClient
from mnist_client.errors import MnistError
from mnist_client.results import Prediction

# What a folder expands to (named files are sent whatever their name: the server reads the format).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
STDIN = "-"


@dataclass
class Outcome:
    """One input's result: a prediction or the error that stopped it."""

    file: str
    prediction: Prediction | None = None
    error: str | None = None
    status: int | None = None

    def as_json(self) -> dict[str, Any]:
        if self.prediction is None:
            return {"file": self.file, "digit": None, "error": self.error, "status": self.status}
        p = self.prediction
        return {
            "file": self.file,
            "digit": p.digit,
            "confidence": p.confidence,
            "is_digit": p.is_digit,
            "digit_score": p.digit_score,
            "probabilities": list(p.probabilities),
            "model": {"name": p.model.name, "version": p.model.version},
        }


def expand(arguments: list[str]) -> list[str | Outcome]:
    """The files to send, in order: a folder gives its image files (recursively, sorted, hidden ones
    skipped), or a failed outcome if it holds none."""
    items: list[str | Outcome] = []
    for argument in arguments:
        path = Path(argument)
        if argument == STDIN or not path.is_dir():
            items.append(argument)
            continue
        found = sorted(
            str(item)
            for item in path.rglob("*")
            if item.suffix.lower() in IMAGE_SUFFIXES
            and item.is_file()
            and not any(part.startswith(".") for part in item.relative_to(path).parts)
        )
        items += found or [Outcome(argument, error="no image files in this folder")]
    return items


class Progress:
    """`[####......] 12/40` on stderr, redrawn in place; only on a terminal and for more than one file."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.shown = total > 1 and stream.isatty()

    def advance(self) -> None:
        self.done += 1
        if self.shown:
            filled = self.WIDTH * self.done // self.total
            bar = "#" * filled + "." * (self.WIDTH - filled)
            self.stream.write(f"\r[{bar}] {self.done}/{self.total}")
            self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


async def predict_all(
    client: AsyncClient, items: list[str | Outcome], stdin: bytes | None, concurrency: int, progress: Progress
) -> list[Outcome]:
    """Every file through POST /predict, at most `concurrency` at once; outcomes in the order given."""
    gate = asyncio.Semaphore(concurrency)

    async def one(file: str | Outcome) -> Outcome:
        if isinstance(file, Outcome):
            return file
        async with gate:
            try:
                source = stdin if file == STDIN else Path(file)
                return Outcome(file, prediction=await client.predict(source))
            except MnistError as exc:
                return Outcome(file, error=str(exc), status=exc.status)
            except OSError as exc:
                return Outcome(file, error=f"cannot read: {exc.strerror or exc}")
            finally:
                progress.advance()

    return list(await asyncio.gather(*(one(item) for item in items)))


def table(outcomes: list[Outcome]) -> str:
    """FILE, DIGIT, CONFIDENCE, NOTE (not a digit / the error), aligned."""
    rows = [("FILE", "DIGIT", "CONFIDENCE", "NOTE")]
    for outcome in outcomes:
        p = outcome.prediction
        if p is None:
            rows.append((outcome.file, "-", "-", f"error: {outcome.error}"))
        else:
            note = "not a digit" if p.is_digit is False else ""
            rows.append((outcome.file, str(p.digit), f"{100 * p.confidence:.1f} %", note))
    width = max(len(row[0]) for row in rows)
    return "\n".join(
        f"{file:<{width}}  {digit:>5}  {confidence:>10}  {note}".rstrip()
        for file, digit, confidence, note in rows
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mnist-predict", description="Recognize the handwritten digit in each image with the service."
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="FILE|DIR|-", help="image files, folders of them, - for stdin"
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("MNIST_URL", DEFAULT_URL),
        help="service URL ($MNIST_URL, default %(default)s)",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("MNIST_API_KEY"), help="Bearer key ($MNIST_API_KEY)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--concurrency", type=int, default=4, help="requests at once (default %(default)s)")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per request (default %(default)s)"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        help="retries of 503, connect errors and broken connections (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.inputs.count(STDIN) > 1:
        parser.error("stdin (-) can be read only once")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    items = expand(args.inputs)
    stdin = sys.stdin.buffer.read() if STDIN in items else None

    async def run() -> list[Outcome]:
        progress = Progress(sum(isinstance(item, str) for item in items), sys.stderr)
        try:
            client = AsyncClient(args.url, args.api_key, timeout=args.timeout, retries=args.retries)
            async with client:
                return await predict_all(client, items, stdin, args.concurrency, progress)
        finally:
            progress.close()

    outcomes = asyncio.run(run())
    print(json.dumps([o.as_json() for o in outcomes], indent=2) if args.json else table(outcomes))
    return 1 if any(o.prediction is None for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
