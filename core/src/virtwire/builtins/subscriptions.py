"""``subscribe`` and ``unsubscribe``: dispatch to the topics plugins register."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import ErrorCode, VirtwireError, invalid_field
from ..hookspecs import hookimpl
from ..shared import Recovery, SharedChannel
from ..topics import Reply

if TYPE_CHECKING:
    from ..gateway import Gateway
    from ..session import Session
    from ..topics import Subscription, Topic


#: Close tasks of replaced subscriptions still running (kept so they are not collected).
_closing: set[asyncio.Future[Any]] = set()


def _topic(session: Session, data: dict[str, Any]) -> Topic:
    name = data.get("topic")
    if not isinstance(name, str):
        raise invalid_field("data.topic", "Expected `str`")
    topics = session.gateway.topics
    topic = topics.get(name)
    if topic is None:
        raise VirtwireError(
            ErrorCode.UNKNOWN_TOPIC,
            session.gateway.catalogue(
                "message.unknown_topic", topic=name, available=", ".join(sorted(topics))
            ),
            details={"topic": name, "available": sorted(topics)},
        )
    return topic


async def _close(session: Session, sub: Subscription) -> None:
    result = sub.close()
    if inspect.isawaitable(result):
        await result


async def subscribe(session: Session, data: dict[str, Any]) -> Reply:
    topic = _topic(session, data)
    session.require(topic.scope)
    limit = session.gateway.settings.server.max_subscriptions
    if len(session.subscriptions) >= limit and topic.key(data) not in session.subscriptions:
        raise VirtwireError(
            ErrorCode.RATE_LIMITED,
            session.gateway.catalogue("message.too_many_subscriptions", limit=limit),
            details={"limit": limit},
        )
    since = _since(data)
    sub = await topic.subscribe(session, data)
    recovery = None
    if isinstance(sub.channel, SharedChannel):
        sub.reply.update(sub.channel.position())
        if since is not None:
            recovery = await sub.channel.recovery(since.offset, since.epoch)
            sub.reply["recovered"] = recovery.recovered
            if recovery.recovered:
                sub.start = _recovering(sub, recovery)
    elif since is not None:
        sub.reply["recovered"] = False  # this topic keeps no history
    sub.topic = topic.name
    if session.close_code is not None:  # closed while subscribing
        await _close(session, sub)
        return Reply({"topic": topic.name, **sub.reply})
    old = session.subscriptions.pop(sub.key, None)
    session.subscriptions[sub.key] = sub

    def then() -> None:
        # Start the new subscription before ending the one it replaces, so that a producer
        # shared through the channel keeps running.
        if sub.start is not None:
            sub.start()
        if old is not None:
            result = old.close()
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                _closing.add(task)
                task.add_done_callback(_closing.discard)

    return Reply({"topic": topic.name, **sub.reply}, then=then)


class Since(msgspec.Struct, forbid_unknown_fields=True):
    """``data.since``: the position of the last frame a client saw on a shared topic."""

    offset: int
    epoch: str


def _since(data: dict[str, Any]) -> Since | None:
    raw = data.get("since")
    if raw is None:
        return None
    try:
        return msgspec.convert(raw, Since)
    except msgspec.ValidationError as exc:
        raise VirtwireError(
            ErrorCode.INVALID_MESSAGE,
            f'invalid data.since: {exc} (expected {{"offset": int, "epoch": str}})',
            details={"field": "data.since", "reason": str(exc)},
        ) from None


def _recovering(sub: Subscription, recovery: Recovery) -> Callable[[], None]:
    """``start`` for a recovered subscription: join, then queue the missed frames (instead of
    the current values, which the missed frames end with)."""

    def start() -> None:
        assert sub.join is not None and sub.outbox is not None
        sub.join()
        recovery.send(sub.outbox, sub.accept)

    return start


async def unsubscribe(session: Session, data: dict[str, Any]) -> dict[str, Any]:
    topic = _topic(session, data)
    key = topic.key(data)
    sub = session.subscriptions.pop(key, None)
    removed = 0
    if sub is not None:
        await _close(session, sub)
        removed = 1
    elif set(data) == {"topic"}:
        # A bare {topic} ends every subscription of that topic.
        for k in [
            k for k in session.subscriptions if isinstance(k, tuple) and k[:1] == (topic.name,)
        ]:
            await _close(session, session.subscriptions.pop(k))
            removed += 1
    if not removed:
        raise VirtwireError(
            ErrorCode.NOT_SUBSCRIBED,
            session.gateway.catalogue("message.not_subscribed", topic=topic.name),
            details={"topic": topic.name},
        )
    return {"topic": topic.name, "removed": removed}


@hookimpl
def register_handlers(register: Any, gateway: Gateway) -> None:
    register("subscribe", subscribe)
    register("unsubscribe", unsubscribe)
