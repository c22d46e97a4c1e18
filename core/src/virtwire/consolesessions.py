"""The open consoles of every ``/ws`` connection: limits, tickets, cleanup.

A console (a VNC console, a terminal) is opened by a ``/ws`` connection and belongs to it:
it ends when the connection closes (or its token expires, which closes the connection), when
the client disconnects it, when the far end goes away, or when the gateway stops. Every kind of
console shares this machinery through ``gateway.console_sessions``:

- :meth:`ConsoleSessions.reserve` checks the per-connection and per-user limits
  (``[consoles] max_per_connection`` / ``max_per_user``) and holds a place while the console
  opens; :meth:`ConsoleSessions.add` then files it under ``(kind, vm_id)``;
- :meth:`ConsoleSessions.issue_ticket` gives a one-time ticket (``[consoles] ticket_ttl``) for
  the console's browser endpoint (``/ws/vnc/{ticket}``, ``/ws/terminal/{ticket}``), and
  :func:`accept_ticket` does what such an endpoint does first: origin check, subprotocol,
  redeeming with a clear refusal;
- the connection's cleanup calls :meth:`ConsoleSessions.close_session`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from .connection import client_address, header, origin_allowed, token_from_scope
from .errors import CloseCode, ErrorCode, VirtwireError
from .tickets import Ticket, TicketError

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from .gateway import Gateway
    from .session import Session


class Console(Protocol):
    """An open console as the registry sees it."""

    #: ``"vnc"``, ``"terminal"``...: the ticket kind and the first part of its key.
    kind: str
    vm_id: str

    async def close(self, reason: str) -> None:
        """End the console: stop its I/O, tell the client (e.g. ``vnc-closed`` with
        ``reason``), close its browser endpoints. Idempotent; must not raise."""


#: Reasons a console ends (the ``reason`` of ``vnc-closed``/``terminal-closed``).
REASON_CLIENT = "client-disconnect"
REASON_CONNECTION = "connection-closed"
REASON_SHUTDOWN = "gateway-shutdown"
REASON_REPLACED = "replaced"
REASON_TOKEN_EXPIRED = "token-expired"


class ConsoleSessions:
    """Every open console, per ``/ws`` connection and per user."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.config = gateway.settings.consoles
        self._by_session: dict[Session, dict[tuple[str, str], Console]] = {}
        self._reserved: dict[Session, int] = {}
        self._per_user: dict[str, int] = {}

    def __len__(self) -> int:
        return sum(len(c) for c in self._by_session.values())

    def get(self, session: Session, kind: str, vm_id: str) -> Console | None:
        return self._by_session.get(session, {}).get((kind, vm_id))

    def of(self, session: Session) -> list[Console]:
        return list(self._by_session.get(session, {}).values())

    @contextlib.contextmanager
    def reserve(self, session: Session) -> Iterator[None]:
        """Hold a place for a console being opened by ``session``; raises
        ``VirtwireError(RATE_LIMITED)`` past a limit. Use as ``with registry.reserve(s):``
        around the opening, then :meth:`add` inside it."""
        user = session.user_id or ""
        text = self.gateway.catalogue
        per_conn = len(self._by_session.get(session, {})) + self._reserved.get(session, 0)
        if self.config.max_per_connection and per_conn >= self.config.max_per_connection:
            limit = self.config.max_per_connection
            raise VirtwireError(
                ErrorCode.RATE_LIMITED,
                text("console.too_many_connection", limit=limit),
                details={"limit": limit, "per": "connection"},
            )
        if self.config.max_per_user and self._per_user.get(user, 0) >= self.config.max_per_user:
            limit = self.config.max_per_user
            raise VirtwireError(
                ErrorCode.RATE_LIMITED,
                text("console.too_many_user", limit=limit),
                details={"limit": limit, "per": "user"},
            )
        self._reserved[session] = self._reserved.get(session, 0) + 1
        self._per_user[user] = self._per_user.get(user, 0) + 1
        try:
            yield
        finally:
            left = self._reserved.get(session, 1) - 1
            if left:
                self._reserved[session] = left
            else:
                self._reserved.pop(session, None)
            self._release_user(user)

    def add(self, session: Session, console: Console) -> None:
        """File an opened console under ``(kind, vm_id)`` of ``session`` (inside
        :meth:`reserve`)."""
        user = session.user_id or ""
        self._by_session.setdefault(session, {})[(console.kind, console.vm_id)] = console
        self._per_user[user] = self._per_user.get(user, 0) + 1

    def discard(self, session: Session, console: Console) -> bool:
        """Forget ``console`` (it ended) and revoke its tickets; True if it was filed."""
        consoles = self._by_session.get(session)
        key = (console.kind, console.vm_id)
        if consoles is None or consoles.get(key) is not console:
            return False
        del consoles[key]
        if not consoles:
            del self._by_session[session]
        self._release_user(session.user_id or "")
        self.gateway.tickets.revoke(console)
        return True

    def _release_user(self, user: str) -> None:
        left = self._per_user.get(user, 1) - 1
        if left > 0:
            self._per_user[user] = left
        else:
            self._per_user.pop(user, None)

    async def close_session(self, session: Session, reason: str = REASON_CONNECTION) -> None:
        """End every console of ``session`` (its connection is closing)."""
        consoles = self.of(session)
        for console in consoles:
            self.discard(session, console)
        if consoles:
            await asyncio.gather(*(_close(c, reason) for c in consoles))

    def announce(self, session: Session, reason: str) -> None:
        """Tell ``session``'s client now that its consoles are about to end with ``reason``
        (its connection is being closed, e.g. the token expired): consoles that can say so
        (an ``announce(reason)`` method) queue their closing frame; :meth:`close_session`
        follows."""
        for console in self.of(session):
            announce = getattr(console, "announce", None)
            if announce is not None:
                announce(reason)

    async def close_all(self, reason: str = REASON_SHUTDOWN) -> None:
        """End every console (the gateway is stopping)."""
        for session in list(self._by_session):
            await self.close_session(session, reason)

    def issue_ticket(self, session: Session, console: Console) -> Ticket:
        """A one-time ticket for ``console``'s browser endpoint, valid ``ticket_ttl`` seconds
        and never beyond the token's expiry."""
        principal = session.principal
        assert principal is not None
        return self.gateway.tickets.issue(
            console.kind,
            principal.user_id,
            console,
            token_expires_at=principal.expires_at,
            ttl=self.config.ticket_ttl,
        )


