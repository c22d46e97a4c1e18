"""A ``/api/v1/ws/logs`` client's bounded send buffer: lines beyond it are skipped and
counted, and the client is told how many it missed."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from virtwire.errors import CloseCode, ErrorCode, VirtwireError

Text = Callable[..., str]


class ClientBuffer:
    """What one client still has to receive, as text messages, plus how to close.

    ``put`` never blocks: while the buffer holds ``max_lines`` lines or ``max_chars``
    characters, new lines are dropped and counted; the count goes out as the ``logs.dropped``
    text before the next line that fits (or as soon as the buffer is empty). Notices always
    go in. Implements the feed's consumer interface.
    """

    def __init__(self, name: str, text: Text, max_lines: int, max_chars: int) -> None:
        self.name = name
        self.text = text
        self.max_lines = max_lines
        self.max_chars = max_chars
        self._items: deque[str] = deque()
        self._chars = 0
        self.dropped = 0
        self.dropped_total = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _flush_dropped(self) -> None:
        if self.dropped:
            notice = self.text("logs.dropped", count=self.dropped)
            self.dropped = 0
            self._items.append(notice)
            self._chars += len(notice)

    def _put_lines(self, lines: list[str]) -> None:
        if self.close_code is not None:
            return
        items = self._items
        for line in lines:
            if len(items) >= self.max_lines or self._chars + len(line) > self.max_chars:
                self.dropped += 1
                self.dropped_total += 1
                continue
            if self.dropped:
                self._flush_dropped()
            items.append(line)
            self._chars += len(line)
        self._wake()

    def _put_notice(self, text: str) -> None:
        if self.close_code is not None:
            return
        self._flush_dropped()
        self._items.append(text)
        self._chars += len(text)
        self._wake()

    def urgent(self, text: str) -> None:
        """Queue ``text`` ahead of the backlog (``pong``)."""
        if self.close_code is None:
            self._items.appendleft(text)
            self._chars += len(text)
            self._wake()

    def finish(
        self, text: str | None, code: int, reason: str = "", *, discard: bool = False
    ) -> None:
        """Send ``text`` after what is queued (or instead of it: ``discard``), then close
        with ``code``."""
        if self.close_code is not None:
            return
        if discard:
            self._items.clear()
            self._chars = 0
            self.dropped = 0
        if text is not None:
            self._put_notice(text)
        self.close_code = code
        self.close_reason = reason
        self._wake()

    # -- the feed's consumer interface -------------------------------------------------
    def history(self, lines: list[str]) -> None:
        self._put_lines(lines)

    def lines(self, lines: list[str]) -> None:
        self._put_lines(lines)

    def notice(self, kind: str, count: int) -> None:
        if kind == "dropped":
            self.dropped += count
            self.dropped_total += count
            self._wake()
        elif kind == "truncated":
            self._put_notice(self.text("logs.truncated", name=self.name))
        elif kind == "rotated" and count:
            self._put_notice(self.text("logs.rotated_skipped", name=self.name, count=count))
        elif kind == "rotated":
            self._put_notice(self.text("logs.rotated", name=self.name))

    def end(self, error: VirtwireError | None) -> None:
        if error is None:
            self.finish(self.text("logs.deleted", name=self.name), CloseCode.NORMAL, "deleted")
        elif error.code == ErrorCode.LOG_NOT_FOUND:
            self.finish(self.text("logs.not_found", name=self.name), CloseCode.NORMAL, "not found")
        elif error.code == ErrorCode.FORBIDDEN:
            self.finish(
                self.text("logs.forbidden", name=self.name),
                CloseCode.POLICY_VIOLATION,
                "forbidden",
            )
        else:
            self.finish(self.text("internal"), CloseCode.INTERNAL_ERROR, "internal error")

    # -- the writer's side -------------------------------------------------------------
    def pop(self) -> str | None:
        """The next text to send (None when there is none right now)."""
        if not self._items:
            if not self.dropped:
                return None
            self._flush_dropped()
        text = self._items.popleft()
        self._chars -= len(text)
        return text

    async def wait(self) -> None:
        """Until there is something to send or the buffer is finished."""
        if self._items or self.dropped or self.close_code is not None:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
