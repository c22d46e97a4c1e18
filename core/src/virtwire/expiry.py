"""Token expiry of every connection on one timer: a heap of deadlines instead of a timer per
connection (an idle connection then holds a small tuple, not a timer handle)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable


class ExpirySweep:
    """Calls ``expired()`` of each registered owner when its deadline (event-loop time)
    passes. ``set`` replaces an owner's deadline; ``discard`` forgets the owner."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._owners: dict[int, tuple[float, Callable[[], None]]] = {}
        self._ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def new_key(self) -> int:
        return next(self._ids)

    def __len__(self) -> int:
        return len(self._owners)

    def set(self, key: int, delay: float, expired: Callable[[], None]) -> None:
        """Call ``expired()`` in ``delay`` seconds unless set again or discarded before."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(0.0, delay)
        self._owners[key] = (when, expired)
        heapq.heappush(self._heap, (when, key))
        if len(self._heap) > 2 * len(self._owners) + 64:  # stale entries: rebuild
            self._heap = [(w, k) for k, (w, _) in self._owners.items()]
            heapq.heapify(self._heap)
        if self._timer is None or when < self._timer_at:
            self._schedule(loop)

    def discard(self, key: int) -> None:
        self._owners.pop(key, None)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._heap and self._owners.get(self._heap[0][1], (None,))[0] != self._heap[0][0]:
            heapq.heappop(self._heap)  # stale: replaced or discarded
        if self._heap:
            self._timer_at = self._heap[0][0]
            self._timer = loop.call_at(self._timer_at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        due: list[Callable[[], None]] = []
        while self._heap and self._heap[0][0] <= now:
            when, key = heapq.heappop(self._heap)
            owner = self._owners.get(key)
            if owner is not None and owner[0] == when:
                del self._owners[key]
                due.append(owner[1])
        self._schedule(loop)
        for expired in due:
            expired()
