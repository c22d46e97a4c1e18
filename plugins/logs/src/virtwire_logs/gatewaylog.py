"""The gateway's own log, written to a file so that the log endpoint has something to serve
out of the box."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from virtwire.log import redact_text


class _Redacting(logging.Formatter):
    """The root handler's formatter, with tokens in free text redacted (uvicorn's request
    lines carry ``?token=``) even when that formatter does not redact itself."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(self.inner.format(record))


class GatewayLogFile:
    """A ``logging.FileHandler`` on the root logger with the root handler's formatter (the
    gateway's structured format), added at start-up and removed at shutdown."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handler: logging.Handler | None = None

    def start(self) -> None:
        if self.handler is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Owner-only: the gateway's log names users, clients and VMs.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)
        handler = logging.FileHandler(self.path, encoding="utf-8")
        root = logging.getLogger()
        formatter = next((h.formatter for h in root.handlers if h.formatter is not None), None)
        handler.setFormatter(
            formatter or logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        root.addHandler(handler)
        self.handler = handler

    def stop(self) -> None:
        handler, self.handler = self.handler, None
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
