"""The V2 gRPC service (`inference.GRPCInferenceService`): each RPC takes the served model once (a lease),
checks what REST checks (service/v2/core.py, service/auth.py), runs on the same batcher, and refuses with
the status of the same error (CODES) and its message.

Every call is observed as an HTTP request is (service/middleware.py): its request ID (`x-request-id`
metadata in, trailing metadata out), `mnist_request_duration_seconds` and `mnist_errors_total` with
protocol="grpc" and the HTTP status of the same outcome, requests in flight, the JSON access record, and
with tracing on a server span that continues the caller's `traceparent`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message

from service import auth, errors, logs, metrics, offload, requestid, tracing
from service.errors import ApiError, ClientClosed, Internal, Reason, Timeout
from service.repository import ModelRepository
from service.settings import Settings
from service.v2 import grpc_codec, repository
from service.v2.core import check_model
from service.v2.messages import METHODS, SERVICE, RepositoryIndexResponse

log = logging.getLogger(__name__)
SERVER_NAME = "mnist-serving"
EXTENSIONS = ["model_repository"]
# The server's copy of a deadline starts when the call arrives, so the client's own timer ends the call a
# little earlier (it cancels the stream); a cancel this close to the deadline is the deadline.
DEADLINE_SLACK_S = 0.25
# The gRPC status of each HTTP status this service answers.
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


@dataclass
class Call:
    """One call as the handlers and its observer see it."""

    route: str
    metadata: dict[str, str]
    request_id: str
    status: int = 500  # the HTTP status of its outcome, for the metrics and the access record
    reason: str | None = None  # a refusal's label
    model_version: str | None = None
    trailing: list[tuple[str, str]] = field(default_factory=list)

    @property
    def authorization(self) -> str | None:
        return self.metadata.get("authorization")


Handler = Callable[[Message, Call], Awaitable[Message]]


class InferenceServicer:
    """The RPCs; `handlers()` gives grpc.aio their generic method handlers."""

    def __init__(self, models: ModelRepository, settings: Settings, version: str) -> None:
        self.models = models
        self.settings = settings
        self.version = version
        self.ids = requestid.IdSource()
        self.access_log = logs.access_enabled(settings.log_format)

    def handlers(self) -> grpc.GenericRpcHandler:
        methods = {}
        for name, (request_type, response_type) in METHODS.items():
            methods[name] = grpc.unary_unary_rpc_method_handler(
                self._observed(name, getattr(self, name)),
                request_deserializer=request_type.FromString,
                response_serializer=response_type.SerializeToString,
            )
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    # --- the RPCs ------------------------------------------------------------------------------------

    async def ServerLive(self, request: Message, call: Call) -> Message:
        return METHODS["ServerLive"][1](live=True)

    async def ServerReady(self, request: Message, call: Call) -> Message:
        return METHODS["ServerReady"][1](ready=self.models.current is not None)

    async def ModelReady(self, request: Message, call: Call) -> Message:
        """Ready unless loading or another model (version) is asked for: false, as Triton answers."""
        model = self.models.current
        ready = model is not None and request.name == model.name and request.version in ("", model.version)
        return METHODS["ModelReady"][1](ready=ready)

    async def ServerMetadata(self, request: Message, call: Call) -> Message:
        return METHODS["ServerMetadata"][1](name=SERVER_NAME, version=self.version, extensions=EXTENSIONS)

    async def ModelMetadata(self, request: Message, call: Call) -> Message:
        with self.models.lease() as model:
            check_model(model, request.name, request.version or None)
            return grpc_codec.metadata_response(model.metadata())

    async def ModelInfer(self, request: Message, call: Call) -> Message:
        auth.check_api_key(self.settings, call.authorization)
        with self.models.lease() as model:
            check_model(model, request.model_name, request.model_version or None)
            call.model_version = model.version
            spec = model.signature
            with tracing.span("parse"):
                parsed, raw = await offload.call(
                    request.ByteSize(),
                    grpc_codec.parse_infer_request,
                    request,
                    spec,
                    self.settings.max_batch_items,
                )
            results = await model.infer(parsed.images)
            return grpc_codec.infer_response(
                parsed, results, spec, name=model.name, version=model.version, raw=raw
            )

    async def RepositoryIndex(self, request: Message, call: Call) -> Message:
        auth.check_admin_key(self.settings, call.authorization)
        response = RepositoryIndexResponse()
        for entry in repository.index(self.models):
            if entry["state"] == "READY" or not request.ready:
                response.models.add(**entry)
        return response

    async def RepositoryModelLoad(self, request: Message, call: Call) -> Message:
        auth.check_admin_key(self.settings, call.authorization)
        await repository.load(self.models, request.model_name, "grpc")
        return METHODS["RepositoryModelLoad"][1]()

    # --- what every call goes through -----------------------------------------------------------------

    def _observed(self, name: str, handler: Handler) -> Callable[[Message, grpc.aio.ServicerContext], Any]:
        """`handler` with the call's request ID, metrics, access record, span and error mapping."""
        route = f"/{SERVICE}/{name}"
        durations: dict[int, Any] = {}  # children by status; labels() takes a lock

        async def observed(request: Message, context: grpc.aio.ServicerContext) -> Message:
            started = time.perf_counter()
            metadata = dict(context.invocation_metadata() or ())
            given = metadata.get("x-request-id", "")
            call = Call(route, metadata, given if requestid.sane(given.encode()) else self.ids.next())
            call.trailing.append(("x-request-id", call.request_id))

            def finish() -> None:
                metrics.IN_FLIGHT.dec()
                seconds = time.perf_counter() - started
                duration = durations.get(call.status)
                if duration is None:
                    labels = ("grpc", route, "POST", str(call.status))
                    duration = durations[call.status] = metrics.REQUEST_DURATION.labels(*labels)
                duration.observe(seconds)
                if self.access_log:
                    self._log(call, seconds)

            metrics.IN_FLIGHT.inc()
            if tracing.active:
                return await self._traced(handler, request, context, call, finish)
            try:
                return await self._answer(handler, request, context, call)
            finally:
                finish()

        return observed

    async def _traced(
        self,
        handler: Handler,
        request: Message,
        context: grpc.aio.ServicerContext,
        call: Call,
        finish: Callable[[], None],
    ) -> Message:
        """The call inside its server span; `finish` (metrics, access record) runs inside it too."""
        method = call.route.rsplit("/", 1)[1]
        attributes = {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method}
        with tracing.server_span(call.route.lstrip("/"), call.metadata, attributes) as span:
            try:
                return await self._answer(handler, request, context, call)
            finally:
                code = CODES.get(call.status, grpc.StatusCode.OK).value[0]
                outcome = {"rpc.grpc.status_code": code, "mnist.request_id": call.request_id}
                if call.model_version:
                    outcome["mnist.model.version"] = call.model_version
                tracing.outcome(span, call.status, outcome)
                finish()

    async def _answer(
        self, handler: Handler, request: Message, context: grpc.aio.ServicerContext, call: Call
    ) -> Message:
        """The response; a refusal aborts the call with the gRPC status of its error."""
        try:
            response = await handler(request, call)
        except ApiError as error:
            await self._refuse(context, call, error)
        except asyncio.CancelledError:  # the client cancelled, or its deadline passed: grpc stopped us
            remaining = context.time_remaining()
            if remaining is not None and remaining <= DEADLINE_SLACK_S:
                self._count(call, Timeout("the call's deadline passed"))
            else:
                self._count(call, ClientClosed("the client cancelled the call"))
            raise
        except Exception:
            log.exception("unexpected error on %s", call.route, extra={"request_id": call.request_id})
            await self._refuse(context, call, Internal("internal server error", Reason.INTERNAL))
        call.status = 200
        context.set_trailing_metadata(tuple(call.trailing))
        return response

    @staticmethod
    def _count(call: Call, error: ApiError) -> None:
        errors.count(error, "grpc")
        call.status, call.reason = error.status, error.reason.value

    async def _refuse(self, context: grpc.aio.ServicerContext, call: Call, error: ApiError) -> None:
        """Abort with the error's gRPC status and message; its headers (Retry-After) as trailing metadata."""
        self._count(call, error)
        call.trailing.extend((key.lower(), value) for key, value in error.headers.items())
        await context.abort(
            CODES.get(error.status, grpc.StatusCode.UNKNOWN), error.message, tuple(call.trailing)
        )

    @staticmethod
    def _log(call: Call, seconds: float) -> None:
        logs.ACCESS.info(
            "gRPC %s %d",
            call.route,
            call.status,
            extra={
                "event": "request",
                "protocol": "grpc",
                "request_id": call.request_id,
                "method": "POST",
                "route": call.route,
                "status": call.status,
                "duration_ms": round(seconds * 1000, 3),
                "model_version": call.model_version,
                "reason": call.reason,
            },
        )
