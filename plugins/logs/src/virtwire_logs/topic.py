"""The ``logs`` topic on ``/ws``: the same streams as framed ``log-lines`` / ``log-event``.

``subscribe {"topic": "logs", "file": NAME, "lines": 50}``: the subscriber first gets its
last ``lines`` lines (``log-lines`` with ``history: true``), then batches of new lines and
events (``truncated`` and ``rotated``, each followed by the history again; ``dropped`` with
a ``count``; ``deleted``, after which the subscription carries nothing more).
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from virtwire.errors import ErrorCode, VirtwireError
from virtwire.protocol import encode
from virtwire.topics import Subscription

from .feed import State

if TYPE_CHECKING:
    from virtwire.hub import Channel, Outbox, Subscriber
    from virtwire.session import Session

    from .feed import Feed
    from .plugin import LogsPlugin

LINES = "log-lines"
EVENT = "log-event"
#: Seconds between checks whether a client that had lines skipped has caught up.
RETRY = 0.05
#: A batch of lines is split into frames of about this many characters.
FRAME_CHARS = 64 * 1024


def frames(lines: list[str]) -> list[list[str]]:
    """``lines`` in consecutive chunks of at most about ``FRAME_CHARS`` characters (a longer
    line is a frame of its own)."""
    out: list[list[str]] = []
    chunk: list[str] = []
    size = 0
    for line in lines:
        if chunk and size + len(line) > FRAME_CHARS:
            out.append(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + 3
    if chunk:
        out.append(chunk)
    return out


def event_data(
    plugin: LogsPlugin, name: str, kind: str, count: int = 0, error: VirtwireError | None = None
) -> dict[str, Any]:
    text = plugin.gateway.catalogue
    if kind == "dropped":
        message = text("logs.dropped", count=count)
    elif kind == "rotated" and count:
        message = text("logs.rotated_skipped", name=name, count=count)
    elif kind == "error" and error is not None:
        key = {ErrorCode.LOG_NOT_FOUND: "logs.not_found", ErrorCode.FORBIDDEN: "logs.forbidden"}
        message = text(key.get(error.code, "internal"), name=name)
    else:
        message = text(f"logs.{kind}", name=name)
    data: dict[str, Any] = {"file": name, "kind": kind, "message": message}
    if kind == "dropped" or (kind == "rotated" and count):
        data["count"] = count
    if error is not None:
        data["code"] = error.code
    return data


class Member:
    """One subscriber of a file's channel: its history size and its skipped lines."""

    __slots__ = (
        "_retry",
        "budget_chars",
        "budget_messages",
        "dropped",
        "handle",
        "lines",
        "outbox",
        "publisher",
    )

    def __init__(self, publisher: Publisher, outbox: Outbox, lines: int, budget: int) -> None:
        self.publisher = publisher
        self.outbox = outbox
        self.lines = lines
        self.budget_chars = min(budget, outbox.max_bytes // 2)
        self.budget_messages = max(1, outbox.max_messages // 2)
        self.dropped = 0
        self.handle: Subscriber | None = None
        self._retry: asyncio.TimerHandle | None = None

    def accept(self, key: Hashable) -> bool:
        """The channel's per-subscriber filter (``key``: the frame's lines and characters):
        skip frames while this client's outbox is past its budget, counting the lines; tell
        it the count once it has caught up."""
        count, size = key if isinstance(key, tuple) else (1, 0)
        outbox = self.outbox
        if outbox.queued_bytes and (
            outbox.queued_bytes + size > self.budget_chars or len(outbox) >= self.budget_messages
        ):
            self.dropped += count
            if self._retry is None:
                self._retry = asyncio.get_running_loop().call_later(RETRY, self._catch_up)
            return False
        self._tell_dropped()
        return True

    def _tell_dropped(self) -> None:
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            data = event_data(self.publisher.plugin, self.publisher.name, "dropped", dropped)
            self.outbox.put(encode(EVENT, data))

    def _catch_up(self) -> None:
        """While lines are skipped and nothing new comes: tell the count once the client
        has read most of its backlog."""
        self._retry = None
        if self.handle is None or not self.dropped:
            return
        if self.outbox.queued_bytes <= self.budget_chars // 2:
            self._tell_dropped()
        else:
            self._retry = asyncio.get_running_loop().call_later(RETRY, self._catch_up)

    def stop(self) -> None:
        self.handle = None
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def send(self, type_: str, data: dict[str, Any]) -> None:
        text = encode(type_, data)
        if self.accept((len(data.get("lines", ())) or 1, len(text))):
            self.outbox.put(text)


class Publisher:
    """The feed consumer behind one name's hub channel (``logs:NAME``): each event is
    encoded once and published to every subscriber; the history after a truncation or
    rotation goes to each subscriber in its own length. The channel's ``on_active`` joins
    it to the name's running feed with the first subscriber and leaves with the last."""

    def __init__(self, plugin: LogsPlugin, name: str, channel: Channel) -> None:
        self.plugin = plugin
        self.name = name
        self.channel = channel
        self.feed: Feed | None = None
        self.members: dict[Outbox, Member] = {}

    def on_active(self, active: bool) -> None:
        if active:
            self.feed = self.plugin.feeds.live(self.name)
            if self.feed is not None:
                self.feed.join(self, self.plugin.feeds.ring_lines, initial=False)
        elif self.feed is not None:
            self.feed.leave(self)
            self.feed = None

    # -- the feed's consumer interface -------------------------------------------------
    def history(self, lines: list[str]) -> None:
        for member in list(self.members.values()):
            tail = lines[-member.lines :] if member.lines else []
            for chunk in frames(tail) or [[]]:
                member.send(LINES, {"file": self.name, "lines": chunk, "history": True})

    def lines(self, lines: list[str]) -> None:
        for chunk in frames(lines):
            text = encode(LINES, {"file": self.name, "lines": chunk})
            self.channel.publish_text(text, key=(len(chunk), len(text)))

    def notice(self, kind: str, count: int) -> None:
        text = encode(EVENT, event_data(self.plugin, self.name, kind, count))
        self.channel.publish_text(text, key=(count if kind == "dropped" else 0, len(text)))

    def end(self, error: VirtwireError | None) -> None:
        """The stream ended: the last word goes to every subscriber, whose subscription
        then carries nothing more."""
        kind = "deleted" if error is None else "error"
        text = encode(EVENT, event_data(self.plugin, self.name, kind, error=error))
        members = list(self.members.values())
        self.members.clear()
        for member in members:
            member.outbox.put(text)
            if member.handle is not None:
                self.channel.remove(member.handle)
            member.stop()


class LogsTopic:
    """``subscribe`` with ``topic: "logs"``, scope ``logs:read``."""

    name = "logs"
    scope = "logs:read"

    def __init__(self, plugin: LogsPlugin) -> None:
        self.plugin = plugin
        self.publishers: dict[str, Publisher] = {}

    def _file(self, data: dict[str, Any]) -> str:
        name = data.get("file")
        if name is None or name == "":
            return self.plugin.default
        if not isinstance(name, str):
            raise VirtwireError(
                ErrorCode.INVALID_MESSAGE,
                "invalid data.file: Expected `str`",
                details={"field": "data.file", "reason": "Expected `str`"},
            )
        return name

    def key(self, data: dict[str, Any]) -> Hashable:
        name = data.get("file")
        return (self.name, name if isinstance(name, str) and name else self.plugin.default)

    def _lines(self, data: dict[str, Any]) -> int:
        settings = self.plugin.settings
        lines = data.get("lines", settings.history)
        if (
            not isinstance(lines, int)
            or isinstance(lines, bool)
            or not 0 <= lines <= settings.max_history
        ):
            reason = f"expected an integer in 0..{settings.max_history}"
            raise VirtwireError(
                ErrorCode.INVALID_MESSAGE,
                f"invalid data.lines: {reason}",
                details={"field": "data.lines", "reason": reason},
            )
        return lines

    def _publisher(self, name: str) -> Publisher:
        publisher = self.publishers.get(name)
        if publisher is None:
            channel = self.plugin.gateway.hub.channel(f"logs:{name}")
            publisher = self.publishers[name] = Publisher(self.plugin, name, channel)
            channel.on_active(publisher.on_active)
        return publisher

    async def subscribe(self, session: Session, data: dict[str, Any]) -> Subscription:
        plugin = self.plugin
        text = plugin.gateway.catalogue
        name = self._file(data)
        lines = self._lines(data)
        source = plugin.source_for(name)
        shown = name[:100]
        if source is None:
            raise VirtwireError(
                ErrorCode.FORBIDDEN, text("logs.forbidden", name=shown), details={"file": shown}
            )
        session.require(self.scope, resource=name)
        feed = plugin.feeds.get(name, source)
        feed.hold()
        try:
            await feed.wait_ready()
        except VirtwireError as exc:
            feed.release()
            if exc.code == ErrorCode.LOG_NOT_FOUND:
                raise VirtwireError(
                    exc.code, text("logs.not_found", name=name), details={"file": name}
                ) from None
            if exc.code == ErrorCode.FORBIDDEN:
                raise VirtwireError(
                    exc.code, text("logs.forbidden", name=name), details={"file": name}
                ) from None
            raise
        publisher = self._publisher(name)
        member = Member(publisher, session.outbox, lines, plugin.settings.client_buffer_bytes)
        released = False

        def start() -> None:
            history = encode(LINES, {"file": name, "lines": feed.last(lines), "history": True})
            session.outbox.put(history)
            if feed.state is State.ENDED:
                kind = "deleted" if feed.error is None else "error"
                data = event_data(plugin, name, kind, error=feed.error)
                session.outbox.put(encode(EVENT, data))
                return
            publisher.members[session.outbox] = member
            member.handle = publisher.channel.add(session.outbox, member.accept)

        def close() -> None:
            nonlocal released
            if publisher.members.get(session.outbox) is member:
                del publisher.members[session.outbox]
            if member.handle is not None:
                publisher.channel.remove(member.handle)
            member.stop()
            if not released:
                released = True
                feed.release()

        return Subscription(
            key=(self.name, name), close=close, reply={"file": name, "lines": lines}, start=start
        )
