"""The ASGI layers every request passes: its body limit, everything that watches it (ID, duration, in
flight, access record), and with tracing on its server span. Pure ASGI: a Starlette BaseHTTPMiddleware
layer would cost a task per request."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import errors, logs, metrics, requestid, tracing
from service.errors import Reason, TooLarge


class BodyLimit:
    """Refuses bodies above max_bytes: by Content-Length before reading, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> TooLarge:
        return TooLarge(f"request body exceeds {self.max_bytes} bytes", Reason.BODY_TOO_LARGE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await errors.response(self._too_large(), scope)(scope, receive, send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise self._too_large()
            return message

        await self.app(scope, limited, send)


class Observe:
    """Everything that watches a request, in one pure ASGI layer (each layer costs a call chain per
    request): its ID (X-Request-ID in and out, on the scope state for error bodies and logs), duration by
    route template, method and status, requests in flight, and with MNIST_LOG_FORMAT=json one access
    record. Routes that predict put `model_version` on the state; error responses put `reason`."""

    def __init__(self, app: ASGIApp, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log
        self.ids = requestid.IdSource()
        self.durations: dict[tuple[str, str, int], Histogram] = {}  # children; labels() takes a lock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = dict(scope["headers"]).get(requestid.HEADER)
        request_id = given.decode() if given and requestid.sane(given) else self.ids.next()
        state = scope.setdefault("state", {})  # uvicorn gives each request a copy of the lifespan state
        state["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_observed)
        finally:
            metrics.IN_FLIGHT.dec()
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            key = (route, scope["method"], status)
            duration = self.durations.get(key)
            if duration is None:
                duration = self.durations[key] = metrics.REQUEST_DURATION.labels(
                    "http", route, key[1], str(status)
                )
            duration.observe(seconds)
            if self.access_log:
                self._log(scope, state, route, status, seconds)

    @staticmethod
    def _log(scope: Scope, state: dict[str, Any], route: str, status: int, seconds: float) -> None:
        logs.ACCESS.info(
            "%s %s %d",
            scope["method"],
            route,
            status,
            extra={
                "event": "request",
                "request_id": state["request_id"],
                "method": scope["method"],
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "model_version": state.get("model_version"),
                "reason": state.get("reason"),
            },
        )


class Traced:
    """The server span of each request (service/tracing.py), outside Observe so that the access record is
    written inside it; added only when tracing is on. It continues the caller's `traceparent` and is named
    for the route template once the router has matched it; /healthz, /readyz and /metrics are not traced."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in tracing.UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in (b"traceparent", b"tracestate")
        }
        method = scope["method"]
        attributes = {"http.request.method": method, "url.path": scope["path"]}
        status = 500

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracing.server_span(method, carrier, attributes) as span:
            try:
                await self.app(scope, receive, send_traced)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route is not None:
                    span.update_name(f"{method} {route}")
                state = scope.get("state", {})
                outcome = {
                    "http.response.status_code": status,
                    "mnist.request_id": state.get("request_id", ""),
                }
                if route is not None:
                    outcome["http.route"] = route
                if state.get("model_version"):
                    outcome["mnist.model.version"] = state["model_version"]
                tracing.outcome(span, status, outcome)
