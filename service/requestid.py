"""X-Request-ID: the client's (or its proxy's) if it is sane, else a new one. One per request: in the
response header, in error bodies and in every log record about the request, so an operator can follow one
request across the proxy and the service."""

from __future__ import annotations

import itertools
import os
import re

HEADER = b"x-request-id"
MAX_LENGTH = 128
# What a UUID, a hex or base64 trace id, or `Root=1-5759e988-bd862e3fe1be46a994272793` (AWS) is made of;
# nothing that could split a header or a log line, or carry markup.
_SANE = re.compile(rb"[A-Za-z0-9._:=+/@-]{1,%d}" % MAX_LENGTH)


def sane(value: bytes) -> bool:
    return _SANE.fullmatch(value) is not None


class IdSource:
    """New ids, 32 hex digits like a UUID's: a random per-process prefix and a counter. Unique across
    workers and restarts without uuid4's read of os.urandom per request."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"
