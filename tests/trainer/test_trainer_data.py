"""trainer.data against the real MNIST files, hand-made bad idx files, and a real local HTTP mirror."""

from __future__ import annotations

import gzip
import shutil
import struct
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from trainer.data import DATA_DIR_ENV, FILES, IMAGES_MAGIC, MnistDataError, download, load_mnist

# The published per-digit counts of the 60k training and 10k test sets.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
UNREACHABLE = ("http://127.0.0.1:9/",)  # discard port: connection refused, no real network


def idx_images(
    count: int,
    *,
    header_count: int | None = None,
    magic: int = IMAGES_MAGIC,
    shape: tuple[int, int] = (28, 28),
) -> bytes:
    header = struct.pack(">IIII", magic, count if header_count is None else header_count, *shape)
    return header + bytes(count * shape[0] * shape[1])


def test_real_files_load_with_right_shapes_and_counts(mnist_dir: Path) -> None:
    data = load_mnist(mnist_dir)
    assert data.train.images.shape == (55_000, 28, 28) and data.train.images.dtype == np.uint8
    assert data.validation.images.shape == (5_000, 28, 28)
    assert data.test.images.shape == (10_000, 28, 28)
    all_train = np.concatenate([data.train.labels, data.validation.labels])
    assert np.bincount(all_train, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(data.test.labels, minlength=10).tolist() == TEST_COUNTS
    assert set(data.sha256.items()) == set(FILES.items())
    # The validation split is fixed: loading again gives the very same images.
    assert np.array_equal(load_mnist(mnist_dir).validation.labels, data.validation.labels)


def test_data_dir_comes_from_the_environment(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(mnist_dir))
    assert load_mnist().test.images.shape == (10_000, 28, 28)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (idx_images(3, magic=0x00000801), "bad magic number 0x00000801, expected 0x00000803"),
        (idx_images(3), "header says 3 items, expected 60000"),
        (idx_images(60_000, shape=(32, 32)), "item shape (32, 32), expected (28, 28)"),
        (idx_images(60_000)[:-100], "truncated: 47039916 bytes, expected 47040016"),
        (idx_images(60_000) + b"x", "has trailing bytes"),
        (b"\x00\x00\x08", "truncated header"),
    ],
    ids=["magic", "count", "shape", "truncated", "trailing", "header"],
)
def test_bad_idx_file_gives_a_clear_error(tmp_path: Path, payload: bytes, message: str) -> None:
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(payload, compresslevel=1))
    with pytest.raises(MnistDataError, match=r"train-images-idx3-ubyte\.gz") as error:
        load_mnist(tmp_path, mirrors=UNREACHABLE)
    assert message in str(error.value)


@pytest.mark.parametrize("damage", ["truncate", "scramble"])
def test_damaged_gzip_stream_gives_a_clear_error(tmp_path: Path, mnist_dir: Path, damage: str) -> None:
    whole = bytearray((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (tmp_path / f"{stem}.gz").symlink_to(mnist_dir / f"{stem}.gz")
    if damage == "truncate":
        whole = whole[: len(whole) // 2]
    else:
        whole[100:200] = bytes(range(100))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(whole))
    with pytest.raises(MnistDataError, match=r"t10k-labels-idx1-ubyte\.gz: cannot read"):
        load_mnist(tmp_path, mirrors=UNREACHABLE)


def test_raw_uncompressed_files_load(tmp_path: Path, mnist_dir: Path) -> None:
    for stem in FILES:
        with gzip.open(mnist_dir / f"{stem}.gz") as source, (tmp_path / stem).open("wb") as target:
            shutil.copyfileobj(source, target)
    assert load_mnist(tmp_path, mirrors=UNREACHABLE).sha256 == FILES


def test_missing_files_offline_name_the_variable(tmp_path: Path) -> None:
    with pytest.raises(MnistDataError) as error:
        load_mnist(tmp_path / "empty", mirrors=UNREACHABLE)
    message = str(error.value)
    assert "could not be downloaded" in message and "127.0.0.1:9" in message and DATA_DIR_ENV in message


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP mirror on 127.0.0.1 serving whatever the test puts in its folder."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mnist/", root
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_download_verifies_sha256(mirror: tuple[str, Path], mnist_dir: Path, tmp_path: Path) -> None:
    url, root = mirror
    (root / "mnist").mkdir()
    stem = "t10k-labels-idx1-ubyte"
    shutil.copy(mnist_dir / f"{stem}.gz", root / "mnist" / f"{stem}.gz")
    target = download(tmp_path / "data", stem, mirrors=(url,))
    assert target.read_bytes() == (mnist_dir / f"{stem}.gz").read_bytes()

    (root / "mnist" / f"{stem}.gz").write_bytes(gzip.compress(b"not mnist"))
    with pytest.raises(MnistDataError, match="does not match the expected"):
        download(tmp_path / "other", stem, mirrors=(UNREACHABLE[0], url))
    assert not (tmp_path / "other" / f"{stem}.gz").exists()