async def _close(console: Console, reason: str) -> None:
    try:
        await console.close(reason)
    except Exception:  # a console's close must not stop the others'
        pass


class Admitted:
    """A redeemed ticket, the subprotocol to accept the WebSocket with and the client's
    address (``IP:port``)."""

    __slots__ = ("address", "subprotocol", "ticket")

    def __init__(self, ticket: Ticket, subprotocol: str | None, address: str | None = None) -> None:
        self.ticket = ticket
        self.subprotocol = subprotocol
        self.address = address


async def accept_ticket(
    gateway: Gateway, kind: str, scope: Scope, receive: Receive, send: Send
) -> Admitted | None:
    """The start of a ticket endpoint (``/ws/{kind}/{ticket}``): check the Origin as ``/ws``
    does, redeem the ticket of the path (one use; bound to the user when the client also sends
    a token) and accept the WebSocket, echoing the ``binary`` subprotocol when offered (noVNC's
    default offers none). On refusal the WebSocket is accepted and closed with 1008 (4001 for a
    bad token) and a reason naming the problem (``TICKET_USED: ticket already used``), and None
    is returned. The caller owns the accepted connection."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return None
    path = scope.get("path", "")
    if not origin_allowed(scope, gateway.settings.server.allowed_origins):
        gateway.log.warning(
            "websocket origin refused",
            route=path.rsplit("/", 1)[0],
            origin=header(scope, b"origin"),
            status=403,
        )
        await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})
        return None
    offered = [p.strip() for p in (header(scope, b"sec-websocket-protocol") or "").split(",")]
    subprotocol = "binary" if "binary" in offered else None
    value = str(scope.get("path_params", {}).get("ticket") or path.rsplit("/", 1)[-1])
    accept: dict[str, Any] = {"type": "websocket.accept"}
    if subprotocol:
        accept["subprotocol"] = subprotocol
    await send(accept)
    address = client_address(scope)
    user_id = None
    try:
        token = token_from_scope(scope)
        if token:
            user_id = gateway.auth.verify(token).user_id
        ticket = gateway.tickets.redeem(value, kind, user_id=user_id)
    except (TicketError, VirtwireError) as exc:
        code = (
            CloseCode.AUTH
            if exc.code in (ErrorCode.AUTH_FAILED, ErrorCode.TOKEN_EXPIRED)
            else (CloseCode.POLICY_VIOLATION)
        )
        gateway.log.debug("console ticket refused", kind=kind, code=exc.code)
        gateway.audit_log.record(
            "ticket-redeem",
            {"user": user_id, "address": address, "kind": kind, "outcome": exc.code},
        )
        with contextlib.suppress(OSError, RuntimeError):
            await send({"type": "websocket.close", "code": code, "reason": f"{exc.code}: {exc}"})
        return None
    gateway.audit_log.record(
        "ticket-redeem",
        {
            "user": ticket.user_id,
            "address": address,
            "kind": kind,
            "vmId": getattr(ticket.target, "vm_id", None),
            "sessionId": getattr(ticket.target, "id", None) if kind == "terminal" else None,
            "outcome": "ok",
        },
    )
    return Admitted(ticket, subprotocol, address)


__all__ = [
    "REASON_CLIENT",
    "REASON_CONNECTION",
    "REASON_REPLACED",
    "REASON_SHUTDOWN",
    "REASON_TOKEN_EXPIRED",
    "Admitted",
    "Console",
    "ConsoleSessions",
    "accept_ticket",
]
