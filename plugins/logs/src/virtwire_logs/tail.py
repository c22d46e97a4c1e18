"""Following one allow-listed file: history, new lines, truncation, rotation, deletion."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from virtwire.errors import ErrorCode, VirtwireError
from virtwire.logsources import LogEvent, LogLines, LogNotice

from .inotify import DIR_MASK, FILE_MASK, Inotify, Watch
from .lines import CutMarker, LineSplitter, Tail, read_tail
from .settings import FileSpec

#: Most bytes read from the file per step (the loop gets control back between steps).
READ_MAX = 256 * 1024
#: With inotify, the file is also looked at this often (a safety net, a few stat calls).
SAFETY_POLL = 2.0
#: A file that replaced the followed one (a rotation) is served from its start when it holds
#: at most this much; a larger one from its last this-many bytes (whole lines), and the
#: ``rotated`` notice counts the lines left out.
ROTATED_MAX = 4 * 1024 * 1024


def rotated_start(fd: int, size: int, limit: int | None = None) -> tuple[int, int]:
    """Where to start serving a rotated-to file of ``size`` bytes, and how many lines come
    before that point (blocking: run in a thread)."""
    limit = ROTATED_MAX if limit is None else limit
    if size <= limit:
        return 0, 0
    begin = size - limit
    chunk = os.pread(fd, min(limit, 64 * 1024), begin)
    newline = chunk.find(b"\n")
    start = begin + newline + 1 if newline >= 0 else begin
    skipped, pos = 0, 0
    while pos < start:
        data = os.pread(fd, min(1 << 20, start - pos), pos)
        if not data:
            break
        skipped += data.count(b"\n")
        pos += len(data)
    return start, skipped


@dataclass(frozen=True)
class TailOptions:
    max_line_bytes: int
    reopen_grace: float
    poll_interval: float


class Refused(VirtwireError):
    """The file exists but may not be served (symlink out of its directory, not a regular
    file). Clients get the same text as for a name that is not on the list."""


def _open_checked(spec: FileSpec) -> tuple[int, os.stat_result]:
    """Open the file read-only and check it stays in its directory. Blocking."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(spec.path, flags)
    except OSError as exc:
        raise VirtwireError(
            ErrorCode.LOG_NOT_FOUND, "log file not found", details=exc.strerror
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(ErrorCode.FORBIDDEN, "not a regular file")
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            real = os.path.realpath(spec.path)
        root = os.path.realpath(spec.root)
        if not (real == root or real.startswith(root.rstrip(os.sep) + os.sep)):
            raise Refused(ErrorCode.FORBIDDEN, "file resolves outside its directory")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


class FileTail:
    """One open file followed for one stream (the feed shares it between clients).

    inotify (the file's own watch and its directory's) or, without it, a timer wakes
    :meth:`events`; every wake-up looks at the file: new bytes are read from the open file
    (so a renamed file is drained before switching), a smaller size is a truncation, another
    file under the name a rotation, no file for ``reopen_grace`` seconds a deletion.
    """

    def __init__(
        self,
        spec: FileSpec,
        options: TailOptions,
        marker: CutMarker,
        inotify: Callable[[], Inotify | None],
    ) -> None:
        self.spec = spec
        self.options = options
        self.marker = marker
        self._inotify_factory = inotify
        self._inotify: Inotify | None = None
        self.splitter = LineSplitter(options.max_line_bytes, marker)
        self.fd = -1
        self.ident: tuple[int, int] = (0, 0)
        self.pos = 0
        self.history = 0
        self._file_watch: Watch | None = None
        self._dir_watch: Watch | None = None
        self._woken = True
        self._waiter: asyncio.Future[None] | None = None
        self._gone_since: float | None = None
        self.ended = False

    # -- wake-ups ----------------------------------------------------------------------
    def poke(self, name: str = "") -> None:
        self._woken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _dir_event(self, name: str) -> None:
        if not name or name == self.spec.path.name:
            self.poke()

    async def _sleep(self) -> None:
        if self._woken:
            self._woken = False
            return
        loop = asyncio.get_running_loop()
        timeout = self.options.poll_interval if self._inotify is None else SAFETY_POLL
        if self._gone_since is not None:
            left = self._gone_since + self.options.reopen_grace - time.monotonic()
            timeout = max(0.0, min(timeout, left))
        self._waiter = loop.create_future()
        handle = loop.call_later(timeout, self.poke)
        try:
            await self._waiter
        finally:
            handle.cancel()
            self._waiter = None
        self._woken = False

    def _watch(self) -> None:
        if self._inotify is None:
            return
        try:
            self._file_watch = self._inotify.watch(f"/proc/self/fd/{self.fd}", FILE_MASK, self.poke)
            if self._dir_watch is None:
                self._dir_watch = self._inotify.watch(
                    str(self.spec.path.parent), DIR_MASK, self._dir_event
                )
        except OSError:  # e.g. the watch limit: fall back to polling this file
            self._unwatch()
            self._inotify = None

    def _unwatch(self, directory: bool = True) -> None:
        if self._file_watch is not None:
            self._file_watch.close()
            self._file_watch = None
        if directory and self._dir_watch is not None:
            self._dir_watch.close()
            self._dir_watch = None

    # -- life --------------------------------------------------------------------------
    async def _adopt(self, fd: int, st: os.stat_result) -> list[str]:
        """Make ``fd`` the followed file; returns its last ``history`` lines."""
        if self.fd >= 0:
            self._unwatch(directory=False)
            os.close(self.fd)
        self.fd = fd
        self.ident = (st.st_ino, st.st_dev)
        self.pos = st.st_size
        tail = await self._read_tail(st.st_size)
        self._watch()
        return tail.lines

    async def _adopt_rotated(self, fd: int, st: os.stat_result) -> int:
        """Follow the file that replaced ours from its start (bounded by ``ROTATED_MAX``);
        returns the number of lines left out before that point."""
        self._unwatch(directory=False)
        os.close(self.fd)
        self.fd = fd
        self.ident = (st.st_ino, st.st_dev)
        self.pos, skipped = await asyncio.to_thread(rotated_start, fd, st.st_size)
        self.splitter.reset()
        self._watch()
        return skipped

    async def _read_tail(self, end: int) -> Tail:
        tail = await asyncio.to_thread(
            read_tail, self.fd, end, self.history, self.options.max_line_bytes, self.marker
        )
        self.splitter.reset(tail.partial, tail.partial_extra)
        return tail

    async def open(self, history: int) -> list[str]:
        """Open the file; its last ``history`` complete lines. Raises VirtwireError."""
        self.history = history
        fd, st = await asyncio.to_thread(_open_checked, self.spec)
        self._inotify = self._inotify_factory()
        try:
            return await self._adopt(fd, st)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._unwatch()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.ended = True

    async def next_events(self) -> list[LogEvent]:
        """Wait for a change; the new lines and notices it brought (maybe none)."""
        await self._sleep()
        events = await self._step()
        if self._woken:
            await asyncio.sleep(0)  # more to read: let others run first
        return events

    async def _step(self) -> list[LogEvent]:
        out: list[LogEvent] = []
        size = os.fstat(self.fd).st_size
        if size < self.pos:
            flushed = self.splitter.flush()
            if flushed:
                out.append(LogLines(flushed))
            self.pos = size
            tail = await self._read_tail(size)
            out += [LogNotice("truncated"), LogLines(tail.lines)]
            self._woken = True  # look again at once: more may have been written
            return out
        if size > self.pos:
            data = os.pread(self.fd, min(size - self.pos, READ_MAX), self.pos)
            self.pos += len(data)
            lines = self.splitter.feed(data)
            if lines:
                out.append(LogLines(lines))
            if self.pos < size:
                self._woken = True
                return out
        # caught up: is the name still this file? (one stat; catches a rename or deletion
        # whose event came in the same batch as the last write)
        return await self._check_name(out)

    async def _check_name(self, out: list[LogEvent]) -> list[LogEvent]:
        try:
            st = os.stat(self.spec.path)
            current: tuple[int, int] | None = (st.st_ino, st.st_dev)
        except OSError:
            current = None
        if current == self.ident:
            self._gone_since = None
            return out
        if current is not None:
            try:
                fd, st = await asyncio.to_thread(_open_checked, self.spec)
            except Refused:
                current = None  # replaced by something we may not serve: as if deleted
                self._gone_since = float("-inf")
            except VirtwireError:
                current = None  # vanished again between stat and open
            else:
                flushed = self.splitter.flush()
                if flushed:
                    out.append(LogLines(flushed))
                skipped = await self._adopt_rotated(fd, st)
                self._gone_since = None
                self._woken = True
                # what the new file held before we saw it is new to every client: served
                # as lines from its start (an empty history first), not as its last lines
                out += [LogNotice("rotated", skipped), LogLines([])]
                return out
        now = time.monotonic()
        if self._gone_since is None:
            self._gone_since = now
        if now - self._gone_since < self.options.reopen_grace:
            return out
        flushed = self.splitter.flush()
        if flushed:
            out.append(LogLines(flushed))
        out.append(LogNotice("deleted"))
        self.ended = True
        return out
