"""MNIST idx files: find or download them, read and validate them, split train/validation."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR_ENV = "MNIST_DATA_DIR"
# PyTorch's mirror first (torchvision uses it), then the one TensorFlow uses.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
# SHA-256 of the *decompressed* idx bytes: a re-gzipped copy of the same data still verifies.
FILES = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
ROWS = COLS = 28
TRAIN_COUNT, TEST_COUNT = 60_000, 10_000
VALIDATION_SIZE = 5_000
SPLIT_SEED = 20_240_601  # fixed on purpose: every training seed sees the same validation images


class MnistDataError(RuntimeError):
    """A missing, unreadable or malformed MNIST file; the message says which file and what is wrong."""


@dataclass
class Split:
    images: np.ndarray  # uint8 [N, 28, 28], white ink on black
    labels: np.ndarray  # int64 [N]


@dataclass
class Mnist:
    train: Split
    validation: Split
    test: Split
    sha256: dict[str, str]  # file stem -> SHA-256 of the decompressed idx bytes


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """--data-dir, else $MNIST_DATA_DIR, else a per-user cache folder."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    return Path.home() / ".cache" / "mnist"


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError
        raise MnistDataError(f"{path}: cannot read ({error}); delete it to download a fresh copy") from error


def parse_idx(raw: bytes, *, magic: int, count: int, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Validate an idx buffer's header and size against what MNIST must be, then view it as uint8."""
    header = 4 * (1 + 1 + len(shape))
    if len(raw) < header:
        raise MnistDataError(f"{name}: truncated header ({len(raw)} bytes, expected at least {header})")
    dims = np.frombuffer(raw, dtype=">u4", count=2 + len(shape))
    if int(dims[0]) != magic:
        raise MnistDataError(f"{name}: bad magic number 0x{int(dims[0]):08x}, expected 0x{magic:08x}")
    if int(dims[1]) != count:
        raise MnistDataError(f"{name}: header says {int(dims[1])} items, expected {count}")
    if tuple(int(d) for d in dims[2:]) != shape:
        raise MnistDataError(f"{name}: item shape {tuple(int(d) for d in dims[2:])}, expected {shape}")
    expected = header + count * int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise MnistDataError(f"{name}: {what}: {len(raw)} bytes, expected {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(count, *shape).copy()


def find_file(data_dir: Path, stem: str) -> Path | None:
    """`<stem>.gz` or `<stem>` in data_dir, if either is there."""
    for candidate in (data_dir / f"{stem}.gz", data_dir / stem):
        if candidate.is_file():
            return candidate
    return None


def download(data_dir: Path, stem: str, mirrors: tuple[str, ...] = MIRRORS, timeout: float = 30.0) -> Path:
    """Fetch `<stem>.gz` from the first mirror that answers and keep it only if its SHA-256 verifies."""
    target = data_dir / f"{stem}.gz"
    failures = []
    for mirror in mirrors:
        url = f"{mirror.rstrip('/')}/{stem}.gz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read()
            digest = hashlib.sha256(gzip.decompress(payload)).hexdigest()
        except (OSError, http.client.HTTPException, ValueError, EOFError, zlib.error) as error:
            failures.append(f"{url}: {getattr(error, 'reason', error)}")
            continue
        if digest != FILES[stem]:
            failures.append(f"{url}: SHA-256 {digest} does not match the expected {FILES[stem]}")
            continue
        data_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".gz.part")
        partial.write_bytes(payload)
        partial.replace(target)
        return target
    raise MnistDataError(
        f"{stem} is not in {data_dir} and could not be downloaded ("
        + "; ".join(failures)
        + f"). Offline? Put the four MNIST idx files (.gz or raw) in a folder and set {DATA_DIR_ENV} "
        "to it (or pass --data-dir)."
    )


def _load_pair(data_dir: Path, prefix: str, count: int, mirrors: tuple[str, ...]) -> tuple[Split, dict]:
    arrays, digests = [], {}
    layouts = (("images-idx3", IMAGES_MAGIC, (ROWS, COLS)), ("labels-idx1", LABELS_MAGIC, ()))
    for kind, magic, shape in layouts:
        stem = f"{prefix}-{kind}-ubyte"
        path = find_file(data_dir, stem) or download(data_dir, stem, mirrors)
        raw = _read_bytes(path)
        arrays.append(parse_idx(raw, magic=magic, count=count, shape=shape, name=str(path)))
        digests[stem] = hashlib.sha256(raw).hexdigest()
    images, labels = arrays
    if labels.max() > 9:
        raise MnistDataError(f"{prefix} labels: value {int(labels.max())} is not a digit 0-9")
    return Split(images, labels.astype(np.int64)), digests


def load_test(data_dir: str | Path | None = None, mirrors: tuple[str, ...] = MIRRORS) -> Split:
    """The 10k test images and labels alone: for evaluating models and feeding the service's tests."""
    return _load_pair(resolve_data_dir(data_dir), "t10k", TEST_COUNT, mirrors)[0]


def load_mnist(data_dir: str | Path | None = None, mirrors: tuple[str, ...] = MIRRORS) -> Mnist:
    """All of MNIST, with a fixed 5k validation split carved out of the 60k training images."""
    folder = resolve_data_dir(data_dir)
    train, train_sha = _load_pair(folder, "train", TRAIN_COUNT, mirrors)
    test, test_sha = _load_pair(folder, "t10k", TEST_COUNT, mirrors)
    order = np.random.default_rng(SPLIT_SEED).permutation(TRAIN_COUNT)
    held, kept = order[:VALIDATION_SIZE], np.sort(order[VALIDATION_SIZE:])
    return Mnist(
        train=Split(train.images[kept], train.labels[kept]),
        validation=Split(train.images[held], train.labels[held]),
        test=test,
        sha256={**train_sha, **test_sha},
    )
