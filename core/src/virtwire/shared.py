"""Shared channels: positioned frames, bounded history and ``since`` recovery.

Every frame of a shared channel carries ``offset`` (1, 2, 3... per channel) and ``epoch`` (an
opaque string that changes whenever the history is lost). Alone, a gateway numbers frames
itself and keeps the last ``hub.history_size`` of them; with a broker, the broker numbers them
and this channel mirrors what it delivers (recent history and latest values), so that most
recoveries need no round trip.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .broker import Entry, close_frame
from .hub import Accept, Channel, Outbox
from .protocol import encode

if TYPE_CHECKING:
    from .hub import Hub


def new_epoch() -> str:
    return secrets.token_hex(4)


class SharedChannel(Channel):
    """A channel whose frames carry a position and are kept in a bounded history."""

    def __init__(self, hub: Hub, name: str, *, latest: bool = False) -> None:
        super().__init__(name, latest=latest)
        self.hub = hub
        self.history: deque[Entry] = deque(maxlen=max(1, hub.history_size))
        self.epoch = new_epoch()
        self.offset = 0
        #: Latest text per key as the broker delivered it (keys other gateways own too).
        self.values: dict[str, str] = {}

    def publish(self, type_: str, data: Any, key: Any = None) -> int:
        open_text = encode(type_, data)[:-1]
        broker = self.hub.broker
        if broker is not None:
            broker.publish(self.name, open_text, key)
            return 0  # delivered when the broker hands it back (to every gateway)
        self.offset += 1
        text = close_frame(open_text, self.offset, self.epoch)
        self.history.append(Entry(self.offset, key, text))
        return self._fan_out(text, key, self.name)

    def deliver(self, offset: int, epoch: str, key: str | None, text: str) -> int:
        """A positioned frame from the broker."""
        if epoch != self.epoch:
            self.history.clear()
            self.epoch = epoch
        elif offset <= self.offset:
            return 0  # already delivered (a replay after a reconnect)
        self.offset = offset
        self.history.append(Entry(offset, key, text))
        if self.latest and key is not None:
            self.values[key] = text
        return self._fan_out(text, key, self.name)

    def sync(self, epoch: str, offset: int) -> None:
        """Take the broker's position (at start, or after it lost its history): frames up to
        ``offset`` of ``epoch`` are in the broker's history, not in this gateway's."""
        if epoch != self.epoch:
            self.history.clear()
            self.epoch = epoch
            self.offset = offset

    def deliver_unpositioned(self, open_text: str, key: str | None) -> int:
        """A frame the broker could not carry (it is down): local subscribers still get it."""
        text = open_text + "}"
        if self.latest and key is not None:
            self.values[key] = text
        return self._fan_out(text, key, self.name)

    def forget(self, key: str) -> None:
        self.values.pop(key, None)
        broker = self.hub.broker
        if broker is not None:
            broker.forget(self.name, key)

    def position(self) -> dict[str, Any]:
        return {"offset": self.offset, "epoch": self.epoch}

    def local_since(self, offset: int, epoch: str) -> list[Entry] | None:
        """Entries after ``offset`` from this gateway's own history, or None if it cannot
        tell (another epoch, or trimmed)."""
        if epoch != self.epoch:
            return None
        if offset >= self.offset:
            return [] if offset == self.offset else None
        if not self.history or offset < self.history[0].offset - 1:
            return None
        return [e for e in self.history if e.offset > offset]

    async def recovery(self, offset: int, epoch: str) -> Recovery:
        """Plan the recovery of a subscriber that saw up to ``(offset, epoch)``."""
        local = self.local_since(offset, epoch)
        if local is not None:
            return Recovery(self, True, [], offset)
        broker = self.hub.broker
        if broker is None:
            return Recovery(self, False, [], offset)
        held = await broker.history(self.name, offset)
        if held is None or held.epoch != epoch or offset < held.first - 1:
            return Recovery(self, False, [], offset)
        return Recovery(self, True, held.entries, offset)


class Recovery:
    """A planned ``since`` recovery: what the broker returned, completed from this gateway's
    history at the moment the subscriber joins (so nothing published in between is lost)."""

    def __init__(self, channel: SharedChannel, recovered: bool, fetched: list[Entry], after: int):
        self.channel = channel
        self.recovered = recovered
        self.fetched = fetched
        self.after = after

    def frames(self) -> list[Entry]:
        """The frames to queue, in order (call right after joining the channel)."""
        if not self.recovered:
            return []
        last = self.fetched[-1].offset if self.fetched else self.after
        tail = [e for e in self.channel.history if e.offset > last]
        return [*self.fetched, *tail]

    def send(self, outbox: Outbox, accept: Accept | None) -> int:
        channel = self.channel
        sent = 0
        for entry in self.frames():
            if accept is not None and not accept(entry.key):
                continue
            if channel.latest:
                sent += outbox.put_latest((channel.name, entry.key), entry.text)
            else:
                sent += outbox.put(entry.text)
        return sent


class BroadcastChannel(SharedChannel):
    """A shared channel delivered to every session ``admit(session, key)`` accepts."""

    def __init__(self, hub: Hub, name: str, admit: Callable[[Any, str | None], bool]) -> None:
        super().__init__(hub, name)
        self.admit = admit

    def publish_text(self, text: str, key: Any = None) -> int:
        delivered = 0
        admit = self.admit
        for session in list(self.hub.sessions):
            if admit(session, key):
                delivered += session.outbox.put(text)
        return delivered
