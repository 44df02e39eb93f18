"""The HTTP API in-process (real app, onnxruntime and lifespan): every input form, the error matrix."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from service.app import create_app
from service.settings import Settings
from tests.support.liveserver import metric_sum
from tests.support.model import DIGIT_THRESHOLD, NAME, TEST_ACCURACY, VERSION
from trainer.synth.paper import encode

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (5, 28, 28))


def started(app) -> TestClient:
    """A client whose app has finished its lifespan startup and warm-up (bounded wait)."""
    client = TestClient(app, raise_server_exceptions=False)
    client.__enter__()
    deadline = time.monotonic() + 30
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "app not ready in 30 s"
        time.sleep(0.01)
    return client


def make_app(model_path: Path, **overrides):
    options = {"max_batch_items": 8, "max_queue": 64, **overrides}
    return create_app(Settings(model_path=model_path, **options))


@pytest.fixture(scope="module")
def client(model_path: Path) -> Iterator[TestClient]:
    client = started(make_app(model_path, max_body_bytes=64 * 1024, max_image_pixels=4_000_000))
    yield client
    client.__exit__(None, None, None)


def digit_png(size: tuple[int, int] = (200, 260), fmt: str = "PNG") -> bytes:
    """Dark ink on light paper: a hand-drawn looking 7."""
    image = Image.new("RGB", size, (235, 232, 225))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.line(
        [(0.25 * w, 0.2 * h), (0.75 * w, 0.2 * h), (0.45 * w, 0.85 * h)], fill=(30, 30, 40), width=w // 12
    )
    return encode(image, fmt)


def check_prediction(body: dict) -> None:
    assert set(body) >= {"digit", "confidence", "probabilities", "is_digit", "digit_score", "model"}
    assert body["is_digit"] == (body["digit_score"] >= DIGIT_THRESHOLD)
    probabilities = np.array(body["probabilities"])
    assert probabilities.shape == (10,)
    assert abs(probabilities.sum() - 1) < 1e-4
    assert body["digit"] == int(probabilities.argmax())
    assert body["confidence"] == pytest.approx(probabilities.max(), abs=1e-6)
    assert body["model"] == {"name": NAME, "version": VERSION}


def error(response, status: int, *needles: str) -> str:
    """The response is a JSON error with this status whose message mentions every needle, and the
    request's ID in the body and the header."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "request_id"}, body
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in body["error"]
    for needle in needles:
        assert needle in body["error"], body["error"]
    return body["error"]


# --- every input form -------------------------------------------------------------------------------


def test_json_nested_and_flat_agree(client: TestClient) -> None:
    nested = client.post("/predict", json={"pixels": PIXELS[0].tolist()})
    flat = client.post("/predict", json={"pixels": PIXELS[0].ravel().tolist()})
    # 13.0 is an integer to JSON Schema (and what numpy float arrays' tolist() gives)
    floats = client.post("/predict", json={"pixels": PIXELS[0].astype(float).tolist()})
    assert nested.status_code == flat.status_code == floats.status_code == 200
    check_prediction(nested.json())
    assert nested.json() == flat.json() == floats.json()


def test_debug_returns_the_image_the_model_saw(client: TestClient) -> None:
    body = client.post("/predict?debug=true", json={"pixels": PIXELS[1].tolist()}).json()
    assert body["preprocessed"] == PIXELS[1].tolist()
    assert "preprocessed" not in client.post("/predict", json={"pixels": PIXELS[1].tolist()}).json()
    error(client.post("/predict?debug=maybe", json={"pixels": PIXELS[1].tolist()}), 422, "debug")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_image_as_multipart_file_and_raw_body_agree(client: TestClient, fmt: str) -> None:
    data = digit_png(fmt=fmt)
    media = f"image/{fmt.lower()}"
    multipart = client.post("/predict?debug=true", files={"file": (f"seven.{fmt.lower()}", data, media)})
    raw = client.post("/predict?debug=true", content=data, headers={"content-type": media})
    assert multipart.status_code == raw.status_code == 200, multipart.text
    check_prediction(multipart.json())
    assert multipart.json() == raw.json()
    seen = np.array(multipart.json()["preprocessed"])
    assert seen.shape == (28, 28) and seen.max() > 200 and seen[0].max() == 0  # white ink on black, centred


