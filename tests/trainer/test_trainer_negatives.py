"""The non-digit generators: deterministic, every kind yields something the pipeline can take, the ambiguous
glyphs are out, and rendering does not depend on how the work is split between processes."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from trainer.calibrate import auroc, digit_threshold
from trainer.data import Split
from trainer.synth import negatives, recipes, render
from trainer.synth.digits import GLYPH_KINDS
from trainer.synth.render import ImageError


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
    if not kind.endswith("noise") and kind not in {"textures", "photo crops (held out)"}:
        assert len(images) >= 5, f"{kind}: the pipeline found a shape in only {len(images)} of 6"


def test_held_out_kinds_are_whole_families() -> None:
    assert set(negatives.HELD_OUT) == {
        "photo crops (held out)",
        "printed symbols (held out)",
        "pen kana and kanji (held out)",
    }
    assert set(negatives.TRAINED) | set(negatives.HELD_OUT) == set(negatives.KINDS)
    assert not set(recipes.TRAIN_NEGATIVES) & set(negatives.HELD_OUT)
    assert all(part.kind not in negatives.HELD_OUT for part in recipes.TRAIN + recipes.VALIDATION)


def test_ambiguous_glyphs_are_never_negatives() -> None:
    assert not set("0123456789") & set(negatives.LETTERS + negatives.SYMBOLS)
    for glyph in "OoQDIl|ZzSsbBgq":
        assert glyph not in negatives.LETTERS
    for font, letters in negatives.PEN_LETTERS.items():
        if font not in ("greek", "cyrillic"):  # those map ASCII to their own letters (listed by hand)
            assert not set(letters) & negatives.AMBIGUOUS
    assert not set("$§∂∅°∘•∫¬") & set(negatives.SYMBOLS)


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
