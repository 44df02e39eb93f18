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


# Training: more of the kinds that pass the pipeline and carry information (letters, doodles), fewer noise
# images (most never reach the model: the pipeline rejects them).
TRAIN_NEGATIVES = {
    "printed letters": 3000,
    "pen letters": 3000,
    "scribbles": 1500,
    "doodles": 1500,
    "partial strokes": 1000,
    "textures": 1500,
    "uniform noise": 600,
    "Gaussian noise": 600,
    "salt-and-pepper noise": 600,
    "smooth noise": 800,
    "raw-pixel noise (no pipeline)": 2000,
}
TRAIN = recipe(150, 2000, TRAIN_NEGATIVES)
VALIDATION = recipe(40, 300, dict.fromkeys(negatives.TRAINED, 200))
# The card's figures: modest, as tests/test_shipped_model.py renders them again (bench/notdigit.py: more).
TEST = recipe(60, 150, dict.fromkeys(negatives.KINDS, 150), figures=True)


def recipe_for(parts: list[Part], smoke: bool) -> list[Part]:
    """The recipe, or with `smoke` the same kinds with SMOKE_COUNT images each."""
    return [Part(p.source, p.kind, SMOKE_COUNT, p.drop_strokes) for p in parts] if smoke else parts
