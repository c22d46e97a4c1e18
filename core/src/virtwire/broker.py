"""The broker contract: how shared channels reach other gateways.

Most channels are local to one gateway (host metrics, log files): they never leave the process
and publishing on them is what :class:`virtwire.hub.Channel` always did. A *shared* channel
(:class:`SharedChannel`: ``vm-status``, ``system-event``) carries a position per frame
(``offset``, ``epoch``) and a bounded history, so that a client that reconnects can ask for what
it missed (``since``). With no broker registered the position is kept in memory by the channel
itself (one gateway). A broker (the ``register_broker`` hook, e.g. the Redis plugin) takes over
the shared channels: it assigns positions, carries frames to every gateway (this one included),
keeps the history and the latest value per key, and forwards requests (``vm-control``) to the
gateway that owns a key.

A frame crosses the broker as its encoded text, *open* (without the closing ``}``): the broker
appends ``,"offset":N,"epoch":"E"}`` (:func:`close_frame`) once, where the offset is assigned;
nobody re-serialises it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .hub import Hub


class Entry(NamedTuple):
    """One positioned frame of a shared channel's history."""

    offset: int
    key: str | None
    text: str


class History(NamedTuple):
    """What a broker's history holds after some offset: its epoch and the entries."""

    epoch: str
    entries: list[Entry]
    #: The smallest offset still held (1 when nothing was trimmed).
    first: int


#: ``handler(key, data)`` answers a request routed to this gateway (see :meth:`Hub.serve`).
RequestHandler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


def close_frame(open_text: str, offset: int, epoch: str) -> str:
    """The final frame text: an open frame with its position appended."""
    return f'{open_text},"offset":{offset},"epoch":"{epoch}"}}'


@runtime_checkable
class Broker(Protocol):
    """Carries shared channels between gateways. At most one per gateway.

    Every method is called on the event loop and must not block it. ``publish`` and ``forget``
    return at once (queue and send in the background, bounded).
    """

    #: Short name for logs, ``/healthz`` and ``/metrics``.
    name: str

    async def start(self, hub: Hub) -> None:
        """Connect. From now on hand every frame a gateway published on a shared channel to
        ``hub.deliver(channel, offset, epoch, key, text)``, this gateway's own included, and
        load the latest values of latest-value channels with ``hub.load_latest``."""

    async def close(self) -> None:
        """Disconnect and stop every background task."""

    def publish(self, channel: str, open_text: str, key: str | None) -> None:
        """Publish an open frame (see :func:`close_frame`) on a shared channel. When the frame
        cannot reach the broker, deliver it locally with ``hub.deliver_local`` and make sure
        the channel's next position starts a new epoch (a gap is never silent)."""

    def forget(self, channel: str, key: str) -> None:
        """Drop the latest value of ``key`` (a VM that no longer exists)."""

    async def history(self, channel: str, after: int) -> History | None:
        """The channel's history after ``after``; None when the broker has none."""

    async def request(self, kind: str, key: str, data: dict[str, Any]) -> dict[str, Any] | None:
        """Route a request for ``key`` to the gateway that owns it and return its answer, or
        None when this gateway owns it (or nobody does): the caller handles it locally. Raise
        ``VirtwireError`` with the owner's error, or ``BackendUnavailable`` on timeout."""

    def health(self) -> dict[str, Any]:
        """State for ``/healthz``: at least ``{"name": ..., "state": "connected" | ...}``."""
