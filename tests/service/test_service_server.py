"""Real `python -m service` processes on 127.0.0.1: batching, the queue bound and its refusal before reading
a body, metrics across workers, no connection taken before the model is warm, JSON logs with request IDs,
and refusing to start when CUDA is demanded but not active."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from service import gpu
from service.settings import cores
from tests.support.liveserver import ROOT, metric_sum, start_server, stop
from tests.support.model import NAME, VERSION
from tests.support.queueing import Held, answer_while_held
from trainer.synth.paper import encode

PIXELS = np.random.default_rng(1).integers(0, 256, (64, 28, 28)).tolist()


@pytest.fixture(scope="module")
def model_env(model_path: Path) -> dict[str, str]:
    return {"MNIST_MODEL_PATH": str(model_path), "MNIST_PROVIDERS": "cpu"}


async def burst(url: str, n: int, path: str = "/predict") -> list[httpx.Response]:
    """n concurrent single-image JSON requests over n connections."""
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        return await asyncio.gather(*(client.post(path, json={"pixels": PIXELS[i % 64]}) for i in range(n)))


def test_two_workers_batch_concurrent_requests_and_share_metrics(
    server_factory, model_env, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "counter_99999.db").write_bytes(b"left over from an earlier run")
    env = {**model_env, "MNIST_MAX_BATCH_WAIT_MS": "20", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with server_factory(workers=2, env=env) as server:
        responses = asyncio.run(burst(server.url, 64))
        assert [r.status_code for r in responses] == [200] * 64
        singles = [httpx.post(f"{server.url}/predict", json={"pixels": p}).json() for p in PIXELS[:8]]
        assert [r.json() for r in responses[:8]] == singles  # batched or alone: identical answers
        scrapes = []
        for _ in range(4):  # fresh connections: whichever worker answers reports the sum over both
            with httpx.Client(base_url=server.url) as client:
                scrapes.append(client.get("/metrics").text)
        workers = {path.stem.rsplit("_", 1)[1] for path in metrics_dir.glob("histogram_*.db")}
        assert not (metrics_dir / "counter_99999.db").exists(), "stale metrics are wiped at startup"
    assert len(workers) == 2, "both workers served requests"
    for text in scrapes:
        assert metric_sum(text, "mnist_request_duration_seconds_count", route="/predict", status="200") == 72
        assert metric_sum(text, "mnist_predictions_total") == 72
        assert metric_sum(text, "mnist_requests_in_flight") == 1  # the scrape itself
    text = scrapes[-1]
    images = metric_sum(text, "mnist_batch_size_sum")
    batches = metric_sum(text, "mnist_batch_size_count")
    assert images == 72
    assert batches < 64, "concurrent requests were merged into batches of more than one image"
    assert metric_sum(text, "mnist_batch_size_bucket", le="1.0") < batches
    assert metric_sum(text, "mnist_model_info", provider="CPUExecutionProvider") == 1


def test_queue_bound_gives_503_with_retry_after(server_factory, model_env) -> None:
    env = {
        **model_env,
        "MNIST_MAX_QUEUE": "2",
        "MNIST_QUEUE_WAIT_S": "0",  # refuse at once instead of waiting for room
        "MNIST_MAX_BATCH_ITEMS": "2",
        "MNIST_MAX_BATCH_SIZE": "4",
        "MNIST_MAX_BATCH_WAIT_MS": "300",  # a batch waits to fill while the burst arrives
    }
    with server_factory(workers=1, env=env) as server:
        responses = asyncio.run(burst(server.url, 24))
        text = httpx.get(f"{server.url}/metrics").text
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 503}, statuses
    busy = [r for r in responses if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" and "busy" in r.json()["error"] for r in busy)
    assert metric_sum(text, "mnist_errors_total", reason="queue_full", status="503") == len(busy)


def photo_png() -> bytes:
    """A 6000x6000 PNG (a 36-Mpx photo of a "1"): slow to decode and normalize, so requests queue."""
    pixels = np.full((6000, 6000), 230, np.uint8)
    pixels[1500:4500, 2800:3200] = 20
    return encode(Image.fromarray(pixels), "PNG", compress_level=1)


Responses = list[httpx.Response]


async def photos_and_json(url: str, photo: bytes, n: int) -> tuple[Responses, Responses]:
    """n concurrent large-image requests, and single JSON requests sent while they are being handled."""
    limits = httpx.Limits(max_connections=n + 1)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        headers = {"Content-Type": "image/png"}
        photos = [client.post("/predict", content=photo, headers=headers) for _ in range(n)]
        flood = asyncio.gather(*photos)
        await asyncio.sleep(0.05)
        pixels = [await client.post("/predict", json={"pixels": PIXELS[i]}) for i in range(5)]
        return list(await flood), pixels


def test_image_decode_queue_is_bounded(server_factory, model_env) -> None:
    """A flood of large photos: two decode (MNIST_IMAGE_THREADS), one waits, the rest get 503 at once; JSON
    clients are served."""
    env = {**model_env, "MNIST_MAX_IMAGE_QUEUE": "1"}
    with server_factory(workers=1, env=env) as server:
        photos, pixels = asyncio.run(photos_and_json(server.url, photo_png(), 6))
        text = httpx.get(f"{server.url}/metrics").text
    assert [r.status_code for r in pixels] == [200] * 5
    statuses = [r.status_code for r in photos]
    assert set(statuses) == {200, 503}, statuses
    busy = [r for r in photos if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" and "waiting to be decoded" in r.json()["error"] for r in busy)
    assert metric_sum(text, "mnist_errors_total", reason="decode_queue_full", status="503") == len(busy)


def test_no_connection_is_taken_before_the_model_is_warm(model_env, tmp_path: Path) -> None:
    """1024 batch shapes take seconds to warm up: all that time after the worker has loaded the model, its
    port refuses connections (/healthz too), and the first connection it takes finds it ready."""
    env = {**model_env, "MNIST_MAX_BATCH_SIZE": "1024", "MNIST_INTRA_OP_THREADS": "1"}
    server = start_server(tmp_path / "server.log", env=env)
    process, url, log = server.process, server.url, tmp_path / "server.log"
    refused_while_warming = 0
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "server never took a connection"
            loaded = log.read_text().count(f"loaded {NAME}") >= 2  # the CLI's check, then the worker's
            try:
                first = httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.ConnectError:
                refused_while_warming += loaded
                time.sleep(0.05)
        assert first.status_code == 200
        assert refused_while_warming >= 5, "the warm-up was not observed"
        assert "warmed up batch sizes 1..1024" in log.read_text()
        assert httpx.get(f"{url}/readyz").status_code == 200
        assert httpx.post(f"{url}/predict", json={"pixels": PIXELS[0]}).status_code == 200
    finally:
        stop(process)


def test_cli_owns_and_removes_its_metrics_dir(server_factory, model_env) -> None:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        pytest.skip("PROMETHEUS_MULTIPROC_DIR is set for the whole test run")
    with server_factory(workers=1, env=model_env) as server:
        assert httpx.post(f"{server.url}/predict", json={"pixels": PIXELS[0]}).status_code == 200
        line = next(line for line in server.log.read_text().splitlines() if "metrics in" in line)
        assert f"1 worker(s) x {cores()} onnxruntime thread(s)" in line
        metrics_dir = Path(line.rsplit("metrics in ", 1)[1])
        assert list(metrics_dir.glob("*.db"))
    assert not metrics_dir.exists()


def test_demanding_cuda_without_a_gpu_stops_startup(model_env, tmp_path: Path) -> None:
    import onnxruntime as ort

    from service.runtime import ModelLoadError, ModelRuntime

    try:
        ModelRuntime(Path(model_env["MNIST_MODEL_PATH"]), "cuda")
    except ModelLoadError:  # expected here: CPU-only machine
        pass
    else:
        pytest.skip("CUDA really works on this machine")
    assert "CUDAExecutionProvider" in ort.get_available_providers()
    process = start_server(tmp_path / "server.log", env={**model_env, "MNIST_PROVIDERS": "cuda"}).process
    try:
        code = process.wait(timeout=60)
    finally:
        stop(process)
    output = (tmp_path / "server.log").read_text()
    assert code != 0
    assert "MNIST_PROVIDERS=cuda but the CUDA execution provider is not active" in output
    assert "Traceback" not in output
    assert ":onnxruntime:" in output  # onnxruntime's own loader errors are let through: loud and exact
    assert gpu.problem() is None or f": {gpu.problem()};" in output  # and the driver's reason


# --- cheap refusals ------------------------------------------------------------------------------------


async def unread_head(url: str, head: bytes) -> bytes:
    """Send a request's `head` and never its body; the response head (empty if none came within 3 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=3)
    except asyncio.TimeoutError:
        return b""
    finally:
        writer.close()


