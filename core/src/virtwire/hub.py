"""Topics, subscriptions and fan-out.

A :class:`Channel` is a named stream of frames (``vm-status``, ``system-monitor:5000``).
``publish`` encodes a frame once and hands the same text to every subscriber's
:class:`Outbox`. Latest-value channels coalesce per key: while a frame for key K is still
waiting in a slow client's outbox, a newer frame for K replaces it in place. Every outbox
is bounded; a client that falls further behind is closed (close code 4008) without slowing
anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Hashable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from .protocol import encode

if TYPE_CHECKING:
    from .broker import Broker, RequestHandler
    from .metrics import Metrics
    from .shared import BroadcastChannel, SharedChannel

Accept = Callable[[Hashable], bool]


class _Slot:
    """A coalescing entry: the newest text for one (channel, key)."""

    __slots__ = ("key", "text")

    def __init__(self, key: Hashable, text: str) -> None:
        self.key = key
        self.text = text


class Outbox:
    """The bounded send queue of one connection.

    ``put`` and ``put_latest`` never block; when the queue would exceed ``max_bytes`` or
    ``max_messages`` the outbox overflows: it drops its backlog and calls ``on_overflow``.
    """

    __slots__ = (
        "_items",
        "_latest",
        "_room",
        "_waiter",
        "active",
        "closed",
        "direct",
        "max_bytes",
        "max_messages",
        "metrics",
        "on_overflow",
        "overflowed",
        "queued_bytes",
        "start_writer",
    )

    def __init__(
        self,
        max_bytes: int,
        max_messages: int,
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        # made on the first frame that has to wait (most connections never queue one: the
        # direct write path serves them), and given back when drained
        self._items: deque[str | _Slot] | tuple[()] = ()
        self._latest: dict[Hashable, _Slot] = {}
        self._waiter: asyncio.Future[None] | None = None
        self._room: list[tuple[int, asyncio.Future[None]]] = []
        self.queued_bytes = 0
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self.on_overflow = on_overflow
        self.overflowed = False
        self.closed = False
        #: Optional synchronous writer used while the queue is empty and the writer idle
        #: (see virtwire.wire); returns False when it cannot write now.
        self.direct: Callable[[str], bool] | None = None
        #: Counts coalesced frames when set (virtwire.metrics).
        self.metrics: Metrics | None = None
        #: Optional: starts a writer that drains the queue (with ``pop``) and then sets
        #: ``active`` back to False; called when a frame is queued and no writer is active
        #: (a connection served by ``direct`` then keeps no writer task while idle).
        self.start_writer: Callable[[], None] | None = None
        self.active = False

    def _writer_idle(self) -> bool:
        if self._waiter is not None:
            return True  # a consumer waits in get(): the queue is empty
        return self.start_writer is not None and not self.active and not self._items

    def _queued(self) -> None:
        if self._waiter is not None:
            self._wake()
        elif self.start_writer is not None and not self.active:
            self.active = True
            self.start_writer()

    def __len__(self) -> int:
        return len(self._items)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _fits(self, size: int) -> bool:
        if not self._items:
            return True  # one frame always fits an empty queue, whatever its size
        if self.queued_bytes + size > self.max_bytes or len(self._items) >= self.max_messages:
            self._overflow()
            return False
        return True

    def _overflow(self) -> None:
        self.overflowed = True
        self.clear()
        if self.on_overflow is not None:
            self.on_overflow()

    def put(self, text: str) -> bool:
        """Queue one frame. Returns False if the outbox is closed or overflowed."""
        if self.closed or self.overflowed:
            return False
        if self.direct is not None and self._writer_idle() and self.direct(text):
            return True  # the writer was idle and the queue empty: written in place
        size = len(text)
        if not self._fits(size):
            return False
        self._push(text)
        self.queued_bytes += size
        self._queued()
        return True

    def put_latest(self, key: Hashable, text: str) -> bool:
        """Queue a latest-value frame, replacing a still-queued one with the same key."""
        if self.closed or self.overflowed:
            return False
        slot = self._latest.get(key)
        if slot is not None:
            self.queued_bytes += len(text) - len(slot.text)
            slot.text = text
            if self.metrics is not None:
                self.metrics.coalesced += 1
            return True
        if self.direct is not None and self._writer_idle() and self.direct(text):
            return True
        size = len(text)
        if not self._fits(size):
            return False
        slot = _Slot(key, text)
        self._latest[key] = slot
        self._push(slot)
        self.queued_bytes += size
        self._queued()
        return True

    def _push(self, item: str | _Slot) -> None:
        items = self._items
        if not isinstance(items, deque):
            items = self._items = deque()
        items.append(item)

    def pop(self) -> str | None:
        """Take the next frame without waiting (None when empty)."""
        items = self._items
        if not items:
            return None
        assert isinstance(items, deque)
        item = items.popleft()
        if not items:
            self._items = ()
        if isinstance(item, _Slot):
            del self._latest[item.key]
            item = item.text
        self.queued_bytes -= len(item)
        if self._room:
            self._wake_room()
        return item

    async def room(self, limit: int) -> None:
        """Wait until at most ``limit`` bytes are queued (or the outbox is closed): a producer
        that can wait (a console relay) calls this before ``put`` instead of overflowing."""
        if self.queued_bytes <= limit or self.closed or self.overflowed:
            return
        fut = asyncio.get_running_loop().create_future()
        self._room.append((limit, fut))
        try:
            await fut
        finally:
            if not fut.done():
                fut.cancel()
            with contextlib.suppress(ValueError):
                self._room.remove((limit, fut))

    def _wake_room(self, everyone: bool = False) -> None:
        queued = self.queued_bytes
        for limit, fut in list(self._room):
            if (everyone or queued <= limit) and not fut.done():
                fut.set_result(None)

    async def get(self) -> str | None:
        """Wait for the next frame; None once the outbox is closed and drained."""
        while True:
            item = self.pop()
            if item is not None:
                return item
            if self.closed or self.overflowed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def clear(self) -> None:
        self._items = ()
        self._latest.clear()
        self.queued_bytes = 0
        if self._room:
            self._wake_room(True)

    def close(self) -> None:
        """No more frames; :meth:`get` returns what is queued, then None."""
        self.closed = True
        self._wake()
        if self._room:
            self._wake_room(True)


class Subscriber:
    """One subscription's membership in a channel, with an optional key filter (the handle
    :meth:`Channel.add` returns)."""

    __slots__ = ("_member", "accept", "outbox")

    def __init__(self, outbox: Outbox, accept: Accept | None) -> None:
        self.outbox = outbox
        self.accept = accept
        self._member: _Member | None = None

    def set_accept(self, accept: Accept | None) -> None:
        """Change the filter (e.g. when a refreshed token sees other VMs)."""
        self.accept = accept
        if self._member is not None:
            self._member.combine()


class _Member:
    """One outbox in a channel: however many of its subscriptions joined the channel, a
    publish reaches it once (when any of their filters admits the key)."""

    __slots__ = ("accept", "handles", "outbox")

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.handles: list[Subscriber] = []
        self.accept: Accept | None = None

    def combine(self) -> None:
        accepts = [h.accept for h in self.handles]
        if not accepts or any(a is None for a in accepts):
            self.accept = None
        elif len(accepts) == 1:
            self.accept = accepts[0]
        else:
            filters = tuple(a for a in accepts if a is not None)
            self.accept = lambda key: any(f(key) for f in filters)


class Channel:
    """A named stream of frames with subscribers.

    ``on_active(True)`` is called when the first subscriber joins, ``on_active(False)``
    when the last leaves: producers (samplers, tailers, pollers) start and stop with it.
    An outbox that joins a channel more than once (say ``vm-status`` for one VM and
    ``vm-status-all``) gets each frame once.
    """

    #: Set by the hub: fan-out time and frames out are counted (virtwire.metrics).
    metrics: Metrics | None = None

    def __init__(self, name: str, *, latest: bool = False) -> None:
        self.name = name
        self.latest = latest
        self._subscribers: list[_Member] = []
        self._members: dict[int, _Member] = {}
        self._listeners: list[Callable[[bool], Any]] = []

    def __len__(self) -> int:
        return len(self._subscribers)

    def on_active(self, listener: Callable[[bool], Any]) -> None:
        self._listeners.append(listener)

    def _notify(self, active: bool) -> None:
        for listener in list(self._listeners):
            listener(active)

    def add(self, outbox: Outbox, accept: Accept | None = None) -> Subscriber:
        sub = Subscriber(outbox, accept)
        member = self._members.get(id(outbox))
        if member is None:
            member = self._members[id(outbox)] = _Member(outbox)
            self._subscribers.append(member)
        member.handles.append(sub)
        sub._member = member
        member.combine()
        if len(self._subscribers) == 1 and len(member.handles) == 1:
            self._notify(True)
        return sub

    def remove(self, sub: Subscriber) -> None:
        member = sub._member
        if member is None or sub not in member.handles:
            return
        member.handles.remove(sub)
        sub._member = None
        if member.handles:
            member.combine()
            return
        del self._members[id(member.outbox)]
        self._subscribers.remove(member)
        if not self._subscribers:
            self._notify(False)

    def publish(self, type_: str, data: Any, key: Hashable = None) -> int:
        """Encode one frame once and queue it for every subscriber whose filter admits
        ``key``. Returns how many outboxes took it."""
        if not self._subscribers:
            return 0
        return self._fan_out(encode(type_, data), key, type_)

    def _fan_out(self, text: str, key: Hashable, label: str) -> int:
        """:meth:`publish_text`, timed and counted under ``label`` when metrics are on."""
        metrics = self.metrics
        if metrics is None:
            return self.publish_text(text, key)
        start = perf_counter()
        delivered = self.publish_text(text, key)
        metrics.fanout.observe(perf_counter() - start)
        metrics.sent(label, delivered)
        return delivered

    def publish_text(self, text: str, key: Hashable = None) -> int:
        delivered = 0
        if self.latest:
            slot_key = (self.name, key)
            for sub in self._subscribers:
                if sub.accept is None or sub.accept(key):
                    delivered += sub.outbox.put_latest(slot_key, text)
        else:
            for sub in self._subscribers:
                if sub.accept is None or sub.accept(key):
                    delivered += sub.outbox.put(text)
        return delivered

    def send_to(self, outbox: Outbox, type_: str, data: Any, key: Hashable = None) -> bool:
        """Queue one frame for one subscriber through this channel's coalescing (used for
        the current value a new subscriber gets first)."""
        if self.metrics is not None:
            self.metrics.sent(type_)
        return self.send_text(outbox, encode(type_, data), key)

    def send_text(self, outbox: Outbox, text: str, key: Hashable = None) -> bool:
        """:meth:`send_to` for a frame already encoded (a latest value another gateway
        published)."""
        if self.latest:
            return outbox.put_latest((self.name, key), text)
        return outbox.put(text)


class Hub:
    """All channels of a gateway and the set of authenticated connections.

    Plain channels (:meth:`channel`) stay in this process. Shared channels (:meth:`shared`,
    :meth:`broadcast_channel`) carry positions and history and go through ``broker`` when one
    is registered (see :mod:`virtwire.broker`).
    """

    def __init__(self, history_size: int = 1000) -> None:
        self._channels: dict[str, Channel] = {}
        self.sessions: set[Any] = set()
        #: The registered broker (None: this gateway alone, positions kept in memory).
        self.broker: Broker | None = None
        #: Frames kept per shared channel for ``since`` recovery.
        self.history_size = history_size
        self._serving: dict[str, RequestHandler] = {}
        from .metrics import Metrics

        #: Prometheus metrics of this gateway (``/metrics``).
        self.metrics = Metrics()

    def channel(self, name: str, *, latest: bool = False) -> Channel:
        """Get or create the channel ``name``."""
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = Channel(name, latest=latest)
            channel.metrics = self.metrics
        return channel

    def discard(self, channel: Channel) -> bool:
        """Forget ``channel`` if it has no subscribers (for channels named after client
        parameters, such as an interval, so they do not accumulate). Returns True if removed."""
        if len(channel) == 0 and self._channels.get(channel.name) is channel:
            del self._channels[channel.name]
            return True
        return False

    def broadcast(self, type_: str, data: Any, accept: Callable[[Any], bool] | None = None) -> int:
        """Send one frame (encoded once) to every authenticated session ``accept`` admits."""
        text = encode(type_, data)
        delivered = 0
        for session in list(self.sessions):
            if accept is None or accept(session):
                delivered += session.outbox.put(text)
        return delivered

    # -- shared channels (see virtwire.broker) --------------------------------------------
    def shared(self, name: str, *, latest: bool = False) -> SharedChannel:
        """Get or create the shared channel ``name`` (positions, history, crosses gateways)."""
        from .shared import SharedChannel

        channel = self._channels.get(name)
        if not isinstance(channel, SharedChannel):
            channel = SharedChannel(self, name, latest=latest)
            channel.metrics = self.metrics
            self._channels[name] = channel
        return channel

    def broadcast_channel(
        self, name: str, admit: Callable[[Any, str | None], bool]
    ) -> BroadcastChannel:
        """A shared channel whose frames go to every session ``admit(session, key)`` accepts
        (``system-event``) instead of to subscribers."""
        from .shared import BroadcastChannel

        channel = BroadcastChannel(self, name, admit)
        channel.metrics = self.metrics
        self._channels[name] = channel
        return channel

    def shared_channels(self) -> list[SharedChannel]:
        from .shared import SharedChannel

        return [c for c in self._channels.values() if isinstance(c, SharedChannel)]

    def _shared_or_none(self, name: str) -> SharedChannel | None:
        from .shared import SharedChannel

        channel = self._channels.get(name)
        return channel if isinstance(channel, SharedChannel) else None

    def deliver(self, name: str, offset: int, epoch: str, key: str | None, text: str) -> int:
        """A positioned frame from the broker: record it and queue it for local subscribers."""
        channel = self._shared_or_none(name)
        return 0 if channel is None else channel.deliver(offset, epoch, key, text)

    def deliver_local(self, name: str, open_text: str, key: str | None) -> int:
        """A frame the broker could not carry: deliver it here without a position."""
        channel = self._shared_or_none(name)
        return 0 if channel is None else channel.deliver_unpositioned(open_text, key)

    def load_latest(self, name: str, values: dict[str, str]) -> None:
        """Latest values of a latest-value channel as the broker holds them."""
        channel = self._shared_or_none(name)
        if channel is not None:
            channel.values.update(values)

    def serve(self, kind: str, handler: RequestHandler) -> None:
        """Answer requests of ``kind`` routed to this gateway (``vm-control``)."""
        self._serving[kind] = handler

    async def handle(self, kind: str, key: str, data: dict[str, Any]) -> dict[str, Any]:
        """Run a request routed here by the broker."""
        handler = self._serving.get(kind)
        if handler is None:
            raise LookupError(f"no handler for requests of kind {kind!r}")
        return await handler(key, data)

    async def route(self, kind: str, key: str, data: dict[str, Any]) -> dict[str, Any] | None:
        """Ask the broker to run a request on the gateway that owns ``key``; None means
        "handle it here" (no broker, or this gateway owns it)."""
        broker = self.broker
        if broker is None:
            return None
        return await broker.request(kind, key, data)