def test_batch_forms_match_single_requests_exactly(client: TestClient) -> None:
    singles = [client.post("/predict", json={"pixels": p.tolist()}).json() for p in PIXELS]
    as_json = client.post("/predict/batch", json={"instances": [p.tolist() for p in PIXELS]})
    mixed = client.post(
        "/predict/batch",
        json={"instances": [p.ravel().tolist() for p in PIXELS[:2]] + [p.tolist() for p in PIXELS[2:]]},
    )
    raw = client.post(
        "/predict/batch",
        content=PIXELS.astype(np.uint8).tobytes(),
        headers={"content-type": "application/octet-stream"},
    )
    for response in (as_json, mixed, raw):
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == singles


def test_batch_multipart_files_in_order(client: TestClient) -> None:
    files = [digit_png((200, 260)), digit_png((120, 90), "JPEG"), digit_png((64, 64))]
    singles = [client.post("/predict", files={"file": ("x", data)}).json() for data in files]
    response = client.post(
        "/predict/batch", files=[("files", (f"{i}", data)) for i, data in enumerate(files)]
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == singles


def test_batch_larger_than_max_batch_size_is_split_and_reassembled(model_path: Path) -> None:
    client = started(make_app(model_path, max_batch_size=2, max_batch_items=100, max_queue=200))
    try:
        pixels = RNG.integers(0, 256, (7, 784), dtype=np.uint8)
        large = RNG.integers(
            0, 256, (100, 784), dtype=np.uint8
        )  # ~300 kB of JSON: decoded off the event loop
        as_json = client.post("/predict/batch", json={"instances": large.tolist()})
        as_raw = client.post(
            "/predict/batch", content=large.tobytes(), headers={"content-type": "application/octet-stream"}
        )
        assert as_json.status_code == 200 and as_json.json() == as_raw.json()
        batch = client.post(
            "/predict/batch", content=pixels.tobytes(), headers={"content-type": "application/octet-stream"}
        ).json()["predictions"]
        assert batch == [client.post("/predict", json={"pixels": p.tolist()}).json() for p in pixels]
    finally:
        client.__exit__(None, None, None)


# --- metadata, health, metrics ------------------------------------------------------------------------


def test_model_metadata_comes_from_the_model(client: TestClient, model_path: Path) -> None:
    import hashlib

    body = client.get(f"/v1/models/{NAME}").json()
    assert body["name"] == NAME and body["version"] == VERSION
    assert body["sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert body["test_accuracy"] == TEST_ACCURACY
    assert body["providers"][-1] == "CPUExecutionProvider"
    assert body["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert body["outputs"] == [
        {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "digit_score", "datatype": "FP32", "shape": [-1]},
    ]
    assert body["digit_threshold"] == DIGIT_THRESHOLD  # from the model's metadata
    error(client.get("/v1/models/resnet"), 404, "resnet")


def test_health_docs_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/predict/batch", "/healthz", "/readyz", "/metrics"} <= set(paths)
    assert "multipart/form-data" in paths["/predict"]["post"]["requestBody"]["content"]
    predict = paths["/predict"]["post"]["responses"]
    assert set(predict) == {"200", "401", "413", "415", "422", "503", "504"}
    assert predict["503"]["headers"]["Retry-After"]["required"]
    assert all(response["headers"]["X-Request-ID"]["required"] for response in predict.values())
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    client.post("/predict", json={"pixels": "nope"})
    client.post("/predict", json={"pixels": PIXELS[0].tolist()})  # the metrics below, also when run alone
    text = client.get("/metrics").text
    for name in (
        "mnist_request_duration_seconds_bucket",
        "mnist_inference_duration_seconds_bucket",
        "mnist_queue_wait_seconds_bucket",
        "mnist_batch_size_bucket",
        "mnist_requests_in_flight",
        "mnist_queue_depth",
        "mnist_predictions_total",
        "mnist_prediction_confidence_bucket",
    ):
        assert name in text, name
    labels = 'method="POST",protocol="http",route="/predict",status="200"'
    assert f"mnist_request_duration_seconds_count{{{labels}}}" in text
    assert 'mnist_errors_total{protocol="http",reason="invalid_pixels",status="422"}' in text
    assert f'mnist_model_info{{model="{NAME}",provider="CPUExecutionProvider",sha256="' in text
    assert 'le="0.0001"' in text and 'le="10.0"' in text


def test_not_ready_until_warm(model_path: Path) -> None:
    """Without the lifespan having run, the app reports 503 (JSON, Retry-After) rather than failing."""
    client = TestClient(make_app(model_path))  # not entered: no startup, no model
    assert client.get("/healthz").status_code == 200
    assert error(client.get("/readyz"), 503, "loading")
    response = client.post("/predict", json={"pixels": PIXELS[0].tolist()})
    error(response, 503, "loading")
    assert response.headers["retry-after"] == "1"


# --- the error matrix --------------------------------------------------------------------------------

BAD_PIXELS = [
    ("not json", None, 422, ["not valid JSON"]),
    ('{"pixels": NaN}', None, 422, ["not valid JSON"]),
    ("[1, 2]", None, 422, ['"pixels"']),
    ('{"pixel": []}', None, 422, ['"pixels"']),
    (None, "abc", 422, ["pixels must be", 'got "abc"']),
    (None, [[0] * 28] * 27, 422, ["list of 27 values"]),
    (None, [[0] * 28] * 5 + [[0] * 27] + [[0] * 28] * 22, 422, ["pixels[5]", "27 values"]),
    (None, [0] * 783, 422, ["783 values"]),
    (None, [[0] * 28] * 27 + [5], 422, ["pixels[27]", "row of 28"]),
    (None, [0] * 100 + ["7"] + [0] * 683, 422, ["pixels[100]", '"7"']),
    (None, [[0] * 28] * 3 + [[0] * 4 + [True] + [0] * 23] + [[0] * 28] * 24, 422, ["pixels[3][4]", "true"]),
    (None, [0] * 783 + [0.5], 422, ["pixels[783]", "0.5"]),
    (None, [0] * 783 + [256], 422, ["pixels[783]", "256"]),
    (None, [-1] + [0] * 783, 422, ["pixels[0]", "-1"]),
    (None, [10**30] + [0] * 783, 422, ["pixels[0]"]),
    (None, [None] * 784, 422, ["pixels[0]", "null"]),
    (None, [[[0]] * 28] * 28, 422, ["pixels[0][0]", "a list"]),
]


@pytest.mark.parametrize(("raw", "pixels", "status", "needles"), BAD_PIXELS)
def test_bad_json_pixels_say_what_and_where(client: TestClient, raw, pixels, status, needles) -> None:
    body = raw.encode() if raw is not None else json.dumps({"pixels": pixels}).encode()
    error(
        client.post("/predict", content=body, headers={"content-type": "application/json"}), status, *needles
    )


def test_bad_batch_instances(client: TestClient) -> None:
    ok = [0] * 784
    post = lambda value: client.post("/predict/batch", json=value)  # noqa: E731
    error(post({"instances": []}), 422, "non-empty")
    error(post({"instances": [1, 2, 3]}), 422, "instances[0]")
    error(post({"instances": [ok, ok, ok, [0] * 783]}), 422, "instances[3]", "783")
    error(post({"instances": [ok, [0] * 783 + [False]]}), 422, "instances[1][783]", "false")
    error(post({"instances": [ok] * 9}), 413, "9", "8")
    octet = {"content-type": "application/octet-stream"}
    error(client.post("/predict/batch", content=b"\0" * 785, headers=octet), 422, "785 bytes", "784")
    error(client.post("/predict/batch", content=b"", headers=octet), 422, "0 bytes")
    error(client.post("/predict/batch", content=b"\0" * 784 * 9, headers=octet), 413, "9")
    files = [("files", (f"{i}.png", digit_png((40, 40)))) for i in range(9)]
    error(client.post("/predict/batch", files=files), 413, "9")
    files = [("files", (f"{i}.png", b"x")) for i in range(50)]
    error(client.post("/predict/batch", files=files), 413, "more than 8")
    error(client.post("/predict/batch", files={"file": ("x.png", digit_png())}), 422, "'files'")


def test_blank_pixels_are_no_digit(client: TestClient) -> None:
    """A single all-background input gets 422 like a blank image, not a confident guess; in a batch it is
    answered is_digit false (digit_score 0) and the other items as usual."""
    error(client.post("/predict", json={"pixels": [0] * 784}), 422, "no digit found")
    instances = [PIXELS[0].tolist(), [0] * 784, PIXELS[1].tolist(), [[0] * 28] * 28]
    predictions = client.post("/predict/batch", json={"instances": instances}).json()["predictions"]
    alone = [client.post("/predict", json={"pixels": PIXELS[i].tolist()}).json() for i in (0, 1)]
    assert [predictions[0], predictions[2]] == alone
    for blank in (predictions[1], predictions[3]):
        assert (blank["is_digit"], blank["digit_score"]) == (False, 0.0)
    raw = np.zeros((3, 784), np.uint8)
    raw[1, 400] = 1
    octet = {"content-type": "application/octet-stream"}
    answer = client.post("/predict/batch", content=raw.tobytes(), headers=octet).json()["predictions"]
    assert [p["is_digit"] for p in answer][0::2] == [False, False]


def test_an_image_without_a_digit_does_not_fail_a_batch(client: TestClient) -> None:
    blank = encode(Image.new("L", (100, 100), 255), "PNG")
    files = [("files", ("7.png", digit_png())), ("files", ("blank.png", blank))]
    seven, nothing = client.post("/predict/batch", files=files).json()["predictions"]
    assert seven == client.post("/predict", files={"file": ("7.png", digit_png())}).json()
    assert (nothing["is_digit"], nothing["digit_score"]) == (False, 0.0)


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_digit_threshold_setting_overrides_the_model(model_path: Path, threshold: float) -> None:
    client = started(make_app(model_path, digit_threshold=threshold))
    try:
        assert client.get(f"/v1/models/{NAME}").json()["digit_threshold"] == threshold
        instances = [row.tolist() for row in PIXELS]
        before = client.get("/metrics").text
        predictions = client.post("/predict/batch", json={"instances": instances}).json()["predictions"]
        assert {p["is_digit"] for p in predictions} == {threshold == 0.0}
        after = client.get("/metrics").text

        def grew(name: str, **labels: str) -> float:
            return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)

        assert grew("mnist_predictions_total", digit="none") == (0 if threshold == 0.0 else len(instances))
        assert grew("mnist_predictions_total") == len(instances)
        assert grew("mnist_digit_score_count") == len(instances)
    finally:
        client.__exit__(None, None, None)


def test_media_types(client: TestClient) -> None:
    error(
        client.post("/predict", content=b"hello", headers={"content-type": "text/plain"}), 415, "text/plain"
    )
    error(client.post("/predict", content=b"hello"), 415)
    error(client.post("/predict/batch", content=digit_png(), headers={"content-type": "image/png"}), 415)
    error(client.post("/predict", content=b"GIF89a-not-really", headers={"content-type": "image/gif"}), 415)
    error(client.post("/predict", data={"pixels": "1"}), 415, "x-www-form-urlencoded")
    error(client.post("/predict", files={"image": ("x.png", digit_png())}), 422, "'file'")
    bad = {"content-type": "multipart/form-data; boundary=xyz"}
    error(client.post("/predict", content=b"--xyz\r\ngarbage", headers=bad), 422)


def test_images_that_are_not_digits(client: TestClient) -> None:
    blank = encode(Image.new("L", (100, 100), 255), "PNG")
    error(
        client.post("/predict", content=blank, headers={"content-type": "image/png"}),
        422,
        "no digit found",
    )
    error(client.post("/predict", content=digit_png()[:200], headers={"content-type": "image/png"}), 422)
    bomb = encode(Image.new("1", (5000, 5000), 1), "PNG")  # 25 MP in a few kB: refused before decoding
    assert len(bomb) < 64 * 1024
    error(client.post("/predict", content=bomb, headers={"content-type": "image/png"}), 413)


def test_body_limit_with_and_without_content_length(client: TestClient) -> None:
    big = b"0" * (64 * 1024 + 1)
    error(client.post("/predict", content=big, headers={"content-type": "application/json"}), 413, "65536")

    def chunks() -> Iterator[bytes]:  # streamed without Content-Length: counted while reading
        for _ in range(100):
            yield b"0" * 1024

    response = client.post(
        "/predict/batch", content=chunks(), headers={"content-type": "application/octet-stream"}
    )
    error(response, 413, "65536")


def test_unknown_routes_and_methods_are_json(client: TestClient) -> None:
    error(client.get("/nope"), 404)
    error(client.get("/predict"), 405)
    error(client.put("/predict/batch"), 405)
    # Allow names every method of the path, also where several routes share it
    assert client.get("/predict").headers["allow"] == "POST"
    assert client.delete("/v2/repository/index").headers["allow"] == "GET, POST"


def test_unexpected_errors_are_json_without_details(model_path: Path) -> None:
    app = make_app(model_path)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    client = TestClient(app, raise_server_exceptions=False)
    message = error(client.get("/boom"), 500)
    assert "secret" not in message


def test_api_key_protects_predict_routes_only(model_path: Path) -> None:
    client = started(make_app(model_path, api_key="s3cret"))
    try:
        pixels = {"pixels": PIXELS[0].tolist()}
        response = client.post("/predict", json=pixels)
        error(response, 401, "API key")
        assert response.headers["www-authenticate"] == "Bearer"
        error(client.post("/predict", json=pixels, headers={"authorization": "Bearer wrong"}), 401)
        error(client.post("/predict/batch", json={"instances": [pixels["pixels"]]}), 401)
        assert (
            client.post("/predict", json=pixels, headers={"authorization": "Bearer s3cret"}).status_code
            == 200
        )
        for path in ("/healthz", "/readyz", "/metrics", f"/v1/models/{NAME}"):
            assert client.get(path).status_code == 200, path
    finally:
        client.__exit__(None, None, None)


def test_cors_off_unless_configured(client: TestClient, model_path: Path) -> None:
    origin = {"origin": "https://draw.example"}
    assert "access-control-allow-origin" not in client.get("/healthz", headers=origin).headers
    configured = TestClient(make_app(model_path, cors_origins=["https://draw.example"]))
    headers = configured.options(
        "/predict", headers={**origin, "access-control-request-method": "POST"}
    ).headers
    assert headers["access-control-allow-origin"] == "https://draw.example"
    other = configured.get("/healthz", headers={"origin": "https://evil.example"}).headers
    assert "access-control-allow-origin" not in other


# --- request IDs ---------------------------------------------------------------------------------------


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    for sent in (
        "trace-42",
        "0af7651916cd43dd8448eb211c80319c",
        "Root=1-5759e988-bd862e3fe1be46a9",
        "a" * 128,
    ):
        response = client.post(
            "/predict", json={"pixels": PIXELS[0].tolist()}, headers={"X-Request-ID": sent}
        )
        assert response.status_code == 200 and response.headers["x-request-id"] == sent
    assert error(client.get("/nope", headers={"X-Request-ID": "trace-43"}), 404) == "Not Found"
    assert client.get("/nope", headers={"X-Request-ID": "trace-43"}).json()["request_id"] == "trace-43"
    generated = [client.get("/healthz").headers["x-request-id"] for _ in range(3)]
    assert len(set(generated)) == 3 and all(re.fullmatch("[0-9a-f]{32}", value) for value in generated)


@pytest.mark.parametrize(
    "hostile",
    [
        b"",
        b"a" * 129,
        b"has space",
        b"<script>alert(1)</script>",
        b'"quoted"',
        b"semi;colon",
        "é".encode(),
        b"\xff",
    ],
)
def test_hostile_request_ids_are_replaced(client: TestClient, hostile: bytes) -> None:
    response = client.get("/nope", headers=[(b"x-request-id", hostile)])
    replaced = response.headers["x-request-id"]
    assert replaced != hostile.decode("latin-1") and re.fullmatch("[0-9a-f]{32}", replaced)
    assert response.json()["request_id"] == replaced
