"""The console machinery every console kind shares: limits per connection and per user,
tickets revoked when a console ends, and cleanup when the ``/ws`` connection goes."""

from __future__ import annotations

import pytest
from virtwire.app import create_app
from virtwire.auth import Principal
from virtwire.errors import VirtwireError
from virtwire.session import Session
from virtwire.testing import make_settings
from virtwire.tickets import TicketError


class FakeConsole:
    """A console with nothing behind it: records how it was closed."""

    def __init__(self, vm_id: str, kind: str = "vnc") -> None:
        self.kind = kind
        self.vm_id = vm_id
        self.closed: list[str] = []

    async def close(self, reason: str) -> None:
        self.closed.append(reason)


def _gateway(**consoles: int) -> object:
    app = create_app(make_settings({"consoles": consoles}), plugins=[])
    return app.state.gateway


def _session(gateway: object, user: str) -> Session:
    session = Session(gateway)  # type: ignore[arg-type]
    session.principal = Principal(user, frozenset({"console"}))
    return session


async def test_limits_per_connection_and_per_user() -> None:
    gateway = _gateway(max_per_connection=2, max_per_user=3)
    registry = gateway.console_sessions  # type: ignore[attr-defined]
    a1, a2, b = _session(gateway, "ana"), _session(gateway, "ana"), _session(gateway, "bo")
    for vm in ("v1", "v2"):
        with registry.reserve(a1):
            registry.add(a1, FakeConsole(vm))
    with pytest.raises(VirtwireError) as exc, registry.reserve(a1):
        pass
    assert exc.value.code == "RATE_LIMITED" and exc.value.details["per"] == "connection"
    with registry.reserve(a2):
        registry.add(a2, FakeConsole("v3"))
    with pytest.raises(VirtwireError) as exc, registry.reserve(a2):
        pass
    assert exc.value.details == {"limit": 3, "per": "user"}
    with registry.reserve(b):  # another user is not counted against ana
        registry.add(b, FakeConsole("v1"))
    assert len(registry) == 4


async def test_a_failed_open_gives_its_place_back() -> None:
    gateway = _gateway(max_per_connection=1)
    registry = gateway.console_sessions  # type: ignore[attr-defined]
    s = _session(gateway, "ana")
    with pytest.raises(OSError), registry.reserve(s):
        raise OSError("VNC server unreachable")
    with registry.reserve(s):
        registry.add(s, FakeConsole("v1"))
    assert registry.get(s, "vnc", "v1") is not None


async def test_closing_a_connection_closes_its_consoles_and_revokes_tickets() -> None:
    gateway = _gateway()
    registry = gateway.console_sessions  # type: ignore[attr-defined]
    s, other = _session(gateway, "ana"), _session(gateway, "bo")
    mine, theirs = FakeConsole("v1"), FakeConsole("v1")
    with registry.reserve(s):
        registry.add(s, mine)
    with registry.reserve(other):
        registry.add(other, theirs)
    ticket = registry.issue_ticket(s, mine)
    assert ticket.expires_in == pytest.approx(30, abs=1)  # [consoles] ticket_ttl default
    await registry.close_session(s)
    assert mine.closed == ["connection-closed"] and theirs.closed == []
    assert registry.of(s) == [] and len(registry) == 1
    with pytest.raises(TicketError) as exc:
        gateway.tickets.redeem(ticket.value, "vnc")  # type: ignore[attr-defined]
    assert exc.value.code == "TICKET_UNKNOWN"
    with registry.reserve(s):  # its places are free again
        registry.add(s, FakeConsole("v1"))
