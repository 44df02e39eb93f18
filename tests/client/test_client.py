"""The Python client (mnist_client) and its mnist-predict CLI against real 2-worker servers."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_client import AsyncClient, Client, MnistError, ModelRef, Prediction
from mnist_client.cli import Outcome, table
from tests.support.liveserver import LiveServer, free_port, metric_sum
from trainer.synth.paper import encode

API_KEY = "client-test-key"
BATCH_LIMIT = 16  # MNIST_MAX_BATCH_ITEMS of the configured server
CLI = Path(sys.executable).with_name("mnist-predict")  # the console script `pip install -e client/` made


def drawn(shape: str) -> np.ndarray:
    """A digit-like 28x28 uint8 image, MNIST convention (white ink on black)."""
    image = Image.new("L", (28, 28), 0)
    draw = ImageDraw.Draw(image)
    if shape == "1":
        draw.line([(15, 4), (13, 24)], fill=255, width=3)
    elif shape == "0":
        draw.ellipse([7, 4, 21, 24], outline=255, width=3)
    else:  # a 7
        draw.line([(6, 5), (22, 5), (12, 24)], fill=255, width=3)
    return np.asarray(image)


DIGITS = [drawn(shape) for shape in ("1", "0", "7")]


@pytest.fixture(scope="module")
def configured_server(server_factory: Callable[..., object]) -> Iterator[LiveServer]:
    """A server as an operator might set it up: an API key and a small batch limit."""
    env = {"MNIST_API_KEY": API_KEY, "MNIST_MAX_BATCH_ITEMS": str(BATCH_LIMIT), "MNIST_MAX_QUEUE": "64"}
    with server_factory(workers=2, env=env) as server:
        yield server


def server_json(url: str, **request: object) -> dict:
    """POST /predict with plain httpx: what the service itself answers."""
    response = httpx.post(f"{url}/predict", timeout=10, **request)
    assert response.status_code == 200, response.text
    return response.json()


def metrics(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=10).text


def test_predict_from_path_bytes_pil_and_array(live_server: LiveServer, tmp_path: Path) -> None:
    """Every input form gives exactly the prediction /predict gives for the same image."""
    url = live_server.url
    with Client(url) as client:
        for index, pixels in enumerate(DIGITS):
            expected = Prediction.from_json(server_json(url, json={"pixels": pixels.tolist()}))
            assert client.predict(pixels) == expected
            assert client.predict(pixels.reshape(784)) == expected
            assert client.predict(pixels.tolist()) == expected

            # MNIST convention inverted: dark ink on white paper, as a scan or photo is.
            png = encode(Image.fromarray(255 - pixels), "PNG")
            path = tmp_path / f"digit-{index}.png"
            path.write_bytes(png)
            as_file = Prediction.from_json(server_json(url, files={"file": ("d.png", png)}))
            assert client.predict(path) == as_file
            assert client.predict(str(path)) == as_file
            assert client.predict(png) == as_file
            assert client.predict(Image.open(path)) == as_file
            assert client.predict(Image.open(path).convert("CMYK")) == as_file  # a mode PNG cannot hold
            assert as_file.digit in range(10) and len(as_file.probabilities) == 10
            assert sum(as_file.probabilities) == pytest.approx(1.0, abs=1e-4)

        info = client.model()
        served = httpx.get(f"{url}/v1/models/lenet5", timeout=10).json()
        assert (info.name, info.version, info.sha256, info.raw) == (
            served["name"],
            served["version"],
            served["sha256"],
            served,
        )
        assert expected.model == ModelRef(info.name, info.version)
        assert client.ready()


def test_async_client_gives_the_same_results(live_server: LiveServer) -> None:
    with Client(live_server.url) as client:
        expected = [client.predict(pixels) for pixels in DIGITS]
        expected_batch = client.predict_batch(np.stack(DIGITS))

    async def run() -> tuple[list[Prediction], list[Prediction], bool, str]:
        async with AsyncClient(live_server.url) as client:
            singles = await asyncio.gather(*(client.predict(pixels) for pixels in DIGITS))
            batch = await client.predict_batch(np.stack(DIGITS))
            return list(singles), batch, await client.ready(), (await client.model()).name

    singles, batch, ready, name = asyncio.run(run())
    assert singles == expected == expected_batch == batch
    assert ready and name == "lenet5"


def test_batch_beyond_the_server_limit_is_chunked_in_order(configured_server: LiveServer) -> None:
    url = configured_server.url
    images = np.random.default_rng(3).integers(1, 256, (40, 28, 28), dtype=np.uint8)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    expected = [
        Prediction.from_json(server_json(url, json={"pixels": image.tolist()}, headers=headers))
        for image in images
    ]
    assert len({p.probabilities for p in expected}) == 40  # distinct answers, so order is checked
    batch_route = {"route": "/predict/batch", "status": "200"}
    before = metric_sum(metrics(url), "mnist_request_duration_seconds_count", **batch_route)
    with Client(url, API_KEY) as client:
        with pytest.raises(MnistError) as refused:  # the server's limit is real: one request of 40 fails
            client.predict_batch(images, chunk_size=40)
        assert refused.value.status == 413 and str(BATCH_LIMIT) in refused.value.message
        assert client.predict_batch(images, chunk_size=BATCH_LIMIT) == expected
        assert client.predict_batch(images.reshape(40, 784), chunk_size=BATCH_LIMIT) == expected
        assert client.predict_batch(np.zeros((0, 784), np.uint8)) == []
    sent = metric_sum(metrics(url), "mnist_request_duration_seconds_count", **batch_route) - before
    assert sent == 2 * 3, "40 images in chunks of 16: 3 requests, twice"


def test_invalid_pixels_raise_before_anything_is_sent() -> None:
    client = Client(f"http://127.0.0.1:{free_port()}")  # nothing listens: a request would fail differently
    cases = [
        (np.zeros((28, 28), np.float32), "integers"),
        (np.zeros((27, 28), np.uint8), re.escape("shape (27, 28)")),
        (np.full((28, 28), 300, np.int64), "0..255"),
        (np.full((28, 28), -1, np.int64), "0..255"),
        (np.zeros((28, 28), bool), "integers"),
    ]
    for pixels, message in cases:
        with pytest.raises(ValueError, match=message):
            client.predict(pixels)
    with pytest.raises(ValueError, match="N x 28 x 28 or N x 784"):
        client.predict_batch(np.zeros((2, 783), np.uint8))
    with pytest.raises(ValueError, match="chunk_size"):
        client.predict_batch(np.zeros((2, 784), np.uint8), chunk_size=0)


def test_refusals_raise_with_the_server_message_and_are_not_retried(live_server: LiveServer) -> None:
    url = live_server.url
    blank = np.zeros((28, 28), np.uint8)
    served = httpx.post(f"{url}/predict", json={"pixels": blank.tolist()}, timeout=10)
    assert served.status_code == 422
    before = metric_sum(metrics(url), "mnist_errors_total", reason="no_digit")
    with Client(url, retries=5) as client:
        with pytest.raises(MnistError) as blank_error:
            client.predict(blank)
        with pytest.raises(MnistError) as unknown_format:
            client.predict(b"this is not an image")
        with pytest.raises(MnistError) as unknown_model:
            client.model("lenet6")
    error = blank_error.value
    assert (error.status, error.reason, error.message) == (
        422,
        "Unprocessable Entity",
        served.json()["error"],
    )
    assert str(error) == f"422 Unprocessable Entity: {served.json()['error']}"
    assert metric_sum(metrics(url), "mnist_errors_total", reason="no_digit") - before == 1  # sent once
    assert unknown_format.value.status == 415 and "PNG" in unknown_format.value.message
    assert unknown_model.value.status == 404 and "lenet6" in unknown_model.value.message


def test_api_key(configured_server: LiveServer) -> None:
    url = configured_server.url
    for key in (None, "wrong-key"):
        with Client(url, key) as client:
            with pytest.raises(MnistError) as refused:
                client.predict(DIGITS[0])
            assert client.ready() is True  # probes need no key
        assert refused.value.status == 401 and "API key" in refused.value.message
    with Client(url, API_KEY) as client:
        assert client.predict(DIGITS[0]).digit in range(10)


def test_busy_server_503_is_retried_until_served(
    server_factory: Callable[..., object], model_path: Path
) -> None:
    """A queue of 2 images per worker and batches that wait 300 ms: a burst of 16 gets 503 + Retry-After."""
    env = {
        "MNIST_MODEL_PATH": str(model_path),
        "MNIST_MAX_QUEUE": "2",
        "MNIST_QUEUE_WAIT_S": "0",  # refuse at once instead of waiting for room
        "MNIST_MAX_BATCH_ITEMS": "2",
        "MNIST_MAX_BATCH_SIZE": "4",
        "MNIST_MAX_BATCH_WAIT_MS": "300",
    }
    images = np.random.default_rng(4).integers(1, 256, (16, 28, 28), dtype=np.uint8)

    async def burst(url: str, retries: int) -> list[Prediction | MnistError]:
        async with AsyncClient(url, retries=retries, max_retry_s=60) as client:
            calls = (client.predict(image) for image in images)
            return await asyncio.gather(*calls, return_exceptions=True)

    with server_factory(workers=2, env=env) as server:
        expected = [
            Prediction.from_json(server_json(server.url, json={"pixels": i.tolist()})) for i in images
        ]
        without_retries = asyncio.run(burst(server.url, retries=0))
        refused = [outcome for outcome in without_retries if isinstance(outcome, MnistError)]
        assert refused, "the burst must overload this server"
        assert all(e.status == 503 and e.retry_after == 1.0 and "busy" in e.message for e in refused)

        busy_before = metric_sum(metrics(server.url), "mnist_errors_total", reason="queue_full")
        with_retries = asyncio.run(burst(server.url, retries=10))
        busy = metric_sum(metrics(server.url), "mnist_errors_total", reason="queue_full") - busy_before
    assert with_retries == expected  # every request served in the end, each with its own answer
    assert busy >= 1, "the server refused some of them first: the client retried those"


def test_connection_failures_are_retried_within_bounds() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    for retries, max_retry_s, shortest, longest in (
        (0, 30, 0.0, 1.0),
        (2, 30, 0.75, 10.0),
        (50, 1, 0.0, 3.0),
    ):
        started = time.monotonic()
        with Client(url, retries=retries, max_retry_s=max_retry_s) as client:
            with pytest.raises(MnistError) as failed:
                client.predict(DIGITS[0])
            assert client.ready() is False
        elapsed = time.monotonic() - started
        assert failed.value.status is None and failed.value.reason == "connect error"
        assert url in failed.value.message
        # Backoff 0.25 s doubling: two retries wait at least 0.25 + 0.5 s; max_retry_s caps the total.
        assert shortest <= elapsed < longest, (retries, elapsed)


class BreakingServer:
    """A real TCP server on 127.0.0.1 that reads each request whole, then breaks the first `broken`
    connections: "reset" closes with a TCP RST (a worker killed with the request in flight), "half answer"
    sends the head and a part of the body and closes. Later ones get `answers[path]` (Connection: close)."""

    def __init__(self, answers: dict[str, bytes], broken: int, how: str) -> None:
        self.answers, self.broken, self.how = answers, broken, how
        self.requests = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed: the test is over
                return
            with connection:
                path = self._read_request(connection)
                self.requests += 1
                body = self.answers[path]
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                head += b"Content-Length: %d\r\n\r\n" % len(body)
                if self.requests > self.broken:
                    connection.sendall(head + body)
                elif self.how == "half answer":
                    connection.sendall(head + body[: len(body) // 2])
                else:  # linger 0: close() sends RST instead of FIN
                    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    @staticmethod
    def _read_request(connection: socket.socket) -> str:
        data = b""
        while b"\r\n\r\n" not in data:
            data += connection.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += connection.recv(65536)
        return head.split(b" ")[1].decode()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("how", ["reset", "half answer"])
def test_a_predict_whose_connection_broke_is_retried(live_server: LiveServer, how: str) -> None:
    """Single and batch predictions, blocking and asyncio: two broken connections, then the answer; the
    retries wait the usual backoff (0.25 s, then 0.5 s, each plus jitter)."""
    batch = np.stack(DIGITS)
    with Client(live_server.url) as client:
        expected, expected_batch = client.predict(DIGITS[0]), client.predict_batch(batch)
    answers = {
        "/predict": httpx.post(f"{live_server.url}/predict", json={"pixels": DIGITS[0].tolist()}).content,
        "/predict/batch": httpx.post(
            f"{live_server.url}/predict/batch",
            content=batch.tobytes(),
            headers={"Content-Type": "application/octet-stream"},
        ).content,
    }

    async def asynchronous(url: str) -> tuple[Prediction, list[Prediction]]:
        async with AsyncClient(url, retries=2) as client:
            return await client.predict(DIGITS[0]), await client.predict_batch(batch)

    for call in ("predict", "predict_batch", "async"):
        server = BreakingServer(answers, broken=2, how=how)
        started = time.monotonic()
        try:
            if call == "async":
                assert asyncio.run(asynchronous(server.url)) == (expected, expected_batch)
            else:
                with Client(server.url, retries=2) as client:
                    result = client.predict(DIGITS[0]) if call == "predict" else client.predict_batch(batch)
                assert result == (expected if call == "predict" else expected_batch)
        finally:
            server.close()
        assert server.requests == (4 if call == "async" else 3), call  # the async pair: 2 broken, then 2
        assert 0.75 <= time.monotonic() - started < 10, call


def test_broken_connections_are_retried_within_bounds() -> None:
    """A connection that breaks every time: `retries` retries, then MnistError without a status."""
    answers = {"/predict": b"{}"}
    for how in ("reset", "half answer"):
        server = BreakingServer(answers, broken=1000, how=how)
        try:
            with Client(server.url, retries=2) as client, pytest.raises(MnistError) as failed:
                client.predict(DIGITS[0])
        finally:
            server.close()
        assert server.requests == 3, how
        assert failed.value.status is None and failed.value.reason == "transport error", failed.value


# --- the CLI --------------------------------------------------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None, stdin: bytes = b"") -> subprocess.CompletedProcess:
    assert CLI.exists(), "pip install -e client/ installs the mnist-predict console script"
    return subprocess.run(
        [str(CLI), *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder as a user has one: images (one in a subfolder, one JPEG), a hidden file and a text file."""
    folder = tmp_path / "scans"
    (folder / "more").mkdir(parents=True)
    (folder / "a.png").write_bytes(encode(Image.fromarray(255 - DIGITS[0]), "PNG"))
    (folder / "more" / "b.JPG").write_bytes(
        encode(Image.fromarray(255 - DIGITS[2]).resize((280, 280)), "JPEG")
    )
    (folder / ".hidden.png").write_bytes(encode(Image.fromarray(DIGITS[1]), "PNG"))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_cli_table_for_a_folder(live_server: LiveServer, photos: Path) -> None:
    result = cli(str(photos), "--url", live_server.url, "--concurrency", "2")
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""  # no progress bar: stderr is not a terminal
    lines = result.stdout.decode().splitlines()
    assert lines[0].split() == ["FILE", "DIGIT", "CONFIDENCE", "NOTE"]
    with Client(live_server.url) as client:
        for line, name in zip(lines[1:], ["a.png", "more/b.JPG"], strict=True):
            expected = client.predict(photos / name)
            assert line.split() == [
                str(photos / name),
                str(expected.digit),
                f"{100 * expected.confidence:.1f}",
                "%",
            ]


