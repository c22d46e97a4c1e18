"""Topics (what ``subscribe`` names) and message handlers (what ``type`` names)."""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .hub import Accept, Channel, Outbox, Subscriber
    from .session import Session

__all__ = ["ChannelTopic", "Handler", "MessageHandler", "Reply", "Subscription", "Topic"]


@dataclass
class Subscription:
    """What :meth:`Topic.subscribe` returns.

    ``key`` identifies the subscription within its connection: subscribing again with the same
    key replaces it, ``unsubscribe`` with data that gives the same key (see
    :meth:`Topic.key`) ends it. ``reply`` is merged into the ``subscribe-response`` data.
    ``close`` is called when it ends (unsubscribe, disconnect); ``start`` (optional) runs
    once the response is queued.
    """

    key: Hashable
    close: Callable[[], Awaitable[None] | None]
    reply: dict[str, Any] = field(default_factory=dict)
    #: Runs after the ``subscribe-response`` is queued: join the channel and queue the
    #: current values here so that they follow the response.
    start: Callable[[], None] | None = None
    #: Set by :meth:`to_channel`: the channel, and ``start`` in its two parts (join without
    #: the current values; queue the current values). ``since`` recovery on a shared channel
    #: replaces the current values with the frames the client missed.
    channel: Channel | None = None
    outbox: Outbox | None = None
    accept: Accept | None = None
    join: Callable[[], None] | None = None
    initial: Callable[[], None] | None = None
    #: Runs when the connection's token is refreshed: raise ``VirtwireError`` (FORBIDDEN)
    #: if the new token no longer allows this subscription (it is then ended), or adapt the
    #: subscription to the new principal. The topic's scope is checked before it, always.
    recheck: Callable[[], None] | None = None
    #: The topic's name (set by ``subscribe``).
    topic: str = ""
    #: Its memberships in channels (``to_channel`` keeps them here).
    members: list[Subscriber] = field(default_factory=list)

    @classmethod
    def to_channel(
        cls,
        channel: Channel,
        outbox: Outbox,
        key: Hashable,
        *,
        accept: Accept | None = None,
        reply: dict[str, Any] | None = None,
        initial: Callable[[], None] | None = None,
    ) -> Subscription:
        """The usual subscription: join ``channel`` (optionally filtered by ``accept``) once
        the response is queued, run ``initial`` (queue the current values) right after,
        and leave the channel on close."""
        handles: list[Subscriber] = []

        def join() -> None:
            handles.append(channel.add(outbox, accept))

        def start() -> None:
            join()
            if initial is not None:
                initial()

        def close() -> None:
            for handle in handles:
                channel.remove(handle)
            handles.clear()

        return cls(
            key=key,
            close=close,
            reply=reply or {},
            start=start,
            channel=channel,
            outbox=outbox,
            accept=accept,
            join=join,
            initial=initial,
            members=handles,
        )


def recheck_subscriptions(session: Session) -> int:
    """After a token refresh, end every subscription the new token no longer allows (topic
    scope, ``authorize`` hooks, the subscription's own ``recheck``); the client gets a
    ``FORBIDDEN`` error per ended subscription (``details.topic``,
    ``details.subscription``). Returns how many were ended."""
    import asyncio
    import inspect

    from .errors import VirtwireError

    topics = session.gateway.topics
    ended = 0
    for key, sub in list(session.subscriptions.items()):
        topic = topics.get(sub.topic)
        try:
            if topic is not None:
                session.require(topic.scope)
            if sub.recheck is not None:
                sub.recheck()
        except VirtwireError as exc:
            if session.subscriptions.get(key) is not sub:
                continue
            del session.subscriptions[key]
            result = sub.close()
            if inspect.isawaitable(result):
                _closing.add(task := asyncio.ensure_future(result))
                task.add_done_callback(_closing.discard)
            exc.details = {"topic": sub.topic, "subscription": sub.reply, "ended": True}
            session.send_error(exc)
            ended += 1
    return ended


_closing: set[Any] = set()


@dataclass
class Reply:
    """A handler result whose ``then`` runs right after the response is queued (e.g. to
    queue a subscription's first values behind its ``subscribe-response``)."""

    data: Any
    then: Callable[[], None] | None = None


@runtime_checkable
class Topic(Protocol):
    """A subscribable stream of frames."""

    #: The ``topic`` value in ``subscribe``.
    name: str
    #: The scope a principal needs (None: any authenticated principal).
    scope: str | None

    def key(self, data: dict[str, Any]) -> Hashable:
        """The subscription key for ``subscribe``/``unsubscribe`` data (must not raise for
        data ``subscribe`` would accept)."""

    async def subscribe(self, session: Session, data: dict[str, Any]) -> Subscription:
        """Add ``session`` as a subscriber (usually ``channel.add(session.outbox, ...)``) and
        queue the current value(s) it should see first. Raise ``VirtwireError`` to refuse."""


class ChannelTopic:
    """The simplest topic: every subscriber joins one hub channel, no parameters.

    ``ChannelTopic("alerts", gateway.hub.channel("alerts"), scope="vm:read")``; publish with
    ``topic.channel.publish("alert", data)``.
    """

    def __init__(self, name: str, channel: Channel, *, scope: str | None = None) -> None:
        self.name = name
        self.channel = channel
        self.scope = scope

    def key(self, data: dict[str, Any]) -> Hashable:
        return (self.name,)

    async def subscribe(self, session: Session, data: dict[str, Any]) -> Subscription:
        return Subscription.to_channel(self.channel, session.outbox, (self.name,))


Handler = Callable[["Session", Any], Awaitable[Any]]


@dataclass(frozen=True)
class MessageHandler:
    """A handler for one client message ``type``.

    ``handler(session, data)`` gets ``data`` validated against ``schema`` (a msgspec Struct)
    when given, else the raw dict. Its return value is the ``<type>-response`` data (None
    means ``{}``) sent when the message had an ``id``. ``concurrent`` handlers run as tasks
    so that a slow one (e.g. a graceful VM shutdown) does not hold up the connection's
    next messages; others run in arrival order.
    """

    type: str
    handler: Handler
    scope: str | None = None
    schema: builtins.type | None = None
    concurrent: bool = False
