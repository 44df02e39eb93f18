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
        ROOT / "models" / "lenet5.onnx",
        description="ONNX model to serve; its card (test accuracy) is the .json beside it",
    )
    providers: Literal["auto", "cuda", "cpu"] = Field(
        "auto",
        description="auto: CUDA if the driver sees a GPU and it loads, else CPU (the log says why); "
        "cuda: refuse to start without it; cpu",
    )
    # Batching defaults measured with bench/batching.py on 2 cores (README "Configuration").
    max_batch_size: int = Field(
        64, ge=1, le=4096, description="images per onnxruntime run; warm-up runs every size 1..this"
    )
    warmup_min_s: float = Field(
        0.0,
        ge=0.0,
        le=600.0,
        description="warm-up repeats every batch size until it has lasted this long: a deliberately slow "
        "start (to rehearse a rollout or a worker restart); 0: each size once",
    )
    inline_batch_max: int = Field(
        4,
        ge=0,
        description="CPU batches up to this many images run on the event loop (no thread hand-off); 0: never",
    )
    max_batch_wait_ms: float = Field(
        0.0,
        ge=0.0,
        le=1000.0,
        description="extra wait for a batch to fill (0: take what queued during the last run)",
    )
    digit_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="digit_score below it: is_digit false; unset: the threshold in the model",
    )
    max_queue: int = Field(1024, ge=1, description="images waiting for a run")
    queue_wait_s: float = Field(
        5.0,
        ge=0.0,
        description="how long a request whose images do not fit in the queue waits for room, before its "
        "body is read; then 503 + Retry-After",
    )
    request_timeout_s: float = Field(10.0, gt=0.0, description="per-request inference deadline (504)")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="request body limit (413)")
    max_batch_items: int = Field(
        1024, ge=1, description="images per batch request (413); at most MNIST_MAX_QUEUE"
    )
    max_image_pixels: int = Field(
        40_000_000, ge=784, description="pixels of one image, read before decoding (413)"
    )
    max_request_pixels: int = Field(
        100_000_000, ge=784, description="pixels of all images of one request, from their headers (413)"
    )
    max_image_queue: int = Field(
        32, ge=1, description="image requests waiting to be decoded, per worker, before 503 + Retry-After"
    )
    image_threads: int = Field(2, ge=1, le=64, description="image requests decoded at once, per worker")
    # HTTP limits, enforced per connection by service/http_limits.py (README "Reliability").
    max_head_bytes: int = Field(
        64 * 1024, ge=1024, description="request line + headers, bytes; more: 431 and the connection closed"
    )
    head_timeout_s: float = Field(
        10.0, gt=0.0, description="time to receive a request's head, from connect or its first byte (408)"
    )
    body_timeout_s: float = Field(
        15.0, gt=0.0, description="time to receive a request's body once its head is in (408)"
    )
    # Longer than common load balancers' idle timeout (60 s): with uvicorn's 5 s, a client or proxy reusing
    # a connection as it closed got a reset instead of an answer (bench/reload.py under load).
    keepalive_timeout_s: float = Field(65.0, gt=0.0, description="idle keep-alive connections closed after")
    max_connections: int = Field(
        1000, ge=1, description="open connections per worker; more get 503 + Retry-After at connect"
    )
    # KServe V2 over gRPC (service/v2/grpc_server.py), in every worker beside HTTP.
    grpc_port: int = Field(
        8001, ge=0, le=65535, description="KServe V2 gRPC port, on the HTTP host, in every worker; 0: off"
    )
    grpc_max_message_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="largest gRPC message received or sent (RESOURCE_EXHAUSTED)"
    )
    grpc_max_concurrent_streams: int = Field(
        100, ge=1, description="gRPC calls at once on one connection; more wait for a free stream"
    )
    grpc_keepalive_s: float = Field(
        60.0,
        gt=0.0,
        description="a gRPC connection quiet this long is pinged; one that does not answer is closed",
    )
    grpc_keepalive_timeout_s: float = Field(
        20.0, gt=0.0, description="how long that ping waits for its answer"
    )
    grpc_idle_timeout_s: float = Field(
        300.0, gt=0.0, description="a gRPC connection without a call this long is closed (GOAWAY)"
    )
    api_key: SecretStr | None = Field(
        None, description="if set, the predict and infer routes need `Authorization: Bearer` with it"
    )
    admin_key: SecretStr | None = Field(
        None, description="Bearer key of the model repository (reload) routes; unset: they answer 403"
    )
    model_poll_s: float = Field(
        0.0, ge=0.0, description="reload when the model file changes, checked every N seconds; 0: off"
    )
    reload_timeout_s: float = Field(
        60.0, gt=0.0, description="how long a reload call waits for every worker to finish its reload"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field([], description="comma-separated; empty: CORS off")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="critical, error, warning, info or debug"
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="json: one JSON object per log line, and one per request"
    )
    tracing: bool | None = Field(
        None,
        description="OpenTelemetry spans over OTLP/HTTP; unset: on when OTEL_EXPORTER_OTLP_ENDPOINT, "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_TRACES_SAMPLER is set",
    )
    workers: int = Field(
        default_factory=lambda: cores(), ge=1, description="worker processes (--workers overrides)"
    )
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime threads per worker; 0: cores // workers")
    # uvicorn's default is 5 s; a worker starved of CPU (a 2-core host at load 10, bench/reload.py) was killed
    # with requests in flight. gunicorn waits 30 s.
    worker_healthcheck_s: float = Field(
        30.0, gt=0.0, description="a worker that does not answer the supervisor's ping this long is replaced"
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        """`MNIST_CORS_ORIGINS=https://a.example,https://b.example` reads as a list."""
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _batch_fits_queue(self) -> Settings:
        """A batch request larger than the queue could never be admitted."""
        if self.max_batch_items > self.max_queue:
            raise ValueError(f"max_batch_items {self.max_batch_items} exceeds max_queue {self.max_queue}")
        return self

    @classmethod
    def reference(cls) -> list[tuple[str, str, str]]:
        """(variable, default, meaning) of every setting: `mnist-serve --help` and the README's table."""
        rows = []
        for name, field in cls.model_fields.items():
            default = "number of cores" if field.default_factory else _shown(field.default)
            rows.append((f"MNIST_{name.upper()}", default, field.description or ""))
        return rows

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


def _shown(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, Path):
        return str(value.relative_to(ROOT)) if value.is_relative_to(ROOT) else str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(value) or "empty"
    return str(value)
