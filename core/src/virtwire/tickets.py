"""One-time tickets for the console endpoints (``/ws/vnc/{ticket}``, ``/ws/terminal/{ticket}``).

A ``vnc-connect`` or ``terminal-connect`` on ``/ws`` issues a ticket bound to the user, the
console it opens and the token's expiry. A browser library that cannot carry a token (noVNC,
xterm.js's attach addon) opens the ticket URL within ``ttl`` seconds; the ticket works once.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .errors import VirtwireError


class TicketError(VirtwireError):
    """A ticket that cannot be redeemed. ``code`` says why: ``TICKET_UNKNOWN`` (never issued,
    or revoked), ``TICKET_USED``, ``TICKET_EXPIRED``, ``TICKET_FORBIDDEN`` (another user's or
    another kind's ticket)."""


@dataclass(slots=True)
class Ticket:
    """What a ticket grants. ``target`` is the console it opens (whatever the issuer put
    there); ``token_expires_at`` (wall-clock seconds, or None) is when the issuing token
    expires: a connection opened with the ticket must end then."""

    value: str
    kind: str
    user_id: str
    target: Any
    deadline: float  # time.monotonic() after which it can no longer be redeemed
    token_expires_at: float | None

    @property
    def expires_in(self) -> float:
        """Seconds left to redeem it."""
        return max(0.0, self.deadline - time.monotonic())


class TicketStore:
    """Issues and redeems one-time tickets. Bounded: at most ``max_tickets`` live tickets (the
    oldest are dropped first) and as many remembered used ones (to say "used" rather than
    "unknown")."""

    def __init__(self, ttl: float = 30.0, max_tickets: int = 10_000) -> None:
        self.ttl = ttl
        self.max_tickets = max_tickets
        self._live: OrderedDict[str, Ticket] = OrderedDict()
        self._used: OrderedDict[str, float] = OrderedDict()  # value -> deadline

    def __len__(self) -> int:
        return len(self._live)

    def issue(
        self,
        kind: str,
        user_id: str,
        target: Any,
        *,
        token_expires_at: float | None = None,
        ttl: float | None = None,
    ) -> Ticket:
        """A new ticket for ``kind`` (``"vnc"``, ``"terminal"``...), valid ``ttl`` seconds
        (default: the store's) and never beyond the token's expiry."""
        self._sweep()
        now = time.monotonic()
        lifetime = self.ttl if ttl is None else ttl
        if token_expires_at is not None:
            lifetime = min(lifetime, max(0.0, token_expires_at - time.time()))
        ticket = Ticket(
            value=secrets.token_urlsafe(24),
            kind=kind,
            user_id=user_id,
            target=target,
            deadline=now + lifetime,
            token_expires_at=token_expires_at,
        )
        self._live[ticket.value] = ticket
        while len(self._live) > self.max_tickets:
            self._live.popitem(last=False)
        return ticket

    def redeem(self, value: str, kind: str, *, user_id: str | None = None) -> Ticket:
        """Take the ticket ``value`` for ``kind``; it cannot be used again. ``user_id``, when
        the opener also authenticated, must be the ticket's user. Raises
        :class:`TicketError`."""
        ticket = self._live.pop(value, None)
        now = time.monotonic()
        if ticket is None:
            if value in self._used:
                raise TicketError("TICKET_USED", "ticket already used")
            raise TicketError("TICKET_UNKNOWN", "unknown ticket")
        self._remember(value, ticket.deadline)
        if now > ticket.deadline:
            raise TicketError("TICKET_EXPIRED", "ticket expired")
        if ticket.kind != kind:
            raise TicketError("TICKET_FORBIDDEN", f"ticket is for a {ticket.kind} console")
        if user_id is not None and user_id != ticket.user_id:
            raise TicketError("TICKET_FORBIDDEN", "ticket belongs to another user")
        return ticket

    def revoke(self, target: Any) -> int:
        """Drop every live ticket for ``target`` (its console ended); returns how many."""
        values = [v for v, t in self._live.items() if t.target is target]
        for value in values:
            del self._live[value]
        return len(values)

    def _remember(self, value: str, deadline: float) -> None:
        self._used[value] = deadline
        while len(self._used) > self.max_tickets:
            self._used.popitem(last=False)

    def _sweep(self) -> None:
        now = time.monotonic()
        while self._live:
            value, ticket = next(iter(self._live.items()))
            if ticket.deadline >= now:
                break
            del self._live[value]
            self._remember(value, ticket.deadline)
        while self._used:
            value, deadline = next(iter(self._used.items()))
            if deadline + self.ttl >= now:
                break
            del self._used[value]


__all__ = ["Ticket", "TicketError", "TicketStore"]
