"""Structured logging: console output in a terminal, JSON otherwise; secrets redacted.

The standard library's loggers (uvicorn's access and error logs included) go through the
same processors, so a ``?token=...`` in a request line is redacted everywhere.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = {
    "token",
    "password",
    "secret",
    "passphrase",
    "authorization",
    "private_key",
    "privatekey",
    "credentials",
    "ticket",
}
_QUERY_SECRET = re.compile(
    r"((?:^|[?&;\s\"'])(?:token|access_token|password|secret)=)[^&\s\"']*", re.IGNORECASE
)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
#: One-time console tickets travel in the path of the console endpoints.
_TICKET_PATH = re.compile(r"(/ws/(?:terminal|vnc)/)[A-Za-z0-9_-]+")


def redact_text(text: str) -> str:
    """Redact ``token=...`` query values, bearer tokens and console tickets in free text."""
    if "=" in text:
        text = _QUERY_SECRET.sub(r"\1[REDACTED]", text)
    if "earer" in text:
        text = _BEARER.sub(r"\1[REDACTED]", text)
    if "/ws/" in text:
        text = _TICKET_PATH.sub(r"\1[REDACTED]", text)
    return text


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: redact secret-named keys and secrets inside strings."""
    event_dict.pop("color_message", None)
    for key, value in list(event_dict.items()):
        if key.lower() in _SECRET_KEYS and value is not None:
            event_dict[key] = "[REDACTED]"
        elif isinstance(value, str):
            event_dict[key] = redact_text(value)
        elif isinstance(value, tuple | list):
            event_dict[key] = type(value)(
                redact_text(v) if isinstance(v, str) else v for v in value
            )
    return event_dict


class RedactFilter(logging.Filter):
    """Redacts tokens in standard-library records (uvicorn logs request lines with their
    query string), whatever handlers and formatters the host application uses."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg = redacted
            record.args = ()
        return True


_FILTER = RedactFilter()
_REDACTED_LOGGERS = ("uvicorn.error", "uvicorn.access", "uvicorn")


def install_redaction() -> None:
    """Attach the redaction filter to uvicorn's loggers (idempotent)."""
    for name in _REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def configure(fmt: str = "auto", level: str = "info", stream: Any = None) -> None:
    """Set up structlog and route the standard library's logging through it."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[
            # first: a call below the level (debug lines on hot paths) costs a level check,
            # not the timestamp and the rest of the chain
            structlog.stdlib.filter_by_level,
            *shared,
            redact,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redact,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


def get_logger(name: str = "virtwire") -> Any:
    return structlog.get_logger(name)
