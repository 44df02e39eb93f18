"""The three rendered sets -- train, validation, test -- as recipes (kinds and counts) and fixed seeds."""

from __future__ import annotations

from trainer.synth import digits, negatives
from trainer.synth.render import Part

# Fixed, like the MNIST validation split, so that every candidate trains and is chosen on the same images, and
# the test set is always fresh samples never trained or validated on.
SEEDS = {"train": 1, "validation": 2, "test": 3}
SMOKE_COUNT = 2  # images of each kind with --limit: every kind still runs, in seconds


def recipe(
    realistic_count: int, glyph_count: int, negative_counts: dict[str, int], *, figures: bool = False
) -> list[Part]:
    """A set: every realistic kind, both glyph-digit kinds, and the given negative kinds. `figures`: a set to
    report, where only drawn kinds (negatives.Kind.drawn) drop stroke-like images."""
    return (
        [Part("realistic", kind, realistic_count) for kind in digits.KINDS]
        + [Part("glyph", kind, glyph_count) for kind in digits.GLYPH_KINDS]
        + [
            Part("negative", kind, count, drop_strokes=not figures or negatives.KINDS[kind].drawn)
            for kind, count in negative_counts.items()
        ]
    )


# Training: the symbol families and the letters carry the most (they reach the model and look like ink), noise
# the least (the pipeline rejects most of it before the model). Sized to cost about the rendering CPU time of
# the 11-kind set it replaced (16.1k negatives then, 17.1k now, about 14k of each reaching the model;
# measured per kind on a sample of 60: the whole set +4 %): a symbol family renders at about the cost of
# letters, a scene crop a little more, noise and the other photo-like kinds at half or less. More maths,
# brackets and gradients: model 2.0.0 refused them least (65 %, 67 %, 84 %; bench/notdigit --every-kind), and
# about half the brackets come out of the pipeline as a straight stroke, a 1, and are dropped.
TRAIN_NEGATIVES = {
    "printed letters": 1500,
    "pen letters": 1500,
    "scribbles": 800,
    "doodles": 800,
    "partial strokes": 700,
    "math symbols": 1000,
    "arrows": 700,
    "card suits": 500,
    "check and cross marks": 400,
    "punctuation": 800,
    "brackets": 700,
    "geometric shapes": 400,
    "textures": 700,
    "natural textures": 600,
    "gradients": 600,
    "blurred shapes": 500,
    "synthetic scene crops": 500,
    "structured noise": 600,
    "uniform noise": 300,
    "Gaussian noise": 300,
    "salt-and-pepper noise": 400,
    "smooth noise": 800,
    "raw-pixel noise (no pipeline)": 2000,
}
TRAIN = recipe(150, 2000, TRAIN_NEGATIVES)
# 100 of each trained kind: as many validation non-digits as the 11 kinds at 200 gave.
VALIDATION = recipe(40, 300, dict.fromkeys(negatives.TRAINED, 100))
# The card's figures, every kind (held out too): modest, as tests/trainer/test_shipped_model.py renders them
# again (bench/notdigit.py: more). A card records its own recipe: that is what its figures are measured on.
TEST = recipe(60, 150, dict.fromkeys(negatives.KINDS, 150), figures=True)


def recipe_for(parts: list[Part], smoke: bool) -> list[Part]:
    """The recipe, or with `smoke` the same kinds with SMOKE_COUNT images each."""
    return [Part(p.source, p.kind, SMOKE_COUNT, p.drop_strokes) for p in parts] if smoke else parts
