"""The drawing page in a real Chromium against a real server: draw by mouse or finger, upload a photo."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import onnx
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.liveserver import ROOT, LiveServer
from tests.support.machine import require_program
from trainer.data import load_test
from trainer.synth.paper import encode

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 15_000
NOTHING = "\u2013"  # what the page shows where there is no result (an en dash)


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40) -> list[tuple[float, float]]:
    angles = [2 * math.pi * i / n for i in range(n + 1)]
    return [(cx + rx * math.sin(a), cy - ry * math.cos(a)) for a in angles]


# Strokes as a person draws them, in fractions of the pad's size: large, a little slanted; a list per stroke.
DIGITS: dict[int, list[list[tuple[float, float]]]] = {
    1: [[(0.54, 0.14), (0.50, 0.50), (0.46, 0.86)]],
    0: [ellipse(0.5, 0.5, 0.27, 0.37)],
    7: [[(0.24, 0.18), (0.76, 0.18), (0.62, 0.45), (0.44, 0.86)]],
}


def shrunk(strokes: list[list[tuple[float, float]]], scale: float, left: float, top: float) -> list:
    return [[(left + scale * x, top + scale * y) for x, y in stroke] for stroke in strokes]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = require_program("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextmanager
def open_page(browser: Browser, server: LiveServer, **context_options: object) -> Iterator[Page]:
    """The page at /, failing the test on any script error or any request that leaves the server's origin."""
    context = browser.new_context(**context_options)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    origin = urlsplit(server.url).netloc

    def check(request: object) -> None:
        url = urlsplit(request.url)
        if url.scheme != "data" and url.netloc != origin:
            problems.append(f"request outside the service: {request.url}")

    page.on("request", check)
    page.goto(f"{server.url}/")
    page.wait_for_function("document.querySelectorAll('#bars li').length === 10")  # the script has run
    yield page
    context.close()
    assert not problems


@pytest.fixture
def page(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    with open_page(browser, live_server, viewport={"width": 1000, "height": 800}) as page:
        yield page


def pad_point(page: Page, x: float, y: float) -> tuple[float, float]:
    box = page.locator("#pad").bounding_box()
    assert box is not None
    return box["x"] + x * box["width"], box["y"] + y * box["height"]


def draw(page: Page, strokes: list[list[tuple[float, float]]]) -> None:
    """Mouse strokes with intermediate moves, as a hand makes them."""
    for stroke in strokes:
        page.mouse.move(*pad_point(page, *stroke[0]))
        page.mouse.down()
        for point in stroke[1:]:
            page.mouse.move(*pad_point(page, *point), steps=6)
        page.mouse.up()


def settle(page: Page) -> None:
    """Wait (bounded) until no prediction is out or queued; the page marks that on <main data-busy>."""
    page.wait_for_function("document.getElementById('app').dataset.busy === 'false'")


def shown_probabilities(page: Page) -> list[float]:
    return page.eval_on_selector_all("#bars li", "items => items.map(li => Number(li.dataset.p))")


def pad_is_blank(page: Page) -> bool:
    return page.evaluate(
        """() => {
        const pad = document.getElementById('pad');
        const data = pad.getContext('2d').getImageData(0, 0, pad.width, pad.height).data;
        return data.every(v => v === 255);
    }"""
    )


def seen_has_ink(page: Page) -> bool:
    return page.evaluate(
        """() => {
        const data = document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data;
        return data.some((v, i) => i % 4 === 0 && v > 128);
    }"""
    )


@pytest.mark.parametrize("digit", list(DIGITS))
def test_drawn_digit_is_recognised(page: Page, digit: int) -> None:
    draw(page, DIGITS[digit])
    settle(page)
    assert page.inner_text("#error") == ""
    assert page.inner_text("#digit") == str(digit)
    probabilities = shown_probabilities(page)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-3)
    percents = [float(text.rstrip(" %")) for text in page.locator("#bars .pct").all_inner_texts()]
    assert sum(percents) == pytest.approx(100.0, abs=1.0)
    assert page.inner_text("#confidence") == f"{100 * max(probabilities):.1f} %"
    assert page.locator("#bars li.top").get_attribute("data-digit") == str(digit)
    assert page.inner_text("#rtt").endswith(" ms")
    assert page.inner_text("#score").endswith(" %")
    assert seen_has_ink(page)
    if digit == 7:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "drawing-page.png", full_page=True)


def arc(cx: float, cy: float, r: float, start: float, end: float, n: int = 24) -> list[tuple[float, float]]:
    """Points on a circular arc, angles in degrees (0 = right, 90 = down: screen coordinates)."""
    angles = [math.radians(start + (end - start) * i / (n - 1)) for i in range(n)]
    return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]


