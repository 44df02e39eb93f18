"""Typed results of the service's JSON answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelRef:
    """The model that answered: every prediction names it, so a rollout shows in the results."""

    name: str
    version: str


@dataclass(frozen=True)
class Prediction:
    """One image's answer. `is_digit` / `digit_score` are None from servers that do not send them."""

    digit: int
    confidence: float
    probabilities: tuple[float, ...]
    model: ModelRef
    is_digit: bool | None = None
    digit_score: float | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Prediction:
        model = body["model"]
        return cls(
            digit=int(body["digit"]),
            confidence=float(body["confidence"]),
            probabilities=tuple(float(p) for p in body["probabilities"]),
            model=ModelRef(str(model["name"]), str(model["version"])),
            is_digit=None if body.get("is_digit") is None else bool(body["is_digit"]),
            digit_score=None if body.get("digit_score") is None else float(body["digit_score"]),
        )


@dataclass(frozen=True)
class ModelInfo:
    """GET /v1/models/{name}; `raw` keeps every field, including ones newer than this client."""

    name: str
    version: str
    sha256: str | None
    test_accuracy: float | None
    providers: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ModelInfo:
        return cls(
            name=str(body["name"]),
            version=str(body["version"]),
            sha256=body.get("sha256"),
            test_accuracy=body.get("test_accuracy"),
            providers=tuple(body.get("providers") or ()),
            raw=body,
        )
