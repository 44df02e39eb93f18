"""The non-digit generators: deterministic, every kind yields something the pipeline can take, the ambiguous
glyphs are out, whole families are held out of training, and rendering does not depend on how the work is
split between processes."""

from __future__ import annotations

import contextlib
import io
import json
import string

import numpy as np
import pytest
from PIL import Image

from service.images.errors import NoDigitFound
from tests.support.liveserver import ROOT
from trainer.calibrate import auroc, digit_threshold
from trainer.data import Split
from trainer.synth import Rng, ink, negatives, recipes, render, symbols
from trainer.synth.digits import GLYPH_KINDS
from trainer.synth.render import ImageError

FAMILIES = {**negatives.TRAINED_FAMILIES, **negatives.HELD_OUT_FAMILIES}
LEFT_OUT = set("".join(symbols.LEFT_OUT.values()))
PHOTO_LIKE = ["natural textures", "gradients", "blurred shapes", "synthetic scene crops", "structured noise"]


def make(kind: str, index: int, seed: int = 0) -> bytes:
    """The item's bytes (raw pixels as their bytes), to compare items."""
    made = negatives.KINDS[kind].make(render.kind_rng(seed, kind, index))
    return made.tobytes() if isinstance(made, np.ndarray) else made


@pytest.mark.parametrize("kind", list(negatives.KINDS))
def test_each_kind_is_deterministic_and_reaches_the_pipeline(kind: str) -> None:
    first = [make(kind, i) for i in range(6)]
    assert first == [make(kind, i) for i in range(6)]
    assert first != [make(kind, i, seed=1) for i in range(6)]
    assert len(set(first)) == 6
    images = []
    for index in range(6):
        made = negatives.KINDS[kind].make(render.kind_rng(0, kind, index))
        if isinstance(made, np.ndarray):  # raw pixels skip the pipeline, as pixel requests do
            assert made.shape == (28, 28) and made.dtype == np.uint8
            images.append(made)
            continue
        with contextlib.suppress(ImageError):  # "no digit found": rejected before the model, counted so
            images.append(render.through_pipeline(made))
    if negatives.KINDS[kind].drawn:
        assert len(images) >= 5, f"{kind}: the pipeline found a shape in only {len(images)} of 6"


@pytest.mark.parametrize("kind", PHOTO_LIKE)
def test_photo_like_kinds_are_files_that_decode_and_often_reach_the_model(kind: str) -> None:
    found = 0
    for index in range(30):
        made = negatives.KINDS[kind].make(render.kind_rng(0, kind, index))
        with contextlib.suppress(NoDigitFound):  # any other ImageError (a corrupt file) fails the test
            found += render.through_pipeline(made).max() > 0
    # Those the pipeline refuses never reach the model: a kind it nearly always refuses teaches nothing.
    assert found >= 6, f"{kind}: the pipeline found a shape in only {found} of 30"


def test_no_trained_kind_reads_a_photo_and_the_photo_like_ones_read_no_file_at_all(monkeypatch) -> None:
    def no_file(*args: object, **kwargs: object) -> None:
        raise AssertionError("a generated image read a file")

    monkeypatch.setattr(negatives, "_photos", no_file)  # the held-out sample photos
    for kind in negatives.TRAINED:
        negatives.KINDS[kind].make(render.kind_rng(0, kind, 0))
    monkeypatch.setattr(Image, "open", no_file)
    for kind in PHOTO_LIKE:
        for index in range(10):
            negatives.KINDS[kind].make(render.kind_rng(0, kind, index))
    with pytest.raises(AssertionError, match="read a file"):
        negatives.KINDS["photo crops (held out)"].make(render.kind_rng(0, "photo crops (held out)", 0))


def test_held_out_kinds_are_whole_families_two_of_them_symbols_and_never_trained_or_validated_on() -> None:
    assert set(negatives.HELD_OUT) == {
        "photo crops (held out)",
        "pen kana and kanji (held out)",
        "currency symbols (held out)",
        "emoji-like shapes (held out)",
    }
    assert set(negatives.HELD_OUT_FAMILIES) <= set(negatives.HELD_OUT)
    assert set(negatives.TRAINED) | set(negatives.HELD_OUT) == set(negatives.KINDS)
    assert set(recipes.TRAIN_NEGATIVES) == set(negatives.TRAINED)
    assert all(part.kind not in negatives.HELD_OUT for part in recipes.TRAIN + recipes.VALIDATION)
    assert {p.kind for p in recipes.VALIDATION if p.source == "negative"} == set(negatives.TRAINED)
    assert {p.kind for p in recipes.TEST if p.source == "negative"} == set(negatives.KINDS)