NOT_DIGITS = {
    "letter A": [[(0.3, 0.8), (0.5, 0.2), (0.7, 0.8)], [(0.38, 0.58), (0.62, 0.58)]],
    "scribble": [
        [(0.2 + 0.6 * (i % 2), 0.2 + 0.6 * i / 11 + 0.05 * ((i * 7) % 3)) for i in range(12)],
        [(0.15 + 0.7 * i / 9, 0.3 + 0.4 * ((i * 5) % 4) / 3) for i in range(10)],
    ],
    "smiley": [
        arc(0.5, 0.5, 0.32, 0, 360, 40),
        arc(0.39, 0.4, 0.03, 0, 360, 10),
        arc(0.61, 0.4, 0.03, 0, 360, 10),
        arc(0.5, 0.52, 0.16, 20, 160),
    ],
}


@pytest.mark.parametrize("drawing", list(NOT_DIGITS))
def test_a_drawing_that_is_not_a_digit_says_so(page: Page, drawing: str) -> None:
    draw(page, NOT_DIGITS[drawing])
    settle(page)
    assert page.inner_text("#error") == ""
    assert page.inner_text("#digit") == "Not a digit"
    assert page.inner_text("#confidence") == "\u2013"  # an en dash: no confidence to show
    score = float(page.inner_text("#score").rstrip(" %"))
    threshold = 100 * httpx.get(f"{page.url.rstrip('/')}/v1/models/lenet5").json()["digit_threshold"]
    assert score < threshold
    assert sum(shown_probabilities(page)) == pytest.approx(1.0, abs=1e-3)  # the bars stay, muted
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"not-a-digit-{drawing.replace(' ', '-')}.png", full_page=True)


def test_prediction_updates_while_the_pen_is_down(page: Page) -> None:
    stroke = DIGITS[1][0]
    page.mouse.move(*pad_point(page, *stroke[0]))
    page.mouse.down()
    page.mouse.move(*pad_point(page, *stroke[-1]), steps=10)
    page.wait_for_function("document.getElementById('digit').textContent === '1'")  # before the release
    page.mouse.up()
    settle(page)
    assert page.inner_text("#digit") == "1"


def test_small_digit_in_a_corner_is_recognised(page: Page) -> None:
    """The server's preprocessing finds, crops and centres the ink, as MNIST digits are centred."""
    draw(page, shrunk(DIGITS[7], 0.3, 0.65, 0.02))
    settle(page)
    assert page.inner_text("#digit") == "7"


def test_clear_resets_pad_and_result(page: Page) -> None:
    draw(page, DIGITS[0])
    settle(page)
    assert page.inner_text("#digit") == "0"
    page.click("#clear")
    settle(page)
    assert pad_is_blank(page)
    assert page.inner_text("#digit") == NOTHING
    assert page.inner_text("#error") == ""
    assert page.locator("#bars li[data-p]").count() == 0
    assert not seen_has_ink(page)


def test_undo_removes_the_last_stroke(page: Page) -> None:
    draw(page, DIGITS[1])
    settle(page)
    one_stroke = page.evaluate("document.getElementById('pad').toDataURL()")
    draw(page, [ellipse(0.25, 0.5, 0.12, 0.2)])  # a second stroke beside the 1
    settle(page)
    assert page.evaluate("document.getElementById('pad').toDataURL()") != one_stroke
    page.click("#undo")
    settle(page)
    assert page.evaluate("document.getElementById('pad').toDataURL()") == one_stroke
    assert page.inner_text("#digit") == "1"
    page.click("#undo")
    settle(page)
    assert pad_is_blank(page)
    assert page.inner_text("#digit") == NOTHING


def test_empty_pad_shows_the_service_error(page: Page) -> None:
    page.click("#predict")
    settle(page)
    assert "no digit found" in page.inner_text("#error").lower()
    assert page.inner_text("#digit") == NOTHING
    assert page.locator("#bars li[data-p]").count() == 0


def test_buttons_work_from_the_keyboard(page: Page) -> None:
    draw(page, DIGITS[7])
    settle(page)
    for _ in range(10):  # bounded: Clear is a few tab stops from the top
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "clear":
            break
    assert page.evaluate("document.activeElement.id") == "clear"
    page.keyboard.press("Enter")
    settle(page)
    assert pad_is_blank(page)
    assert page.inner_text("#digit") == NOTHING
    assert page.get_by_label("Bearer token").count() == 1
    assert page.locator("#result").get_attribute("aria-live") == "polite"


