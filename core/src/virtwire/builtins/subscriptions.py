"""``subscribe`` and ``unsubscribe``: dispatch to the topics plugins register."""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any

from ..errors import ErrorCode, VirtwireError, invalid_field
from ..hookspecs import hookimpl
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
    sub = await topic.subscribe(session, data)
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