# Heads of requests whose headers promise 64 images: raw uint8, and V2 binary FP32 tensors after a
# 100-byte JSON header.
UNSENT = {
    "octet-stream": b"POST /predict/batch HTTP/1.1\r\nHost: test\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % (64 * 784),
    "V2 binary": b"POST /v2/models/%s/infer HTTP/1.1\r\nHost: test\r\n"
    b"Inference-Header-Content-Length: 100\r\nContent-Length: %d\r\n\r\n"
    % (NAME.encode(), 100 + 64 * 784 * 4),
}


@pytest.mark.parametrize("kind", list(UNSENT))
def test_full_queue_refuses_before_reading_the_body(server_factory, model_env, kind: str) -> None:
    """The headers say 64 images and one is queued (limit 64): 503 + Retry-After at once, while the body
    has not even been sent; with room in the queue a batch of 64 is served."""
    env = {
        **model_env,
        "MNIST_MAX_QUEUE": "64",
        "MNIST_QUEUE_WAIT_S": "0",  # refuse at once instead of waiting for room
        "MNIST_MAX_BATCH_ITEMS": "64",
        "MNIST_MAX_BATCH_SIZE": "128",  # never full: a queued batch waits the whole MNIST_MAX_BATCH_WAIT_MS
        "MNIST_MAX_BATCH_WAIT_MS": "1000",
    }
    one = json.dumps({"pixels": PIXELS[0]}).encode()
    held = Held("/predict", one, {"Content-Type": "application/json"}, items=1)
    with server_factory(workers=1, env=env) as server:
        # refused while the queue was held (the hold lasts 1 s: a machine too busy for it tries again)
        head = answer_while_held(server.url, held, lambda client: unread_head(server.url, UNSENT[kind]))
        assert head.startswith(b"HTTP/1.1 503 "), head
        assert b"retry-after: 1" in head.lower()
        body = np.asarray(PIXELS, np.uint8).reshape(64, 784).tobytes()
        octet = {"Content-Type": "application/octet-stream"}
        assert httpx.post(f"{server.url}/predict/batch", content=body, headers=octet).status_code == 200
        text = httpx.get(f"{server.url}/metrics").text
    assert metric_sum(text, "mnist_errors_total", reason="queue_full", status="503") >= 1


