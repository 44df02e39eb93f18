"""HTTP limits per connection, enforced in uvicorn's protocol before a request reaches the app.

uvicorn (0.54, httptools, what `uvicorn[standard]` runs) offers one of the limits we need: the keep-alive idle
timeout. It has no limit on the request head (httptools appends every chunk of a header to a growing bytes
value, so a 64 MiB header holds a worker's event loop for seconds), no timeout for a request's head or body
(a connection that sends nothing, half a request line, or headers without their body is held for good), and
`limit_concurrency` only answers text/plain 503 after accepting and parsing a request. h11's
`h11_max_incomplete_event_size` bounds the head, but h11 parses in pure Python (more CPU per request than
httptools, on the hot path of every request) and has no head or body timeout either. So
`LimitedHttpToolsProtocol` subclasses uvicorn's HttpToolsProtocol; `uvicorn_options` selects it. Which
limit is enforced where:

- head size (`max_head_bytes`): `data_received` counts the bytes of the current head *before* the parser
  sees them; a read that would cross the limit is fed only up to it; if the head has not ended there: 431.
  A read that ends one message and starts the next is not counted for the next head, so the bound is the
  limit plus one read (uvloop reads at most 256,000 bytes).
- head time (`head_timeout_s`, from connect or the first byte of a later request) and body time
  (`body_timeout_s`, once the head is in): one timer per connection, armed at connect and whenever a read
  leaves a request incomplete, so a request that arrives in one read costs no timer at all. On expiry: 408
  and close if something of the request came and no response has started; a connection that sent nothing is
  just closed. While we are not reading (a pipelined request waits, or the app has not taken the body yet)
  the delay is ours and the timer restarts, unless the client is not reading our responses either.
- keep-alive idle (`keepalive_timeout_s`): uvicorn's own timer (`timeout_keep_alive`), also re-armed when a
  request answered before its body was in completes (uvicorn leaves that connection without a timer); on
  expiry a client that has not even read our last response is aborted (a close would wait for it to read).
- open connections (`max_connections` per worker): `connection_made`, before any byte is parsed: 503 +
  Retry-After and close, so a flood of connections costs a worker little more than accept and close.
- WebSocket upgrades are off (`ws="none"`): the app has none, and an upgraded connection would leave this
  protocol and its limits.

Every answer here is the service's JSON error (`{"error": ...}`, service/errors.py), counted in
`mnist_errors_total` like any other; so is uvicorn's own 400 for bytes the parser refuses.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from service import errors
from service.errors import ApiError, BadRequest, Busy, HeadTooLarge, Reason, RequestTimeout
from service.settings import Settings

# Where a connection is; plain strings, compared by identity: read several times per request, and an Enum
# member lookup costs more than the check it guards.
HEAD = "head"  # waiting for (the rest of) a request head: on connect, and from the first byte of the next
BODY = "body"  # the head is in, the body is not
IDLE = "idle"  # the last request is complete; the app answers it, then uvicorn's keep-alive timer runs


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head size, head and body time, and connection count limits."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        settings: Settings,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = settings
        self._max_head = settings.max_head_bytes
        self._phase = HEAD
        self._head_bytes = 0  # of the current request head, counted before parsing
        self._heads = 0  # request heads parsed on this connection
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False  # answered with an error: read nothing more

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limit = self.limits.max_connections
        if len(self.connections) > limit:
            message = f"server busy: {limit} open connections to this worker; retry"
            self._refuse(Busy(message, Reason.TOO_MANY_CONNECTIONS))
            return
        self._arm(self.limits.head_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._phase is IDLE:  # the first byte of the next request
            self._phase = HEAD
        if self._phase is HEAD:
            if len(data) > self._max_head - self._head_bytes:
                data = self._feed_to_head_limit(data)
                if self._refused:
                    return
            if self._phase is not BODY:
                self._head_bytes += len(data)
        super().data_received(data)
        if self._timer is None and self._phase is not IDLE and not self._refused:
            self._arm(self.limits.head_timeout_s if self._phase is HEAD else self.limits.body_timeout_s)

    def _feed_to_head_limit(self, data: bytes) -> bytes:
        """Parse `data` only as far as the head limit allows; refuse a head that has not ended there. A
        head that does end there may be followed by a body or the next request: the rest is returned."""
        while self._phase is not BODY and len(data) > self._max_head - self._head_bytes:
            room = self._max_head - self._head_bytes
            heads = self._heads
            super().data_received(data[:room])
            if self._refused:
                break
            if self._heads == heads:
                message = f"request line and headers exceed {self._max_head} bytes"
                self._refuse(HeadTooLarge(message, Reason.HEAD_TOO_LARGE))
                break
            data = data[room:]
        return data

    def on_message_begin(self) -> None:
        self._phase = HEAD  # also where a read ends one request and begins the next
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._phase = BODY
        self._heads += 1
        self._head_bytes = 0
        if self._timer is not None:
            self._cancel()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._phase = IDLE
        if self._timer is not None:
            self._cancel()
        super().on_message_complete()
        if self.cycle.response_complete and self.timeout_keep_alive_task is None and not self._refused:
            # Answered before its body was in (e.g. 413 by Content-Length): uvicorn armed the keep-alive
            # timer at the answer, and the body's bytes disarmed it; the connection is idle from now.
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes httptools cannot parse, as our JSON error."""
        message = "invalid HTTP request: malformed request line, header or body framing"
        self._refuse(BadRequest(message, Reason.INVALID_HTTP))

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing() and self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            super().timeout_keep_alive_handler()

    def _arm(self, delay: float) -> None:
        self._timer = self.loop.call_later(delay, self._expired)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        head = self._phase is HEAD
        timeout = self.limits.head_timeout_s if head else self.limits.body_timeout_s
        if self.flow.read_paused and not self.flow.write_paused:
            self._arm(timeout)  # we are not reading: the wait is ours, not the client's
        elif head and not self._head_bytes:
            self.transport.close()  # connected and sent nothing: there is nothing to answer
        elif head:
            self._refuse(
                RequestTimeout(f"request head not received within {timeout:g} s", Reason.HEAD_TIMEOUT)
            )
        else:
            message = f"request body not received within {timeout:g} s of its head"
            self._refuse(RequestTimeout(message, Reason.BODY_TIMEOUT))

    def _refuse(self, error: ApiError) -> None:
        """Answer `error` and close; stop reading. Where another response is already under way on the
        connection there is no room for ours: the connection ends now (body) or after that response (head)."""
        self._refused = True
        self._cancel()
        errors.count(error)
        cycle = self.cycle
        if self._phase is BODY:
            if cycle.response_started or self.pipeline:
                self.transport.close()
                return
            cycle.disconnected = True  # the app stops waiting for the body; whatever it sends is dropped
            cycle.message_event.set()
        elif cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
            self.flow.pause_reading()
            return
        self.transport.write(self._response(error))
        self.transport.close()

    def _response(self, error: ApiError) -> bytes:
        body = errors.body(error)
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *((name.lower().encode(), value.encode()) for name, value in error.headers.items()),
        ]
        return b"".join(
            [STATUS_LINE[error.status], *(b"%s: %s\r\n" % header for header in headers), b"\r\n", body]
        )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The `uvicorn.Config` arguments that put these limits in place."""
    return {
        "http": partial(LimitedHttpToolsProtocol, settings=settings),
        "ws": "none",
        "timeout_keep_alive": settings.keepalive_timeout_s,
    }
