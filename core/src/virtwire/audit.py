"""The audit stream: who did what to which VM, one JSON object per line (docs/audit.md).

Separate from the gateway's log (which is for operating the service): every ``vm-control``,
console and terminal opened and closed, console ticket redeemed and token refused leaves one
record. Recording costs the event loop a tuple appended to a deque, nothing more: no lock, no
thread woken. The writer thread wakes ``FLUSH`` seconds after the first record since its last
round (at once when the queue is half full; an idle gateway's writer sleeps), formats the
times, serialises the records (msgspec) and appends them to the file in one write, reopening
the file when it was renamed or removed (logrotate without ``copytruncate``). Waking the writer
per record would cost every request a thread switch and a GIL hand-over on the loop's critical
path (measured: ~+190 us on a ``vm-control`` round trip), batching costs it nothing. The queue
is bounded: a record that does not fit is counted (``virtwire_audit_dropped_total``) and the
writer says how many were dropped in an ``audit-dropped`` record once it has caught up.
Shutdown writes everything queued before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import socket
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from .errors import ConfigError, ErrorCode, VirtwireError
from .log import _SECRET_KEYS, redact_text
from .protocol import UtcClock

if TYPE_CHECKING:
    from .config import AuditConfig
    from .session import Session

#: The events the core records (plugins may add their own).
EVENTS = (
    "vm-control",
    "console-open",
    "console-close",
    "terminal-open",
    "terminal-attach",
    "terminal-close",
    "ticket-redeem",
    "endpoint-close",
    "auth-refused",
    "audit-dropped",
)

#: The ``id`` of the ``/ws`` request being handled (set by the connection for every handler).
REQUEST_ID: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "virtwire_request_id", default=None
)

#: Records formatted and written per ``write`` call at most (the write lets the loop have the
#: GIL: a batch holds it for ~0.3 ms at most).
BATCH = 128
#: Seconds from a record to the writer's round that writes it (records reach the file at most
#: about this late).
FLUSH = 0.05


def _redacted(key: Any, value: Any) -> Any:
    """``value`` without secrets: "[REDACTED]" for a secret-named key (``token``,
    ``password``...), secrets inside strings (``token=...``, bearer tokens, console ticket
    paths) replaced, one level of dict and list looked into."""
    if str(key).lower() in _SECRET_KEYS:
        return "[REDACTED]"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redacted(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_text(v) if isinstance(v, str) else v for v in value]
    return value


def _fallback(value: Any) -> Any:
    return str(value)


class AuditLog:
    """The audit stream of one gateway (``gateway.audit_log``; plugins call
    ``gateway.audit(event, **fields)``)."""

    def __init__(self, config: AuditConfig) -> None:
        #: The file records go to (set by :meth:`start`); None: standard error (``"-"``).
        self.path: Path | None = None
        self.enabled = config.enabled
        self.instance = config.instance if config.instance is not None else socket.gethostname()
        self._only = frozenset(config.events) if config.events else None
        self._max = config.queue_size
        self._queue: deque[tuple[float, str, dict[str, Any], bool]] = deque()
        self._kick = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        #: A flush is scheduled on the loop (FLUSH after the first record since the last).
        self._armed = False
        self._flush_timer: asyncio.TimerHandle | None = None
        self._half = max(1, config.queue_size // 2)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._fd = -1
        self._ident: tuple[int, int] | None = None
        self._closed = False
        #: Records written.
        self.records = 0
        #: Records that did not fit in the queue (or were recorded after shutdown).
        self.dropped = 0
        #: Records the writer could not write (the file system refused).
        self.lost = 0
        self._reported = 0
        self._encoder = msgspec.json.Encoder(enc_hook=_fallback)
        self._clock = UtcClock()
        self._error: str | None = None
        self._log: Any = None

    # -- the event loop's side -----------------------------------------------------------
    def record(self, event: str, fields: dict[str, Any], *, redact: bool = False) -> None:
        """Queue one record (cheap: no formatting here). ``fields`` is kept as given: do not
        change it afterwards. ``redact``: replace values of secret-named keys and secrets in
        strings (for fields the core did not choose itself: a plugin's)."""
        if not self.enabled or (self._only is not None and event not in self._only):
            return
        q = self._queue
        if self._closed or len(q) >= self._max:
            self.dropped += 1
            return
        q.append((time.time(), event, fields, redact))
        if len(q) >= self._half and not self._kick.is_set():
            self._kick.set()  # half full: write now rather than at the next round
        elif not self._armed:
            self._arm()

    def _arm(self) -> None:
        """Wake the writer FLUSH seconds from now (an idle gateway's writer sleeps)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._kick.set()  # no loop (not started, or gone): write at once
            return
        self._armed = True
        if threading.get_ident() == self._loop_thread:
            self._flush_timer = loop.call_later(FLUSH, self._flush)
        else:  # a plugin's own thread
            loop.call_soon_threadsafe(self._arm_on_loop)

    def _arm_on_loop(self) -> None:
        assert self._loop is not None
        self._flush_timer = self._loop.call_later(FLUSH, self._flush)

    def _flush(self) -> None:
        self._flush_timer = None
        self._armed = False  # a record from now on schedules the next round
        self._kick.set()

    def request(self, event: str, session: Session | None, **fields: Any) -> AuditedRequest:
        """Record ``event`` for the request the ``with`` block runs: the session's fields,
        ``fields`` (the block may add to the dict it gets), ``outcome`` (``ok``, the error
        code the client got, or ``cancelled``) and ``durationMs``."""
        return AuditedRequest(self, event, session, fields)

    def session_fields(self, session: Session | None) -> dict[str, Any]:
        """``user`` and ``address`` of a ``/ws`` connection, and the request ``id`` being
        handled, if any."""
        fields: dict[str, Any] = {}
        if session is not None:
            fields["user"] = session.user_id
            fields["address"] = session.client
        request = REQUEST_ID.get()
        if request is not None:
            fields["id"] = request
        return fields

    # -- lifespan --------------------------------------------------------------------------
    def start(self, path: Path | None, log: Any) -> None:
        """Open ``path`` (None: standard error; an unusable path stops the start-up) and
        start the writer."""
        self._log = log
        with contextlib.suppress(RuntimeError):  # started outside a loop: kicks only
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
        if not self.enabled or self._thread is not None:
            return
        self.path = path
        if self.path is not None:
            try:
                self._open()
            except OSError as exc:
                raise _unusable(self.path, exc) from None
        self._thread = threading.Thread(target=self._run, name="virtwire-audit", daemon=True)
        self._thread.start()

    def check(self, path: Path | None) -> None:
        """Raise ``ConfigError`` now if ``path`` cannot be opened for appending (creating it,
        mode 0600, if missing): the app factory's early check, so that ``virtwire serve`` says
        so before it starts."""
        if not self.enabled or path is None:
            return
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except OSError as exc:
            raise _unusable(path, exc) from None

    async def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, then stop the writer and close the file."""
        self._closed = True
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self._kick.set()
        await asyncio.get_running_loop().run_in_executor(None, thread.join, timeout)
        self._thread = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- the writer thread -------------------------------------------------------------------
    def _open(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        st = os.fstat(fd)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        self._ident = (st.st_dev, st.st_ino)

    def _reopen_if_moved(self) -> None:
        """Like ``logging.handlers.WatchedFileHandler``: a file renamed or removed (rotated)
        is replaced by a new one at the path."""
        assert self.path is not None
        try:
            st = os.stat(self.path)
            moved = (st.st_dev, st.st_ino) != self._ident
        except FileNotFoundError:
            moved = True
        if moved or self._fd < 0:
            self._open()

    def _run(self) -> None:
        q = self._queue
        while True:
            self._kick.wait()
            self._kick.clear()
            stopping = self._stopping  # read before draining: nothing queued before is left
            while True:
                batch: list[tuple[float, str, dict[str, Any], bool]] = []
                try:
                    while len(batch) < BATCH:
                        batch.append(q.popleft())
                except IndexError:
                    pass
                self._write(batch)  # an empty batch only reports drops, if any
                if len(batch) < BATCH:
                    break
            if stopping:
                return

    def _line(self, stamp: float, event: str, fields: dict[str, Any], redact: bool) -> bytes:
        record: dict[str, Any] = {"time": self._clock(stamp), "event": event}
        if self.instance:
            record["gateway"] = self.instance
        for key, value in fields.items():
            if value is None or key == "time" or key == "event":
                continue
            if key == "durationMs" and isinstance(value, float):
                value = round(value, 3)
            elif redact:
                value = _redacted(key, value)
            record[key] = value
        return self._encoder.encode(record) + b"\n"

    def _write(self, batch: list[tuple[float, str, dict[str, Any], bool]]) -> None:
        lines = []
        for item in batch:
            try:
                lines.append(self._line(*item))
            except Exception as exc:  # a plugin's value msgspec cannot encode: count it
                self.lost += 1
                if self._log is not None:
                    self._log.error("audit record not encodable", event=item[1], error=repr(exc))
        written = len(lines)
        missing = self.dropped + self.lost - self._reported
        if missing > 0 and not self._queue:  # caught up: say how many were dropped
            lines.append(self._line(time.time(), "audit-dropped", {"count": missing}, False))
        else:
            missing = 0
        if not lines:
            return
        data = b"".join(lines)
        try:
            if self.path is not None:
                self._reopen_if_moved()
                fd = self._fd
            else:
                fd = sys.stderr.fileno()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            self.lost += written
            if self._error is None and self._log is not None:
                self._log.error("audit records not written", path=str(self.path), error=str(exc))
            self._error = str(exc)
            return
        if self._error is not None and self._log is not None:
            self._log.warning("audit records written again", path=str(self.path))
        self._error = None
        self.records += len(lines)
        self._reported += missing


def _unusable(path: Path, exc: OSError) -> ConfigError:
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    return ConfigError(f"audit.path: cannot open {path}: {exc.strerror or exc}{where}")


def audit_path(config: AuditConfig, state_dir: Path) -> Path | None:
    """Where the records go: ``path``, or ``audit.log`` in the state directory; None for
    standard error (``"-"``)."""
    if config.path == "-":
        return None
    if config.path:
        return Path(config.path).expanduser()
    return state_dir / "audit.log"


class AuditedRequest:
    """The context manager :meth:`AuditLog.request` returns (a plain class: it runs on every
    audited request, and a generator-based one costs more)."""

    __slots__ = ("event", "fields", "log", "session", "start")

    def __init__(
        self, log: AuditLog, event: str, session: Session | None, fields: dict[str, Any]
    ) -> None:
        self.log = log
        self.event = event
        self.session = session
        self.fields = fields
        self.start = 0.0

    def __enter__(self) -> dict[str, Any]:
        self.start = time.perf_counter()
        return self.fields

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: Any
    ) -> None:
        log = self.log
        if not log.enabled:
            return
        if kind is None:
            outcome: str = "ok"
        elif isinstance(exc, VirtwireError):
            outcome = exc.code
        elif isinstance(exc, Exception):
            outcome = ErrorCode.INTERNAL_ERROR
        else:
            outcome = "cancelled"
        record = log.session_fields(self.session)
        record.update(self.fields)
        record["outcome"] = outcome
        record["durationMs"] = (time.perf_counter() - self.start) * 1000
        log.record(self.event, record)


__all__ = ["EVENTS", "REQUEST_ID", "AuditLog", "audit_path"]