# --- request IDs and JSON logs -------------------------------------------------------------------------


def test_json_logs_one_object_per_line_with_request_ids(server_factory, model_env) -> None:
    key = "api-key-that-must-not-be-logged"
    env = {**model_env, "MNIST_LOG_FORMAT": "json", "MNIST_API_KEY": key}
    auth = {"Authorization": f"Bearer {key}"}
    with server_factory(workers=2, env=env) as server:
        ok = httpx.post(
            f"{server.url}/predict", json={"pixels": PIXELS[0]}, headers={**auth, "X-Request-ID": "trace-42"}
        )
        unauthorized = httpx.post(f"{server.url}/predict", json={"pixels": PIXELS[1]})
        invalid = httpx.post(f"{server.url}/predict", json={"pixels": [[7] * 27]}, headers=auth)
        assert [ok.status_code, unauthorized.status_code, invalid.status_code] == [200, 401, 422]
    text = server.log.read_text()
    records = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert all({"time", "level", "logger", "pid", "message"} <= set(record) for record in records)
    events = {record.get("event") for record in records}
    assert {"startup", "model_loaded", "ready", "request"} <= events, events
    assert any(record["logger"].startswith("uvicorn") for record in records)  # uvicorn's own, as JSON
    requests = {record["request_id"]: record for record in records if record.get("event") == "request"}
    served = requests["trace-42"]
    assert ok.headers["x-request-id"] == "trace-42"
    assert served["method"] == "POST" and served["route"] == "/predict" and served["status"] == 200
    assert served["model_version"] == VERSION and served["duration_ms"] > 0 and served["reason"] is None
    assert served["pid"] != os.getpid()
    refused = requests[unauthorized.headers["x-request-id"]]
    assert (refused["status"], refused["reason"]) == (401, "unauthorized")
    assert unauthorized.json()["request_id"] == unauthorized.headers["x-request-id"]
    assert requests[invalid.json()["request_id"]]["reason"] == "invalid_pixels"
    assert key not in text and '"pixels"' not in text  # no keys, no bodies
    assert json.dumps(PIXELS[0][14])[:40] not in text and "[7, 7" not in text  # no pixels


def test_the_cli_starts_no_thread_before_it_blocks_sighup() -> None:
    """A thread that exists before main() blocks SIGHUP would take a reload signal's default action (end the
    server): numpy and onnxruntime start threads at import, so service.cli must not import them."""
    code = "import os, service.cli; print(len(os.listdir('/proc/self/task')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
