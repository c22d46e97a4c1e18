"""One follower per log name, shared by every client of that name.

A :class:`Feed` runs ``source.follow(name, ring)`` once, keeps the last lines in a bounded
ring (so a client that joins later gets its history at once, with no gap and no duplicate)
and hands every event to its consumers synchronously. It starts with its first consumer and
stops with its last.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from virtwire.errors import ErrorCode, VirtwireError
from virtwire.logsources import LogLines, LogNotice

if TYPE_CHECKING:
    from virtwire.logsources import LogSource

_serials = itertools.count(1)


class Consumer(Protocol):
    """Who receives a feed's events (a WebSocket client's buffer, a hub channel). Every
    method is called on the event loop and must not block."""

    def history(self, lines: list[str]) -> None:
        """The last lines, on joining and again after a truncated/rotated notice."""

    def lines(self, lines: list[str]) -> None:
        """New lines."""

    def notice(self, kind: str, count: int) -> None:
        """truncated, rotated (then :meth:`history`) or dropped (``count`` lines)."""

    def end(self, error: VirtwireError | None) -> None:
        """The stream ended: deleted (``None``) or failed/refused (``error``)."""


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    ENDED = "ended"


class Ring:
    """The last lines, bounded in count and characters."""

    __slots__ = ("_lines", "max_chars", "max_lines", "size")

    def __init__(self, max_lines: int, max_chars: int) -> None:
        self._lines: deque[str] = deque()
        self.max_lines = max_lines
        self.max_chars = max_chars
        self.size = 0

    def __len__(self) -> int:
        return len(self._lines)

    def clear(self) -> None:
        self._lines.clear()
        self.size = 0

    def extend(self, lines: list[str]) -> None:
        ring = self._lines
        for line in lines[-self.max_lines :]:
            ring.append(line)
            self.size += len(line)
        while ring and (len(ring) > self.max_lines or self.size > self.max_chars):
            self.size -= len(ring.popleft())

    def last(self, count: int) -> list[str]:
        if count <= 0:
            return []
        ring = self._lines
        if count >= len(ring):
            return list(ring)
        return list(itertools.islice(ring, len(ring) - count, None))


class Feed:
    def __init__(self, feeds: Feeds, name: str, source: LogSource) -> None:
        self.feeds = feeds
        self.name = name
        self.source = source
        self.serial = next(_serials)
        self.ring = Ring(feeds.ring_lines, feeds.ring_chars)
        self.consumers: dict[Consumer, int] = {}
        self.holds = 0
        self.state = State.STARTING
        self.error: VirtwireError | None = None
        self._reload = False
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event = asyncio.Event()

    # -- membership --------------------------------------------------------------------
    def join(self, consumer: Consumer, history: int, *, initial: bool = True) -> None:
        """Add ``consumer``; it gets its last ``history`` lines first (unless ``initial``
        is False) and every event from then on."""
        if self.state is State.ENDED:
            consumer.end(self.error)
            return
        self.consumers[consumer] = history
        if self.state is State.READY and initial:
            consumer.history(self.ring.last(history))
        self._start()

    def leave(self, consumer: Consumer) -> None:
        if self.consumers.pop(consumer, None) is not None:
            self._maybe_stop()

    def hold(self) -> None:
        """Keep the feed running without consuming (while a subscriber is being set up)."""
        self.holds += 1
        self._start()

    def release(self) -> None:
        self.holds = max(0, self.holds - 1)
        self._maybe_stop()

    async def wait_ready(self) -> None:
        """Until the history is in; raises the source's VirtwireError if it failed."""
        await self._ready.wait()
        if self.state is State.ENDED and self.error is not None:
            raise self.error

    def last(self, count: int) -> list[str]:
        return self.ring.last(count)

    def _start(self) -> None:
        if self._task is None and self.state is not State.ENDED:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"virtwire-logs feed {self.name}"
            )

    def _maybe_stop(self) -> None:
        if self.consumers or self.holds or self.state is State.ENDED:
            return
        self.state = State.ENDED
        self.feeds.forget(self)
        self._ready.set()
        if self._task is not None:
            self._task.cancel()

    # -- the follower ------------------------------------------------------------------
    async def _run(self) -> None:
        stream = self.source.follow(self.name, self.feeds.ring_lines)
        try:
            async for event in stream:
                if self.state is State.ENDED:
                    return
                self._dispatch(event)
            self._finish(None)
        except asyncio.CancelledError:
            raise
        except VirtwireError as exc:
            self._finish(exc)
        except Exception as exc:
            self.feeds.log.error(
                "log source failed",
                source=getattr(self.source, "name", "?"),
                file=self.name,
                error=f"{type(exc).__name__}: {exc}",
            )
            self._finish(VirtwireError(ErrorCode.INTERNAL_ERROR, "log source failed"))
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    def _dispatch(self, event: Any) -> None:
        if isinstance(event, LogLines):
            if self.state is State.STARTING or self._reload:
                self._reload = False
                self.ring.clear()
                self.ring.extend(event.lines)
                if self.state is State.STARTING:
                    self.state = State.READY
                    self._ready.set()
                for consumer, history in list(self.consumers.items()):
                    consumer.history(self.ring.last(history))
            elif event.lines:
                self.ring.extend(event.lines)
                for consumer in list(self.consumers):
                    consumer.lines(event.lines)
        elif isinstance(event, LogNotice):
            if self.state is State.STARTING:
                self._dispatch(LogLines([]))
            if event.kind == "deleted":
                self._finish(None)
                return
            if event.kind == "not-found":
                self._finish(VirtwireError(ErrorCode.LOG_NOT_FOUND, "log not found"))
                return
            if event.kind in ("truncated", "rotated"):
                self._reload = True
            for consumer in list(self.consumers):
                consumer.notice(event.kind, event.count)

    def _finish(self, error: VirtwireError | None) -> None:
        if self.state is State.ENDED:
            return
        if error is None and self.state is State.STARTING:
            error = VirtwireError(ErrorCode.LOG_NOT_FOUND, "log not found")
        self.state = State.ENDED
        self.error = error
        self.feeds.forget(self)
        self._ready.set()
        if error is not None:  # the reason stays in the server's log, not in the client's text
            self.feeds.log.info(
                "log stream unavailable",
                file=self.name,
                code=error.code,
                reason=error.details if error.details is not None else error.message,
            )
        consumers = list(self.consumers)
        self.consumers.clear()
        for consumer in consumers:
            consumer.end(error)


class Feeds:
    """The live feeds of a gateway, by name."""

    def __init__(self, log: Any, ring_lines: int, ring_chars: int) -> None:
        self.log = log
        self.ring_lines = ring_lines
        self.ring_chars = ring_chars
        self._live: dict[str, Feed] = {}

    def __len__(self) -> int:
        return len(self._live)

    def get(self, name: str, source: LogSource) -> Feed:
        """The running feed of ``name``, or a new one (started by its first consumer)."""
        feed = self._live.get(name)
        if feed is None or feed.state is State.ENDED:
            feed = self._live[name] = Feed(self, name, source)
        return feed

    def live(self, name: str) -> Feed | None:
        return self._live.get(name)

    def forget(self, feed: Feed) -> None:
        if self._live.get(feed.name) is feed:
            del self._live[feed.name]

    async def close(self) -> None:
        feeds = list(self._live.values())
        self._live.clear()
        tasks = []
        for feed in feeds:
            feed.state = State.ENDED
            if feed._task is not None:
                feed._task.cancel()
                tasks.append(feed._task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