def photo_of(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """An MNIST digit as dark ink on uneven light paper, upscaled and off-centre like a phone photo."""
    ink = np.asarray(Image.fromarray(digit).resize((240, 240), Image.Resampling.BILINEAR), dtype=np.float64)
    paper = 225 + 20 * np.linspace(0, 1, 480)[None, :] + rng.normal(0, 4, (360, 480))
    paper[70:310, 60:300] -= ink / 255 * 190
    gray = np.clip(paper, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([gray, gray, (gray * 0.95).astype(np.uint8)], axis=-1))


def test_uploaded_photo_is_recognised(page: Page, mnist_dir: Path, tmp_path: Path) -> None:
    test = load_test(mnist_dir)
    rng = np.random.default_rng(5)
    for index in (0, 1, 2):
        label = int(test.labels[index])
        path = tmp_path / f"digit-{index}.png"
        photo_of(test.images[index], rng).save(path)
        page.set_input_files("#file", path)
        settle(page)
        assert page.inner_text("#error") == ""
        assert page.inner_text("#source") == path.name
        assert page.inner_text("#digit") == str(label)
        assert sum(shown_probabilities(page)) == pytest.approx(1.0, abs=1e-3)
        assert seen_has_ink(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "drawing-page-upload.png", full_page=True)


def test_api_key_field(browser: Browser, server_factory: Callable[..., object]) -> None:
    with (
        server_factory(env={"MNIST_API_KEY": "page-test-key"}) as server,
        open_page(browser, server, viewport={"width": 1000, "height": 800}) as page,
    ):
        draw(page, DIGITS[1])
        settle(page)
        assert "API key" in page.inner_text("#error")
        page.click("text=API key")
        page.get_by_label("Bearer token").fill("page-test-key")
        page.click("#predict")
        settle(page)
        assert page.inner_text("#error") == ""
        assert page.inner_text("#digit") == "1"


def test_model_name_and_version_are_shown(page: Page, live_server: LiveServer) -> None:
    assert page.inner_text("#model") == f"Model: {NOTHING}"  # nothing has answered yet
    draw(page, DIGITS[1])
    settle(page)
    model = httpx.get(f"{live_server.url}/v1/models/lenet5", timeout=10).json()
    assert page.inner_text("#model") == f"Model: {model['name']} {model['version']}"


def renamed_model(folder: Path, name: str, version: str) -> Path:
    """The shipped model with other name/version metadata (what the service reports for it)."""
    model = onnx.load(ROOT / "models" / "lenet5.onnx")
    props = {prop.key: prop for prop in model.metadata_props}
    props["name"].value, props["version"].value = name, version
    path = folder / f"{name}.onnx"
    onnx.save(model, path)
    return path


def test_model_shown_is_the_one_that_answered(
    browser: Browser, server_factory: Callable[..., object], tmp_path: Path
) -> None:
    """Named from the prediction answer, not looked up by a fixed name: any served model shows."""
    env = {"MNIST_MODEL_PATH": str(renamed_model(tmp_path, "digits", "2.0.0-test"))}
    with (
        server_factory(env=env) as server,
        open_page(browser, server, viewport={"width": 1000, "height": 800}) as page,
    ):
        paths: list[str] = []
        page.on("request", lambda request: paths.append(urlsplit(request.url).path))
        draw(page, DIGITS[1])
        settle(page)
        assert page.inner_text("#digit") == "1"
        assert page.inner_text("#model") == "Model: digits 2.0.0-test"
        assert not [path for path in paths if path.startswith("/v1/models")]


def digit_png(mnist_dir: Path, index: int) -> tuple[bytes, int]:
    """An MNIST test digit as a phone-photo-like PNG, and its label."""
    test = load_test(mnist_dir)
    image = photo_of(test.images[index], np.random.default_rng(index))
    return encode(image, "PNG"), int(test.labels[index])


def test_chosen_file_without_a_type_is_recognised(page: Page, mnist_dir: Path) -> None:
    """A file the browser gives no MIME type (no extension) is sent as a multipart `file`; the server
    reads the format from its bytes."""
    png, label = digit_png(mnist_dir, 3)
    page.set_input_files("#file", {"name": "scan-without-extension", "mimeType": "", "buffer": png})
    assert page.evaluate("document.getElementById('file').files.length") == 0  # reset after choosing
    settle(page)
    assert page.inner_text("#error") == ""
    assert page.inner_text("#source") == "scan-without-extension"
    assert page.inner_text("#digit") == str(label)


def test_dropped_file_without_a_type_is_recognised(page: Page, mnist_dir: Path) -> None:
    png, label = digit_png(mnist_dir, 4)
    transfer = page.evaluate_handle(
        """(bytes) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], "dropped", { type: "" }));
        return transfer;
    }""",
        list(png),
    )
    assert page.evaluate("(transfer) => transfer.files[0].type", transfer) == ""
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    settle(page)
    assert page.inner_text("#error") == ""
    assert page.inner_text("#source") == "dropped"
    assert page.inner_text("#digit") == str(label)


def test_phone_width_fits_and_draws_by_touch(browser: Browser, live_server: LiveServer) -> None:
    phone = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True}
    with open_page(browser, live_server, **phone) as page:
        draw_and_check_phone(page)


def draw_and_check_phone(page: Page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    session = page.context.new_cdp_session(page)
    stroke = DIGITS[1][0]
    points = [pad_point(page, *p) for p in np.linspace(stroke[0], stroke[-1], 12)]
    touches = [("touchStart", points[0])] + [("touchMove", point) for point in points[1:]]
    for kind, (x, y) in touches:
        session.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
    session.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    settle(page)
    assert page.inner_text("#digit") == "1"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "drawing-page-phone.png", full_page=True)
