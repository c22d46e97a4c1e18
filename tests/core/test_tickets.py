"""One-time console tickets: issued for a user and a console, redeemed once, within their time."""

from __future__ import annotations

import time

import pytest
from virtwire.tickets import TicketError, TicketStore


def test_a_ticket_works_once() -> None:
    store = TicketStore(ttl=30)
    target = object()
    ticket = store.issue("vnc", "alice", target)
    assert 0 < ticket.expires_in <= 30
    got = store.redeem(ticket.value, "vnc")
    assert got.target is target and got.user_id == "alice"
    with pytest.raises(TicketError) as err:
        store.redeem(ticket.value, "vnc")
    assert err.value.code == "TICKET_USED"


def test_unknown_expired_foreign_and_wrong_kind_are_refused() -> None:
    store = TicketStore(ttl=30)
    with pytest.raises(TicketError) as err:
        store.redeem("nope", "vnc")
    assert err.value.code == "TICKET_UNKNOWN"

    expired = store.issue("vnc", "alice", None, ttl=0)
    deadline = time.monotonic()
    while time.monotonic() <= deadline:  # the clock must move past the deadline
        pass
    with pytest.raises(TicketError) as err:
        store.redeem(expired.value, "vnc")
    assert err.value.code == "TICKET_EXPIRED"

    other = store.issue("vnc", "alice", None)
    with pytest.raises(TicketError) as err:
        store.redeem(other.value, "vnc", user_id="mallory")
    assert err.value.code == "TICKET_FORBIDDEN"

    term = store.issue("terminal", "alice", None)
    with pytest.raises(TicketError) as err:
        store.redeem(term.value, "vnc")
    assert err.value.code == "TICKET_FORBIDDEN"


def test_never_beyond_the_token_and_bounded() -> None:
    store = TicketStore(ttl=30, max_tickets=3)
    ticket = store.issue("vnc", "alice", None, token_expires_at=time.time() + 5)
    assert ticket.expires_in <= 5
    target = object()
    tickets = [store.issue("vnc", "alice", target) for _ in range(5)]
    assert len(store) == 3
    assert store.revoke(target) == 3
    with pytest.raises(TicketError):
        store.redeem(tickets[-1].value, "vnc")
