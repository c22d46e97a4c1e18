"""The ``[plugins.logs]`` config section and what it resolves to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
from virtwire.config import state_dir
from virtwire.errors import ConfigError

#: The default file name of the log streaming API document.
DOCUMENT_DEFAULT = "ds_update.log"
#: The name the gateway's own log is served under when no files are configured.
GATEWAY_LOG_NAME = "virtwire.log"


class LogsSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[plugins.logs]``; docs/logs.md describes every option."""

    #: Allow list: stream name -> file path (relative paths are under ``directory``).
    files: dict[str, str] = msgspec.field(default_factory=dict)
    #: Base directory for relative paths, and the place no file may leave through a symlink.
    directory: str | None = None
    #: The file served when the client gives no ``file``. None: ``ds_update.log``, or the
    #: gateway log's name when the gateway log is served.
    default: str | None = None
    #: Name under which the gateway's own log is written and served. None: ``virtwire.log``
    #: when ``files`` is empty, off otherwise. "": off.
    gateway_log: str | None = None
    #: Where the gateway log is written (default: ``<state dir>/virtwire.log``).
    gateway_log_path: str | None = None
    #: Lines of history sent on connect (and again after a truncation or rotation).
    history: int = 50
    #: Upper bound of ``lines`` a ``/ws`` subscriber may ask for.
    max_history: int = 1000
    #: Serve ``/api/v1/ws/logs`` without a token (the document's behaviour).
    public: bool = False
    #: Concurrent ``/api/v1/ws/logs`` connections per client IP address (0: no limit).
    max_connections_per_client: int = 10
    #: A slow client's pending lines beyond these bounds are skipped and counted.
    client_buffer_lines: int = 1000
    client_buffer_bytes: int = 1024 * 1024
    #: Longer lines are cut at this many bytes, with a marker saying how much was cut.
    max_line_bytes: int = 64 * 1024
    #: Seconds to wait for a new file after the followed one was renamed or deleted.
    reopen_grace: float = 1.0
    #: Use inotify to notice changes (falls back to polling where unavailable).
    inotify: bool = True
    #: Seconds between checks when polling.
    poll_interval: float = 0.25

    def __post_init__(self) -> None:
        checks = [
            (self.history >= 0, "history must be >= 0"),
            (self.max_history >= 1, "max_history must be >= 1"),
            (self.max_connections_per_client >= 0, "max_connections_per_client must be >= 0"),
            (self.client_buffer_lines >= 1, "client_buffer_lines must be >= 1"),
            (self.client_buffer_bytes >= 1024, "client_buffer_bytes must be >= 1024"),
            (self.max_line_bytes >= 64, "max_line_bytes must be >= 64"),
            (self.reopen_grace >= 0, "reopen_grace must be >= 0"),
            (self.poll_interval > 0, "poll_interval must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        for name, path in self.files.items():
            if not name or not path:
                raise ValueError("files: names and paths must not be empty")


@dataclass(frozen=True)
class FileSpec:
    """One allow-listed file: where it is and the directory it must stay in."""

    name: str
    path: Path
    root: Path


@dataclass(frozen=True)
class Resolved:
    files: dict[str, FileSpec]
    default: str
    gateway_log: FileSpec | None


def resolve(settings: LogsSettings, state: Callable[[], Path] = state_dir) -> Resolved:
    """Absolute paths for the allow list, the default name and the gateway log (kept in
    ``state()``, the gateway's state directory, unless ``gateway_log_path`` says)."""
    base = Path(settings.directory).expanduser() if settings.directory else None
    if base is not None and not base.is_absolute():
        raise ConfigError(f"[plugins.logs] directory must be an absolute path, not {base}")
    files: dict[str, FileSpec] = {}
    for name, raw in settings.files.items():
        path = Path(raw).expanduser()
        if not path.is_absolute():
            if base is None:
                raise ConfigError(
                    f"[plugins.logs.files] {name!r}: {raw!r} is relative; give an absolute "
                    "path or set [plugins.logs] directory"
                )
            path = base / path
        files[name] = FileSpec(name, path, base if base is not None else path.parent)
    gateway_name = settings.gateway_log
    if gateway_name is None:
        gateway_name = "" if settings.files else GATEWAY_LOG_NAME
    gateway_log = None
    if gateway_name:
        if gateway_name in files:
            raise ConfigError(
                f"[plugins.logs] gateway_log {gateway_name!r} is also a name in "
                "[plugins.logs.files]"
            )
        path = (
            Path(settings.gateway_log_path).expanduser()
            if settings.gateway_log_path
            else state() / GATEWAY_LOG_NAME
        )
        gateway_log = FileSpec(gateway_name, path, path.parent)
        files[gateway_name] = gateway_log
    default = settings.default or (gateway_name if gateway_log and not settings.files else None)
    return Resolved(files, default or DOCUMENT_DEFAULT, gateway_log)