def test_the_symbols_a_new_user_tries_first_are_in_trained_families_and_no_held_out_one() -> None:
    for glyph in symbols.LARGE_SYMBOLS:
        assert any(glyph in family.printed for family in negatives.TRAINED_FAMILIES.values()), glyph
        assert not any(glyph in family.printed for family in negatives.HELD_OUT_FAMILIES.values()), glyph
    held_out = "".join(family.printed for family in negatives.HELD_OUT_FAMILIES.values())
    trained = "".join(family.printed for family in negatives.TRAINED_FAMILIES.values())
    assert not set(held_out) & set(trained)


def test_the_card_of_the_shipped_model_names_only_kinds_that_still_render() -> None:
    card = json.loads((ROOT / "models" / "lenet5.json").read_text())
    negative_kinds = [
        kind for source, kind, *_ in card["not_a_digit"]["test_set"]["recipe"] if source == "negative"
    ]
    for kind in negative_kinds:
        negatives.kind(kind).make(render.kind_rng(0, kind, 0))
    assert set(negatives.RETIRED).isdisjoint(negatives.KINDS)
    assert all(
        part.kind not in negatives.RETIRED for part in recipes.TRAIN + recipes.VALIDATION + recipes.TEST
    )


def test_ambiguous_letters_are_never_negatives() -> None:
    assert not set(string.digits) & set(negatives.LETTERS)
    for glyph in "OoQDIl|ZzSsbBgq":
        assert glyph not in negatives.LETTERS
    for font, letters in negatives.PEN_LETTERS.items():
        if font not in ("greek", "cyrillic"):  # those map ASCII to their own letters (listed by hand)
            assert not set(letters) & negatives.AMBIGUOUS


def test_no_symbol_family_lists_a_glyph_left_out_as_digit_like() -> None:
    for name, family in FAMILIES.items():
        assert not set(family.printed) & (LEFT_OUT | set(string.digits) | negatives.AMBIGUOUS), name
        for font, keys in family.hershey:
            assert not set(keys) & set(symbols.PEN_LEFT_OUT.get(font, "")), (name, font)
    assert set("$§∂∅°∘•∫¬○□|/!") <= LEFT_OUT


def test_every_glyph_of_a_family_prints_in_a_face_or_draws_as_strokes() -> None:
    for name, family in FAMILIES.items():
        assert [glyph for glyph in family.printed if not ink.printable(glyph)] == [], name
        for font, keys in family.hershey:
            for key in keys:
                assert ink.hershey_strokes(font, key), (name, font, key)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_family_never_prints_or_draws_an_ambiguous_glyph(name: str, monkeypatch) -> None:
    family = FAMILIES[name]
    printed, drawn = [], []

    def printed_ink(rng: Rng, text: str, height: int) -> np.ndarray:
        printed.append(text)
        return np.ones((2, 2), np.float32)

    def hershey_strokes(font: str, text: str) -> ink.Strokes:
        drawn.append((font, text))
        return ink.hershey_strokes(font, text)

    def pen_ink(rng: Rng, strokes: ink.Strokes, height: int) -> np.ndarray:
        pens.append(len(strokes))
        return np.ones((2, 2), np.float32)

    pens: list[int] = []
    monkeypatch.setattr(symbols, "printed_ink", printed_ink)
    monkeypatch.setattr(symbols, "hershey_strokes", hershey_strokes)
    monkeypatch.setattr(symbols, "pen_ink", pen_ink)
    monkeypatch.setattr(symbols, "upload", lambda rng, alpha: b"")
    for index in range(400):
        symbols.draw(family, render.kind_rng(0, name, index))
    assert 0.4 < len(pens) / 400 < 0.6  # symbols.PEN_SHARE: every family has pen strokes
    glyphs = set("".join(printed))
    assert glyphs <= set(family.printed) and not glyphs & LEFT_OUT
    assert len(glyphs) > 0.8 * len(set(family.printed))  # the family, not a few of it
    overstruck = {letter for letter, _ in symbols.OVERSTRUCK.values()}
    for font, text in drawn:
        assert not set(text) & set(symbols.PEN_LEFT_OUT.get(font, "")), (font, text)
        if family.drawn is symbols.currency_strokes and font in ink.PEN_FONTS:  # a letter and its bars
            assert text in overstruck, text
        elif font in ink.PEN_FONTS or font in ("astrology", "music"):  # letters and digits at those keys
            assert not any(c.isalnum() for c in text), (font, text)
        elif font == "mathlow":  # its capitals draw small letters, its digits digits
            assert not any(c.isdigit() or c.isupper() for c in text), (font, text)


