"""Synthetic images, rendered the way users upload them and read through the service's own image pipeline.

ink (glyphs, pen strokes, MNIST digits as alpha masks) -> paper (surfaces, light, noise, file bytes) ->
exports (canvas, drawing page, photo of paper: the uploads) -> digits / negatives (the kinds) -> render (the
pipeline, a process pool) -> recipes (the train, validation and test sets) -> cache (rendered sets on disk).
"""

import numpy as np

Rng = np.random.Generator  # every generator draws from one, seeded per kind or per item
