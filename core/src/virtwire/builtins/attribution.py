"""Which user's ``vm-control`` caused a lifecycle event.

Hypervisor events arrive on their own, apart from the request that caused them. Before the
core calls ``backend.control(...)`` it records a pending action per VM: the event the action
should cause (``ACTION_EVENTS``) and the acting user. The first matching event the backend
reports for that VM within ``ttl`` seconds carries that ``userId``; an action that fails
withdraws its entry. Backends therefore report events without a user.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

#: How long an action's user stays attached to the event it should cause.
PENDING_TTL = 60.0
#: Actions per VM waiting for their event (older ones are forgotten first).
PENDING_MAX = 32


@dataclass
class _Entry:
    event: str
    user_id: str
    deadline: float


class PendingActions:
    """Pending control actions per VM, matched by the event they should cause."""

    def __init__(
        self,
        ttl: float = PENDING_TTL,
        limit: int = PENDING_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.limit = limit
        self.clock = clock
        self._pending: dict[str, list[_Entry]] = {}

    def _live(self, vm_id: str) -> list[_Entry]:
        entries = self._pending.get(vm_id)
        if not entries:
            return []
        now = self.clock()
        entries[:] = [e for e in entries if e.deadline > now]
        if not entries:
            del self._pending[vm_id]
        return entries

    def expect(self, vm_id: str, event: str, user_id: str) -> None:
        """``user_id`` started an action on ``vm_id`` that should cause ``event``."""
        entries = self._live(vm_id)
        entries = entries[-(self.limit - 1) :] if self.limit > 1 else []
        entries.append(_Entry(event, user_id, self.clock() + self.ttl))
        self._pending[vm_id] = entries

    def withdraw(self, vm_id: str, event: str, user_id: str) -> None:
        """The action failed: its event will not come."""
        entries = self._live(vm_id)
        for i, e in enumerate(entries):
            if e.event == event and e.user_id == user_id:
                del entries[i]
                break
        if not entries:
            self._pending.pop(vm_id, None)

    def claim(self, vm_id: str, event: str, user_id: str | None = None) -> str | None:
        """The user to attribute ``event`` of ``vm_id`` to (oldest matching action first),
        or None. With ``user_id`` (the backend named the user itself) that user's matching
        entry is used up and ``user_id`` returned."""
        entries = self._live(vm_id)
        for i, e in enumerate(entries):
            if e.event == event and (user_id is None or e.user_id == user_id):
                del entries[i]
                if not entries:
                    self._pending.pop(vm_id, None)
                return e.user_id
        return user_id

    def forget(self, vm_id: str) -> None:
        self._pending.pop(vm_id, None)

    def __len__(self) -> int:
        return sum(len(v) for v in self._pending.values())
