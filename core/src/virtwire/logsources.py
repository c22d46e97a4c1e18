"""Log sources: named, allow-listed streams of lines with history and follow."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, Protocol, runtime_checkable

import msgspec

__all__ = ["LogEvent", "LogLines", "LogNotice", "LogSource", "NoticeKind"]

NoticeKind = Literal["truncated", "rotated", "deleted", "dropped", "not-found"]


class LogLines(msgspec.Struct, frozen=True):
    """A batch of complete lines (decoded UTF-8, no trailing newline)."""

    lines: list[str]


class LogNotice(msgspec.Struct, frozen=True):
    """Something happened to the stream: truncated, rotated, deleted, dropped.

    ``count`` is how many lines were dropped (``dropped`` only). After ``deleted`` the
    stream ends.
    """

    kind: NoticeKind
    count: int = 0


LogEvent = LogLines | LogNotice


@runtime_checkable
class LogSource(Protocol):
    """A provider of named log streams (the file source maps names to allow-listed files)."""

    name: str

    def names(self) -> list[str]:
        """The stream names this source serves (the allow list)."""

    def follow(self, name: str, history: int) -> AsyncIterator[LogEvent]:
        """The last ``history`` lines as one ``LogLines``, then new lines and notices as they
        happen, until the stream ends or the iterator is closed.

        - After ``LogNotice("truncated")`` or ``LogNotice("rotated")`` the next ``LogLines``
          is the last ``history`` lines of the new content.
        - The iterator ending means the stream is gone for good ("deleted").
        - It is called once per name however many clients follow it, and cancelled when the
          last one leaves: release what it holds in ``finally``.
        - Raise ``VirtwireError(LOG_NOT_FOUND)`` if the stream does not exist right now."""
