"""Bytes to lines: UTF-8 with replacement, partial lines held, huge lines cut."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

BLOCK = 64 * 1024
#: Most bytes read backwards to find the history lines (bounds start-up on huge lines).
MAX_SCAN = 64 * 1024 * 1024

#: Builds the marker appended to a cut line from the number of bytes cut.
CutMarker = Callable[[int], str]


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def cut_line(head: bytes, extra: int, marker: CutMarker) -> str:
    """``head`` (at most the limit) of a line that was ``extra`` bytes longer, as text: the
    head is cut back to a UTF-8 character boundary, then the marker is appended."""
    end = len(head)
    i = end - 1
    while i >= 0 and end - i < 4 and (head[i] & 0xC0) == 0x80:
        i -= 1  # back to the first byte of the last character
    if i >= 0 and head[i] >= 0xC0:
        lead = head[i]
        width = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
        if i + width > end:  # the cut split this character: cut before it
            extra += end - i
            end = i
    return _decode(head[:end]) + marker(extra)


class LineSplitter:
    """Turns chunks of bytes into complete lines.

    The bytes after the last newline are held until their newline arrives; a line longer than
    ``limit`` bytes keeps only its first ``limit`` bytes (memory stays bounded however long
    the line) and is emitted cut, with ``marker(bytes_cut)`` appended.
    """

    __slots__ = ("_extra", "_head", "limit", "marker")

    def __init__(self, limit: int, marker: CutMarker) -> None:
        self.limit = limit
        self.marker = marker
        self._head = bytearray()
        self._extra = 0

    @property
    def pending(self) -> int:
        """Bytes of the incomplete line held (including those already cut)."""
        return len(self._head) + self._extra

    def reset(self, head: bytes = b"", extra: int = 0) -> None:
        self._head = bytearray(head[: self.limit])
        self._extra = extra + max(0, len(head) - self.limit)

    def _hold(self, data: bytes) -> None:
        room = self.limit - len(self._head)
        if room >= len(data):
            self._head += data
        else:
            if room > 0:
                self._head += data[:room]
            self._extra += len(data) - max(room, 0)

    def _line(self, data: bytes) -> str:
        if data.endswith(b"\r"):  # CRLF line ends
            data = data[:-1]
        if len(data) <= self.limit:
            return _decode(data)
        return cut_line(data[: self.limit], len(data) - self.limit, self.marker)

    def _finish_held(self, tail: bytes) -> str:
        self._hold(tail)
        head, extra = bytes(self._head), self._extra
        self._head = bytearray()
        self._extra = 0
        if not extra and head.endswith(b"\r"):  # CRLF line ends
            head = head[:-1]
        return _decode(head) if not extra else cut_line(head, extra, self.marker)

    def feed(self, data: bytes) -> list[str]:
        """The lines ``data`` completes (without their newline)."""
        last = data.rfind(b"\n")
        if last < 0:
            if data:
                self._hold(data)
            return []
        lines: list[str] = []
        start = 0
        if self._head or self._extra:
            first = data.find(b"\n")
            lines.append(self._finish_held(data[:first]))
            start = first + 1
        if start <= last:
            complete = data[start:last]
            if len(complete) <= self.limit and b"\r" not in complete:
                lines.extend(_decode(complete).split("\n"))
            else:
                lines.extend(self._line(part) for part in complete.split(b"\n"))
        rest = data[last + 1 :]
        if rest:
            self._hold(rest)
        return lines

    def flush(self) -> list[str]:
        """The held incomplete line, as a line (when its file will never complete it)."""
        if not self._head and not self._extra:
            return []
        return [self._finish_held(b"")]


@dataclass
class Tail:
    """The end of a file: its last complete lines and the incomplete line after them."""

    lines: list[str]
    partial: bytes
    partial_extra: int


def read_tail(fd: int, end: int, count: int, limit: int, marker: CutMarker) -> Tail:
    """The last ``count`` complete lines before offset ``end`` of ``fd`` and the incomplete
    line that follows them (blocking: run it in a thread). Reads backwards at most
    ``MAX_SCAN`` bytes."""
    newlines: list[int] = []
    need = count + 1
    pos = end
    max_scan = min(MAX_SCAN, (count + 1) * (limit + 1) + BLOCK)
    while pos > 0 and len(newlines) < need and end - pos < max_scan:
        size = min(BLOCK, pos)
        pos -= size
        block = os.pread(fd, size, pos)
        i = len(block)
        while len(newlines) < need:
            j = block.rfind(b"\n", 0, i)
            if j < 0:
                break
            newlines.append(pos + j)
            i = j
    if not newlines:
        start = pos  # no newline at all: everything scanned is one incomplete line
        head = os.pread(fd, min(limit, end - start), start)
        return Tail([], head, end - start - len(head))
    partial_start = newlines[0] + 1
    head = os.pread(fd, min(limit, end - partial_start), partial_start)
    partial_extra = end - partial_start - len(head)
    if len(newlines) > count:
        start = newlines[count] + 1
    elif pos == 0:
        start = 0
    else:  # scan limit reached: begin at the oldest line found in full
        start = newlines[-1] + 1
    splitter = LineSplitter(limit, marker)
    lines: list[str] = []
    offset = start
    while offset < partial_start:
        chunk = os.pread(fd, min(BLOCK, partial_start - offset), offset)
        if not chunk:
            break
        offset += len(chunk)
        lines.extend(splitter.feed(chunk))
        if len(lines) > 2 * count + 64:
            del lines[: len(lines) - count]
    return Tail(lines[-count:] if count else [], head, partial_extra)
