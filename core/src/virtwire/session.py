"""A connection as plugins see it: who, what it subscribed to, and how to send to it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Hashable
from enum import Enum
from typing import TYPE_CHECKING, Any

from .errors import CloseCode, ErrorCode, VirtwireError
from .hub import Outbox
from .protocol import Id, encode

if TYPE_CHECKING:
    from .auth import Principal
    from .gateway import Gateway
    from .topics import Subscription

_ids = itertools.count(1)


class State(Enum):
    """The life of a ``/ws`` connection."""

    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Session:
    """One ``/ws`` connection.

    Handlers and topics get it as their first argument: ``principal`` (None until
    authenticated), ``outbox`` (to add to channels), ``send``/``send_error`` to queue frames,
    ``close`` to end the connection, ``log`` bound with the connection id and user id.
    """

    def __init__(self, gateway: Gateway, client: str | None = None) -> None:
        self.id = f"c{next(_ids)}"
        self.gateway = gateway
        self.client = client
        self.state = State.CONNECTING
        self.principal: Principal | None = None
        server = gateway.settings.server
        self.outbox = Outbox(
            server.preauth_send_queue_bytes, server.send_queue_messages, self._overflow
        )
        self.outbox.metrics = gateway.hub.metrics
        self.subscriptions: dict[Hashable, Subscription] = {}
        self._finished: asyncio.Event | None = None
        self._done = False
        #: Set by the connection: called by :meth:`close` with ``flush`` (False: close now,
        #: dropping the backlog); it also starts the close deadline.
        self.on_close: Callable[[bool], None] | None = None
        #: Set by the connection: drops the TCP connection now, close frame or not.
        self.abort: Callable[[], None] | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self._log: Any = None

    @property
    def log(self) -> Any:
        """The gateway's logger bound with the connection id and user id (made on first use:
        an idle connection keeps none)."""
        log = self._log
        if log is None:
            log = self.gateway.log.bind(conn=self.id)
            if self.principal is not None:
                log = log.bind(user=self.principal.user_id)
        return log

    @log.setter
    def log(self, value: Any) -> None:
        self._log = value

    @property
    def finished(self) -> asyncio.Event:
        """Set once the connection is closed and cleaned up."""
        if self._finished is None:
            self._finished = asyncio.Event()
            if self._done:
                self._finished.set()
        return self._finished

    def mark_finished(self) -> None:
        self._done = True
        if self._finished is not None:
            self._finished.set()

    @property
    def user_id(self) -> str | None:
        return self.principal.user_id if self.principal else None

    def send(self, type_: str, data: Any, id_: Id | None = None) -> bool:
        """Queue one frame. Returns False if the connection is closing or overflowed."""
        self.gateway.hub.metrics.sent(type_)
        return self.outbox.put(encode(type_, data, id_))

    def send_error(self, error: VirtwireError, id_: Id | None = None) -> bool:
        """Queue an ``error`` frame; its message comes from the catalogue when the code
        has an ``error.<CODE>`` text."""
        return self.outbox.put(encode("error", self.gateway.catalogue.error_data(error), id_))

    def require(
        self, scope: str | None, *, vm_id: str | None = None, resource: str | None = None
    ) -> None:
        """Raise FORBIDDEN unless the principal has ``scope``, may see ``vm_id`` and no
        ``authorize`` hook denies."""
        principal = self.principal
        text = self.gateway.catalogue
        if principal is None:
            raise VirtwireError(ErrorCode.AUTH_REQUIRED, text("auth.required"))
        if not principal.has_scope(scope):
            raise VirtwireError(
                ErrorCode.FORBIDDEN, text("forbidden.scope", scope=scope), vm_id=vm_id
            )
        if vm_id is not None and not principal.can_see(vm_id):
            raise VirtwireError(ErrorCode.FORBIDDEN, text("forbidden.vm", vm_id=vm_id), vm_id=vm_id)
        if not self.gateway.authorized(principal, scope or "", resource or vm_id):
            raise VirtwireError(
                ErrorCode.FORBIDDEN, text("forbidden.scope", scope=scope), vm_id=vm_id
            )

    def close(self, code: int = CloseCode.NORMAL, reason: str = "", *, flush: bool = True) -> None:
        """Close the connection with ``code`` after sending what is queued (``flush``) or at
        once. Either way the client has ``server.close_timeout`` seconds to take the close
        frame; then the connection is dropped."""
        if self.close_code is not None:
            if not flush:  # a flushing close already under way becomes immediate
                self.outbox.clear()
                if self.on_close is not None:
                    self.on_close(False)
            return
        self.close_code = code
        self.close_reason = reason
        if self.state in (State.OPEN, State.AUTHENTICATING, State.CONNECTING):
            self.state = State.CLOSING
        if not flush:
            self.outbox.clear()
        self.outbox.close()
        if self.on_close is not None:
            self.on_close(flush)

    def _overflow(self) -> None:
        self.log.warning("client too slow; closing", code=CloseCode.SLOW_CONSUMER)
        self.gateway.hub.metrics.overflows += 1
        self.close(
            CloseCode.SLOW_CONSUMER, self.gateway.catalogue("close.slow_consumer"), flush=False
        )
