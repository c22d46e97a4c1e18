"""Linux inotify on the event loop (ctypes, no dependency): wake-ups for watched paths.

An event only wakes its listeners; they then look at the file themselves (``stat``), so a
missed or coalesced event costs nothing but latency, and the polling fallback runs the
same code.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Callable

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_CLOEXEC = 0o2000000
IN_NONBLOCK = 0o4000

#: What a followed file's own watch reports: writes, truncation, unlink/rename of it.
FILE_MASK = IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF
#: What its directory's watch reports: names created, deleted, renamed.
DIR_MASK = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF

_HEADER = struct.Struct("iIII")

Listener = Callable[[str], None]


class InotifyUnavailable(OSError):
    """inotify cannot be used here (not Linux, no libc symbol, or a kernel limit)."""


def _libc() -> ctypes.CDLL:
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError) as exc:
        raise InotifyUnavailable(errno.ENOSYS, f"inotify unavailable: {exc}") from None
    return libc


class Watch:
    """One listener's registration; :meth:`close` removes it."""

    __slots__ = ("_inotify", "listener", "wd")

    def __init__(self, inotify: Inotify, wd: int, listener: Listener) -> None:
        self._inotify = inotify
        self.wd = wd
        self.listener = listener

    def close(self) -> None:
        self._inotify._remove(self)


class Inotify:
    """One inotify instance read by the event loop, fanning events out to listeners.

    Watches on the same inode share a watch descriptor; it is removed with its last
    listener. A listener gets the event's name ("" for the watched file itself) and is
    called for every event of its watch, plus on a queue overflow.
    """

    def __init__(self) -> None:
        self._lib = _libc()
        fd = self._lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise InotifyUnavailable(err, f"inotify_init1: {os.strerror(err)}")
        self.fd = fd
        self._listeners: dict[int, list[Watch]] = {}
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._read)
        self.closed = False

    def watch(self, path: str, mask: int, listener: Listener) -> Watch:
        """Watch ``path`` (a symlink is followed, ``/proc/self/fd/N`` names an open file).
        Raises ``OSError`` (e.g. ENOENT, ENOSPC when the watch limit is reached)."""
        wd = self._lib.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch: {os.strerror(err)}", path)
        watch = Watch(self, wd, listener)
        self._listeners.setdefault(wd, []).append(watch)
        return watch

    def _remove(self, watch: Watch) -> None:
        listeners = self._listeners.get(watch.wd)
        if not listeners or watch not in listeners:
            return
        listeners.remove(watch)
        if not listeners:
            del self._listeners[watch.wd]
            if not self.closed:
                self._lib.inotify_rm_watch(self.fd, watch.wd)  # fails harmlessly if gone

    def _read(self) -> None:
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return
        except OSError:
            return
        offset = 0
        size = len(data)
        while offset + _HEADER.size <= size:
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            name = data[offset : offset + length].split(b"\0", 1)[0].decode(errors="replace")
            offset += length
            if mask & IN_Q_OVERFLOW:
                targets = [w for ws in self._listeners.values() for w in ws]
            else:
                targets = list(self._listeners.get(wd, ()))
            if mask & IN_IGNORED:
                self._listeners.pop(wd, None)  # the kernel removed the watch
            for watch in targets:
                watch.listener(name)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self.fd)
        os.close(self.fd)
        self._listeners.clear()
