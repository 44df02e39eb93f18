"""Prometheus metrics (base units); multiprocess mode when the CLI set PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# 100 us .. 10 s, roughly 1-2.5-5 per decade.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)
MODEL = ("model", "version")

REQUEST_DURATION = Histogram(
    "mnist_request_duration_seconds",
    "Request duration by protocol (http, grpc), route template (gRPC: the method's path), method and status "
    "(gRPC: the HTTP status of the same outcome).",
    ("protocol", "route", "method", "status"),
    buckets=LATENCY_BUCKETS,
)
INFERENCE_DURATION = Histogram(
    "mnist_inference_duration_seconds",
    "onnxruntime compute time per batch.",
    (*MODEL, "provider"),
    buckets=LATENCY_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "mnist_queue_wait_seconds",
    "Time a request waited in the batching queue before its batch ran.",
    MODEL,
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram("mnist_batch_size", "Images per onnxruntime run.", MODEL, buckets=BATCH_BUCKETS)
IN_FLIGHT = Gauge(
    "mnist_requests_in_flight", "HTTP requests and gRPC calls being served.", multiprocess_mode="livesum"
)
QUEUE_DEPTH = Gauge(
    "mnist_queue_depth",
    "Images waiting in the batching queue, sampled as work arrives and as each batch starts.",
    MODEL,
    multiprocess_mode="livesum",
)
PREDICTIONS = Counter(
    "mnist_predictions",
    'Predictions by predicted digit; "none": not a digit (digit_score under the threshold).',
    (*MODEL, "digit"),
)
DIGIT_SCORE = Histogram(
    "mnist_digit_score",
    "The model's probability that an input is a digit at all (watch for drift to non-digits).",
    MODEL,
    buckets=(0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99),
)
CONFIDENCE = Histogram(
    "mnist_prediction_confidence",
    "Probability of the predicted digit (watch for drift).",
    MODEL,
    buckets=CONFIDENCE_BUCKETS,
)
ERRORS = Counter(
    "mnist_errors",
    "Refused or failed requests by reason, status and protocol.",
    ("reason", "status", "protocol"),
)
MODEL_INFO = Gauge(
    "mnist_model_info",
    "The model being served: 1; a model a reload replaced: 0.",
    (*MODEL, "sha256", "provider"),
    multiprocess_mode="livemax",
)
RELOADS = Counter("mnist_model_reloads", "Model reloads by result (loaded, unchanged, refused).", ("result",))
RELOAD_DURATION = Histogram(
    "mnist_model_reload_duration_seconds",
    "Time a reload took (load, checks, warm-up, self-test) by result.",
    ("result",),
    buckets=LATENCY_BUCKETS,
)


def exposition() -> tuple[bytes, str]:
    """The text format for /metrics, merged over all worker processes in multiprocess mode."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
