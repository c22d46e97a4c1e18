"""The plugin's state for one gateway: settings, the file source, feeds, endpoint, topic."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .feed import Feeds
from .filesource import FileSource
from .gatewaylog import GatewayLogFile
from .settings import LogsSettings, resolve
from .tail import TailOptions

if TYPE_CHECKING:
    from virtwire.gateway import Gateway
    from virtwire.logsources import LogSource

NAME = "logs"
#: Characters of history kept per followed file (besides ``max_history`` lines).
RING_CHARS = 8 * 1024 * 1024


class LogsPlugin:
    def __init__(self, gateway: Gateway) -> None:
        from .endpoint import LogsEndpoint
        from .topic import LogsTopic

        self.gateway = gateway
        self.settings: LogsSettings = gateway.plugin_config(NAME)
        resolved = resolve(self.settings, gateway.state_dir)
        self.default = resolved.default
        self.log = gateway.log.bind(plugin=NAME)
        text = gateway.catalogue
        options = TailOptions(
            max_line_bytes=self.settings.max_line_bytes,
            reopen_grace=self.settings.reopen_grace,
            poll_interval=self.settings.poll_interval,
        )
        self.file_source = FileSource(
            resolved.files,
            options,
            lambda count: text("logs.line_cut", count=count),
            use_inotify=self.settings.inotify,
            log=self.log,
        )
        self.gateway_log = (
            GatewayLogFile(resolved.gateway_log.path) if resolved.gateway_log else None
        )
        ring = max(self.settings.history, self.settings.max_history)
        self.feeds = Feeds(self.log, ring, RING_CHARS)
        self.endpoint = LogsEndpoint(self)
        self.topic = LogsTopic(self)

    def source_for(self, name: str) -> LogSource | None:
        """The first registered source that serves ``name`` (None: not on any allow list)."""
        for source in self.gateway.log_sources:
            try:
                if name in source.names():
                    return source
            except Exception as exc:
                self.log.error(
                    "log source names() failed",
                    source=getattr(source, "name", "?"),
                    error=f"{type(exc).__name__}: {exc}",
                )
        return None

    def start(self) -> None:
        if self.gateway_log is not None:
            self.gateway_log.start()
            self.log.info("gateway log file", path=str(self.gateway_log.path), name=self.default)

    async def close(self) -> None:
        await self.feeds.close()
        self.file_source.close()
        if self.gateway_log is not None:
            self.gateway_log.stop()
