"""Keepalive deadlines of every WebSocket connection of an event loop, served by one timer.

uvicorn's WebSocket protocols arm timers per connection for keepalive (the next ping, then
the pong's deadline), so N idle connections pinged every T seconds wake the event loop up to
N/T times a second, each time for one ping; on a server that is otherwise idle those
wake-ups are most of the cost of keeping connections open. :class:`Keepalive` keeps the
deadlines in buckets one *tick* wide and serves a whole bucket per wake-up: the pings due
in the same tick go out together and their pongs come back together.

A deadline is served no earlier than asked and at most one tick later (the tick is a
quarter of a second at the default 20 s ping interval, see :func:`tick_for`). A member
is any object with a ``keepalive_slot`` attribute (``None`` when it has no deadline) and a
``keepalive_due()`` method, called on the loop when its deadline has come.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import weakref
from typing import Protocol

log = logging.getLogger("virtwire.keepalive")

#: Widest tick; narrower for short ping intervals (see :func:`tick_for`).
MAX_TICK = 0.25


class Member(Protocol):
    keepalive_slot: int | None

    def keepalive_due(self) -> None: ...


def tick_for(interval: float) -> float:
    """The bucket width for a ping interval: a quarter of a second, or an eighth of a
    shorter interval (deadlines stay within ~12 % of what was asked)."""
    return min(MAX_TICK, interval / 8)


class Keepalive:
    """One loop's keepalive deadlines, in buckets of ``tick`` seconds (see the module)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float) -> None:
        self.loop = loop
        self.tick = tick
        self._buckets: dict[int, dict[Member, None]] = {}
        self._slots: list[int] = []  # heap of the buckets' slots
        self._timer: asyncio.TimerHandle | None = None
        self._armed: int | None = None  # the slot the timer is armed for
        self._served = -1  # the last slot served: new deadlines go after it

    def at(self, member: Member, when: float) -> None:
        """Call ``member.keepalive_due()`` at ``when`` (loop time) or up to one tick later,
        instead of any deadline it had."""
        self.cancel(member)
        slot = max(math.ceil(when / self.tick), self._served + 1)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = {}
            heapq.heappush(self._slots, slot)
            if self._armed is None or slot < self._armed:
                self._arm(slot)
        bucket[member] = None
        member.keepalive_slot = slot

    def cancel(self, member: Member) -> None:
        """Forget ``member``'s deadline, if it has one."""
        slot = member.keepalive_slot
        if slot is None:
            return
        member.keepalive_slot = None
        bucket = self._buckets.get(slot)
        if bucket is not None:
            bucket.pop(member, None)  # an emptied bucket is dropped when its time comes

    def __len__(self) -> int:
        """Members with a deadline."""
        return sum(len(b) for b in self._buckets.values())

    def _arm(self, slot: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = slot
        self._timer = self.loop.call_at(slot * self.tick, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._armed = None
        # a timer may fire a little early (millisecond clocks): 1 % of a tick is tolerated
        now = math.floor(self.loop.time() / self.tick + 0.01)
        slots = self._slots
        while slots and slots[0] <= now:
            slot = heapq.heappop(slots)
            self._served = max(self._served, slot)
            bucket = self._buckets.pop(slot, None)
            if not bucket:
                continue
            for member in bucket:
                member.keepalive_slot = None
            for member in bucket:
                try:
                    member.keepalive_due()
                except Exception:
                    log.exception("keepalive deadline failed")
        self._served = max(self._served, now)
        if slots:
            self._arm(slots[0])


_wheels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, Keepalive]] = (
    weakref.WeakKeyDictionary()
)


def keepalive_for(loop: asyncio.AbstractEventLoop, tick: float) -> Keepalive:
    """The shared :class:`Keepalive` of ``loop`` for ``tick``-wide buckets."""
    wheels = _wheels.get(loop)
    if wheels is None:
        wheels = _wheels[loop] = {}
    wheel = wheels.get(tick)
    if wheel is None:
        wheel = wheels[tick] = Keepalive(loop, tick)
    return wheel


def members_of(loop: asyncio.AbstractEventLoop) -> int:
    """Connections of ``loop`` with a keepalive deadline (for tests and metrics)."""
    return sum(len(w) for w in _wheels.get(loop, {}).values())


__all__ = ["MAX_TICK", "Keepalive", "Member", "keepalive_for", "members_of", "tick_for"]