def test_the_large_printed_symbols_are_eighteen_light_pages_the_pipeline_reads() -> None:
    files = symbols.large_symbols()
    assert sorted(files) == sorted(f"{s} {face}" for s in "≈≠→♦♣%" for face in symbols.LARGE_FACES)
    for name, data in files.items():
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        with Image.open(io.BytesIO(data)) as page:
            pixels = np.asarray(page.convert("L"))
        assert page.size == (320, 320) and np.median(pixels) > 230, name  # a light page ...
        rows = np.flatnonzero((pixels < 128).any(axis=1))
        assert rows.size and 20 <= rows[-1] - rows[0] <= 200, name  # ... with one large dark glyph
        digit = render.through_pipeline(data)
        assert digit.shape == (28, 28) and digit.max() > 200, name
    assert files == symbols.large_symbols()


def test_a_vertical_stroke_is_a_one_a_flat_one_is_a_dash() -> None:
    field = np.zeros((28, 28), np.uint8)
    field[4:24, 13:15] = 255
    assert negatives.looks_like_a_stroke(field)
    assert not negatives.looks_like_a_stroke(field.T.copy())
    ring = np.zeros((28, 28), np.uint8)
    ys, xs = np.mgrid[:28, :28]
    ring[np.abs(np.hypot(ys - 14, xs - 14) - 8) < 1.5] = 255
    assert not negatives.looks_like_a_stroke(ring)


def test_digits_drawn_the_same_ways_are_labelled() -> None:
    for kind, make_digit in GLYPH_KINDS.items():
        labels = []
        for i in range(8):
            data, label = make_digit(render.kind_rng(0, kind, i))
            assert 0 <= label <= 9
            assert render.through_pipeline(data).max() > 0
            labels.append(label)
        assert len(set(labels)) > 1


def test_render_does_not_depend_on_the_number_of_processes() -> None:
    digits = Split(np.zeros((3, 28, 28), np.uint8), np.arange(3))
    digits.images[:, 6:22, 12:16] = 255  # three "1"s to draw realistic images from
    parts = [
        render.Part("realistic", "canvas white-on-black", 2),
        render.Part("glyph", "pen-drawn digits", 3),
        render.Part("negative", "doodles", 4),
        render.Part("negative", "raw-pixel noise (no pipeline)", 3),
    ]
    one = render.render(parts, 5, digits, workers=1)
    two = render.render(parts, 5, digits, workers=2)
    assert np.array_equal(one.images, two.images) and np.array_equal(one.labels, two.labels)
    assert one.names == [p.kind for p in parts]
    assert [int(one.of(p.kind).sum()) + one.excluded.get(p.kind, 0) for p in parts] == [2, 3, 4, 3]
    assert (one.labels[one.of("doodles")] == render.NOT_DIGIT).all()
    assert set(one.labels[one.is_digit]) <= set(range(10))


def test_threshold_rule_and_auroc() -> None:
    scores = np.linspace(0, 1, 1000)
    threshold = digit_threshold(scores, accept=0.997)
    assert (scores >= threshold).mean() >= 0.997
    assert (scores >= np.nextafter(threshold, 2)).mean() < 0.997  # the highest such threshold
    assert auroc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    assert auroc(np.array([0.1, 0.2]), np.array([0.9, 0.8])) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([0.5])) == 0.5
