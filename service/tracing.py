"""OpenTelemetry traces, exported over OTLP (HTTP/protobuf). Off by default, and then free: no SDK is
loaded and every hook below returns at its first check (`active`), so a request costs one attribute
read per hook and makes no span.

On (MNIST_TRACING, or the standard OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT /
OTEL_TRACES_SAMPLER variables; OTEL_SDK_DISABLED=true keeps it off), each worker exports in batches to the
endpoint the OTEL_EXPORTER_OTLP_* variables name (default http://localhost:4318/v1/traces), sampled as
OTEL_TRACES_SAMPLER says (default: every request, or as its caller's traceparent decided). The spans:

- a server span per request (service/middleware.py `Traced`, HTTP; service/v2/servicer.py, gRPC), which
  continues the caller's W3C `traceparent`; /healthz, /readyz, /metrics and gRPC health are not traced;
- children for the work the request does itself: reading its body (`parse`, `decode`);
- from the batcher, per request: `queue wait` (enqueued to its batch's start) and `batch run` (the run
  that computed it, linked to that batch's span);
- per batch: `batch`, the root of its own trace (it serves many), linked to every request it served, with
  its size in images and requests, the model and its version.

JSON log records written while a span is current carry its `trace_id` and `span_id` (service/logs.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from service.settings import Settings

log = logging.getLogger(__name__)
# Any of these set turns tracing on unless MNIST_TRACING says otherwise.
OTEL_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_SAMPLER")
SERVICE_NAME = "mnist-serve"  # unless OTEL_SERVICE_NAME names it
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_PROPAGATOR = TraceContextTextMapPropagator()
_NOTHING = contextlib.nullcontext()

active = False  # read by every hook first
_tracer: trace.Tracer | None = None
_provider: Any = None  # the SDK's TracerProvider, only when on


def wanted(settings: Settings, environ: Mapping[str, str] = os.environ) -> bool:
    """MNIST_TRACING if set, else whether an OTEL_* variable asks for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if settings.tracing is not None:
        return settings.tracing
    return any(environ.get(name) for name in OTEL_VARIABLES)


def configure(settings: Settings, version: str) -> None:
    """This worker's tracer (create_app calls it): the SDK and the exporter are imported only when on."""
    global active, _tracer, _provider
    shutdown()
    if not wanted(settings):
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {"service.version": version, "process.pid": os.getpid()}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = SERVICE_NAME
    _provider = TracerProvider(resource=Resource.create(attributes))  # sampler: OTEL_TRACES_SAMPLER
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = _provider.get_tracer("service")
    active = True
    log.info("tracing on: spans exported over OTLP/HTTP", extra={"event": "tracing"})


def shutdown() -> None:
    """Export what is still buffered (bounded by the SDK's export timeout) and stop tracing."""
    global active, _tracer, _provider
    provider, _provider, _tracer, active = _provider, None, None, False
    if provider is not None:
        provider.shutdown()


def server_span(
    name: str, carrier: Mapping[str, str], attributes: Mapping[str, Any]
) -> AbstractContextManager[trace.Span]:
    """The current span for one request, continuing the caller's `traceparent` from `carrier` (its
    headers or metadata, lower-case keys)."""
    parent = _PROPAGATOR.extract(carrier)
    return _tracer.start_as_current_span(
        name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
    )


def span(name: str) -> AbstractContextManager[Any]:
    """A child of the current span for a piece of a request's own work; nothing when tracing is off."""
    if not active:
        return _NOTHING
    return _tracer.start_as_current_span(name)


def current() -> SpanContext | None:
    """The current span's context, for work that finishes elsewhere (the batcher); None when off."""
    if not active:
        return None
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def ids() -> dict[str, str]:
    """`trace_id` and `span_id` of the current span for a log record; empty when off or outside one."""
    if not active:
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}


def now() -> int:
    """A span timestamp (ns since the epoch)."""
    return time.time_ns()


def record_batch(
    requests: Sequence[tuple[SpanContext, int]], started: int, ended: int, attributes: Mapping[str, Any]
) -> None:
    """One batch run after the fact: its own span linked to every request it served, and under each
    request (its span context, when it was queued) a `queue wait` and a `batch run` span."""
    batch = _tracer.start_span(
        "batch",
        context=otel_context.Context(),  # a root: the batch belongs to no one request's trace
        links=[trace.Link(parent) for parent, _ in requests],
        start_time=started,
        attributes=attributes,
    )
    batch.end(ended)
    to_batch = [trace.Link(batch.get_span_context())]
    for parent, enqueued in requests:
        under = trace.set_span_in_context(trace.NonRecordingSpan(parent))
        _tracer.start_span("queue wait", context=under, start_time=enqueued).end(started)
        _tracer.start_span(
            "batch run", context=under, links=to_batch, start_time=started, attributes=attributes
        ).end(ended)


def outcome(span_: trace.Span, status: int, attributes: Mapping[str, Any]) -> None:
    """A server span's outcome: its attributes, and an error status for a server-side failure (5xx, or a
    gRPC status of the same meaning); a client's mistake is not the server's error."""
    span_.set_attributes(attributes)
    if status >= 500:
        span_.set_status(trace.StatusCode.ERROR)