def test_cli_json_errors_stdin_and_exit_status(live_server: LiveServer, photos: Path, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    blank.write_bytes(encode(Image.new("L", (28, 28), 255), "PNG"))
    typeless = tmp_path / "digit-without-extension"
    typeless.write_bytes((photos / "a.png").read_bytes())
    missing = tmp_path / "missing.png"
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    args = [str(photos / "a.png"), str(blank), "-", str(missing), str(empty), str(typeless)]
    result = cli(*args, "--json", env={"MNIST_URL": live_server.url}, stdin=(photos / "a.png").read_bytes())
    assert result.returncode == 1, "some inputs failed"
    rows = json.loads(result.stdout)
    assert [row["file"] for row in rows] == args  # the order given
    with Client(live_server.url) as client:
        expected = client.predict(photos / "a.png")
    for row in (rows[0], rows[2], rows[5]):
        assert row["digit"] == expected.digit and row["confidence"] == expected.confidence
        assert row["probabilities"] == list(expected.probabilities)
        assert row["model"] == {"name": expected.model.name, "version": expected.model.version}
        assert "error" not in row
    assert rows[1]["digit"] is None and rows[1]["status"] == 422 and "no digit found" in rows[1]["error"]
    assert rows[3]["digit"] is None and "No such file" in rows[3]["error"]
    assert rows[4]["digit"] is None and "no image files" in rows[4]["error"]

    ok = cli(str(photos / "a.png"), "--json", env={"MNIST_URL": live_server.url})
    assert ok.returncode == 0 and json.loads(ok.stdout)[0]["digit"] == expected.digit


def test_cli_api_key_and_unreachable_server(configured_server: LiveServer, photos: Path) -> None:
    image = str(photos / "a.png")
    refused = cli(image, "--url", configured_server.url)
    assert refused.returncode == 1 and "401 Unauthorized" in refused.stdout.decode()
    assert cli(image, "--url", configured_server.url, "--api-key", API_KEY).returncode == 0
    assert cli(image, env={"MNIST_URL": configured_server.url, "MNIST_API_KEY": API_KEY}).returncode == 0
    down = cli(image, "--url", f"http://127.0.0.1:{free_port()}", "--retries", "0", "--json")
    assert down.returncode == 1 and "connect error" in json.loads(down.stdout)[0]["error"]
    usage = cli(image, "--concurrency", "0")
    assert usage.returncode == 2 and b"--concurrency" in usage.stderr


def test_cli_progress_bar_only_on_a_terminal(live_server: LiveServer, photos: Path) -> None:
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [str(CLI), str(photos), "--url", live_server.url],
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=60,
        )
        os.close(terminal)
        terminal = -1
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal's other end is closed: everything is read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert result.returncode == 0
    assert b"] 2/2" in shown and b"#" * 30 in shown  # the bar, full at the end
    assert b"]" not in result.stdout.split(b"\n", 1)[1]  # the table stays clean


def test_not_a_digit_is_shown_when_the_server_says_so(live_server: LiveServer) -> None:
    """`is_digit` / `digit_score` are parsed when a prediction carries them and shown by the CLI."""
    body = server_json(live_server.url, json={"pixels": DIGITS[0].tolist()})
    plain = Prediction.from_json(body)
    flagged = Prediction.from_json({**body, "is_digit": False, "digit_score": 0.125})
    if "is_digit" not in body:  # a server from before is_digit
        assert (plain.is_digit, plain.digit_score) == (None, None)
    assert (flagged.is_digit, flagged.digit_score) == (False, 0.125)
    rows = table([Outcome("a.png", prediction=plain), Outcome("b.png", prediction=flagged)]).splitlines()
    assert rows[1].endswith("not a digit") == (plain.is_digit is False)
    assert rows[2].endswith("not a digit")
    assert Outcome("b.png", prediction=flagged).as_json()["is_digit"] is False
