"""Log output: text (the default) or, with MNIST_LOG_FORMAT=json, one JSON object per line for Loki or
Elasticsearch, from our loggers and uvicorn's alike.

Records carry what an operator filters on as `extra` fields (`event`, `request_id`, `route`, `status`,
`reason`, ...), and with tracing on `trace_id` and `span_id` of the span they were written in; the text
format shows only the message. Nothing here sees request bodies, pixels or keys:
only what the callers pass, and they pass none of those.
"""

from __future__ import annotations

import logging
import logging.config
import time
from typing import Any, Literal, TextIO

import orjson
from uvicorn.config import LOGGING_CONFIG

from service import tracing

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# One record per request (JSON format only): method, route template, status, duration, model version, ...
ACCESS = logging.getLogger("service.access")
# LogRecord attributes that are not `extra` fields; uvicorn adds `color_message`, a copy of the message.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "pid", "message", <extras>}`, and `exception` with the traceback."""

    _second = -1
    _stamp = ""

    def _time(self, created: float) -> str:
        """UTC ISO 8601 with milliseconds; the date part is formatted once per second (a record per request
        would otherwise pay ~1.5 µs for datetime's isoformat)."""
        second = int(created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                doc[key] = value
        doc.update(tracing.ids())  # the request's span, when tracing is on
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def uvicorn_config(log_format: LogFormat, level: str) -> dict[str, Any]:
    """uvicorn's `log_config` (its supervisor and each worker apply it before the app starts): its own
    default for text, else every logger into one JSON handler."""
    if log_format == "text":
        return LOGGING_CONFIG
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["default"], "level": level.upper()},
        # uvicorn's loggers: no handlers of their own, so their records reach the JSON handler once. Its
        # access log stays off: Observe writes the request records (with the route template and request ID).
        "loggers": {
            **{
                name: {"handlers": [], "propagate": True}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.asgi")
            },
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }


def configure(log_format: LogFormat, level: str, stream: TextIO | None = None) -> None:
    """The worker's logging (create_app calls this; under `uvicorn --factory` it is the only setup)."""
    if log_format == "text":
        logging.basicConfig(level=level.upper(), format=TEXT_FORMAT, stream=stream)
        return
    config = uvicorn_config(log_format, level)
    if stream is not None:
        config["handlers"]["default"]["stream"] = stream
    logging.config.dictConfig(config)


def access_enabled(log_format: LogFormat) -> bool:
    """A record per request only in JSON: text logs stay as quiet as uvicorn's access-log-off default."""
    return log_format == "json" and ACCESS.isEnabledFor(logging.INFO)
