"""The server's log lines: text or JSON lines, each with a UTC timestamp and its request id.

``python -m keel.server --log-format text|json`` hands :func:`logging_config` to
uvicorn, which applies it in the main process and in every worker. Every record
goes to stderr through one handler with :class:`RequestIdFilter`, so a line
written while a request runs (by keel, a library, uvicorn) carries that request's
id. uvicorn's own access log is off: :class:`keel.server.observability.RequestObserver`
writes the one access line per request (logger ``keel.access``).

Text (the default)::

    2025-06-01T12:00:00.123Z INFO keel.access [3f2a9c0d1e2b4a5f] 127.0.0.1 alice "GET /api/v1/runs/ab12" \
        200 512B 3.41ms route=/api/v1/runs/{run_id}

(one line: CLIENT USER "METHOD PATH" STATUS BYTES DURATION route=TEMPLATE; USER is ``-`` until
a request authenticates).

JSON lines: one object per line, ``ts``, ``level``, ``logger``, ``request_id``,
``message``, plus the record's fields (an access line: ``method``, ``path``,
``route``, ``status``, ``duration_ms``, ``bytes``, ``user``, ``client``; a failure:
``status``, ``exc_type``, ``exc_message``, ``traceback``).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from keel.core.urls import mask_urls_in
from keel.server.request_context import current_request_id

__all__ = ["LOG_FORMATS", "JsonFormatter", "RequestIdFilter", "TextFormatter", "logging_config", "utc_timestamp"]

LOG_FORMATS = ("text", "json")


def utc_timestamp(created: float) -> str:
    """``created`` (seconds since the epoch) as ISO 8601 in UTC with milliseconds."""
    seconds = int(created)
    millis = min(int((created - seconds) * 1000), 999)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class RequestIdFilter(logging.Filter):
    """Stamp ``record.request_id`` with the current request's id (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id() or "-"
        return True


class TextFormatter(logging.Formatter):
    """``TIMESTAMP LEVEL LOGGER [REQUEST_ID] MESSAGE`` (a traceback follows on its own lines)."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s", defaults={"request_id": "-"}
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        return utc_timestamp(record.created)

    def format(self, record: logging.LogRecord) -> str:
        # A second net under the errors' own masking: no line leaves with a URL's password.
        return mask_urls_in(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module doc); a traceback is a field, never extra lines."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", None) or "-",
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                out.setdefault(str(key), value)
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
            out["exc_message"] = str(record.exc_info[1])
            out["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["traceback"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return mask_urls_in(json.dumps(out, ensure_ascii=False, default=str))


def logging_config(level: str = "info", log_format: str = "text") -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of the server (uvicorn's ``log_config``).

    keel's and uvicorn's loggers log at ``level``; other libraries at WARNING and above
    whatever ``level`` is (a library's debug output may include request signatures);
    uvicorn's access log is silenced (keel writes its own).
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "formatters": {"keel": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "keel",
                "filters": ["request_id"],
            }
        },
        "root": {"level": "WARNING", "handlers": ["stderr"]},
        "loggers": {
            "keel": {"level": upper},
            "uvicorn": {"level": upper},
            "uvicorn.error": {"level": upper},
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
    }
