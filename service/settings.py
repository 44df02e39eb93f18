"""Every knob of the service in one object, read from the environment (prefix `MNIST_`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ROOT = Path(__file__).resolve().parents[1]


def cores() -> int:
    """CPUs this process may run on (a container's cpuset, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Settings(BaseSettings):
    """Service configuration; `MNIST_<FIELD>` environment variables override the defaults."""

    model_config = SettingsConfigDict(env_prefix="MNIST_", protected_namespaces=())

    model_path: Path = Field(
        ROOT / "models" / "lenet5.onnx", description="ONNX model; its card is the .json beside it"
    )
    providers: Literal["auto", "cuda", "cpu"] = Field("auto", description="auto: CUDA if it loads, else CPU")
    # Batching defaults measured with bench/batching.py on 2 cores (README "Configuration").
    max_batch_size: int = Field(
        64, ge=1, le=4096, description="images per onnxruntime run (and warm-up shapes)"
    )
    max_batch_wait_ms: float = Field(0.0, ge=0.0, le=1000.0, description="extra wait for a batch to fill")
    max_queue: int = Field(1024, ge=1, description="images waiting for a run before 503 + Retry-After")
    request_timeout_s: float = Field(10.0, gt=0.0, description="deadline for a request's inference (504)")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="request body limit (413)")
    max_batch_items: int = Field(1024, ge=1, description="images per batch request (413)")
    max_image_pixels: int = Field(40_000_000, ge=784, description="decoded image size limit (413)")
    max_request_pixels: int = Field(
        100_000_000, ge=784, description="pixels of all images of one request, from their headers (413)"
    )
    max_image_queue: int = Field(
        32, ge=1, description="image requests waiting to be decoded, per worker, before 503 + Retry-After"
    )
    image_threads: int = Field(2, ge=1, le=64, description="image requests decoded at once, per worker")
    api_key: SecretStr | None = Field(None, description="if set, predict/infer routes need Bearer <key>")
    cors_origins: Annotated[list[str], NoDecode] = Field([], description="comma-separated; empty: CORS off")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field("info", description="logging")
    workers: int = Field(default_factory=lambda: cores(), ge=1, description="worker processes")
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime threads per worker; 0: cores // workers")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        """`MNIST_CORS_ORIGINS=https://a.example,https://b.example` reads as a list."""
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _batch_fits_queue(self) -> Settings:
        """A batch request larger than the queue could never be admitted."""
        if self.max_batch_items > self.max_queue:
            raise ValueError(f"max_batch_items {self.max_batch_items} exceeds max_queue {self.max_queue}")
        return self

    @model_validator(mode="after")
    def _image_fits_request(self) -> Settings:
        """An image the per-image limit admits must fit a request on its own."""
        if self.max_image_pixels > self.max_request_pixels:
            limits = f"max_image_pixels {self.max_image_pixels}, max_request_pixels {self.max_request_pixels}"
            raise ValueError(f"an image may not exceed a request: {limits}")
        return self

    @property
    def threads_per_worker(self) -> int:
        """onnxruntime intra-op threads: explicit, or the cores shared out so workers x threads <= cores."""
        return self.intra_op_threads or max(1, cores() // self.workers)
