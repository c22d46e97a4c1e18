"""The file log source: allow-listed names mapped to files, followed with inotify."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from virtwire.errors import ErrorCode, VirtwireError
from virtwire.logsources import LogEvent, LogLines

from .inotify import Inotify, InotifyUnavailable
from .settings import FileSpec
from .tail import FileTail, TailOptions


class FileSource:
    """A :class:`virtwire.logsources.LogSource` over the ``[plugins.logs.files]`` allow list.

    Each :meth:`follow` opens the file once; the plugin's feeds call it once per name
    however many clients follow that name.
    """

    name = "files"

    def __init__(
        self,
        files: dict[str, FileSpec],
        options: TailOptions,
        marker: Callable[[int], str],
        *,
        use_inotify: bool = True,
        log: Any = None,
    ) -> None:
        self.files = dict(files)
        self.options = options
        self.marker = marker
        self.use_inotify = use_inotify
        self.log = log
        self._inotify: Inotify | None = None
        self._inotify_failed = False

    def names(self) -> list[str]:
        return list(self.files)

    def _get_inotify(self) -> Inotify | None:
        if not self.use_inotify or self._inotify_failed:
            return None
        if self._inotify is None or self._inotify.closed:
            try:
                self._inotify = Inotify()
            except (InotifyUnavailable, OSError) as exc:
                self._inotify_failed = True
                if self.log is not None:
                    self.log.warning(
                        "inotify unavailable; polling log files",
                        error=str(exc),
                        interval=self.options.poll_interval,
                    )
                return None
        return self._inotify

    @property
    def watching(self) -> str:
        """ "inotify" or "polling": how changes are noticed now."""
        return "inotify" if self._inotify is not None and not self._inotify.closed else "polling"

    async def follow(self, name: str, history: int) -> AsyncIterator[LogEvent]:
        spec = self.files.get(name)
        if spec is None:
            raise VirtwireError(ErrorCode.LOG_NOT_FOUND, f"no log named {name!r}")
        tail = FileTail(spec, self.options, self.marker, self._get_inotify)
        try:
            yield LogLines(await tail.open(history))
            while not tail.ended:
                for event in await tail.next_events():
                    yield event
        finally:
            tail.close()

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
