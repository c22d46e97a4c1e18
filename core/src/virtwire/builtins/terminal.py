"""The web terminal on ``/ws``: ``terminal-connect``, ``-input``, ``-resize``, ``-share``,
``-disconnect``; ``terminal-output`` and ``terminal-closed`` pushed to every viewer.

Sessions are the gateway's (:mod:`virtwire.terminals`): a ``/ws`` connection attaches to
them as a viewer and detaches when it closes; the terminal then waits ``detach_timeout`` for
a reattach. The transports (SSH, serial...) come from ``register_consoles``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ..consoles import find_transport
from ..consolesessions import REASON_CLIENT, REASON_SHUTDOWN
from ..errors import ErrorCode, VirtwireError
from ..hookspecs import hookimpl
from ..terminals import ManagedTerminal, Mode, TerminalManager, Viewer
from ..topics import Reply, Subscription
from . import terminal_ws

if TYPE_CHECKING:
    from ..gateway import Gateway
    from ..session import Session

#: Key of a terminal attachment in ``session.subscriptions`` (ended when the connection ends).
ATTACH_KEY = "terminal-attachment"
MAX_SIZE = 1000


class ConnectData(msgspec.Struct, kw_only=True):
    vmId: str
    type: str | None = None
    credentials: dict[str, Any] | None = None
    cols: int | None = None
    rows: int | None = None
    sessionId: str | None = None
    mode: Literal["writer", "observer"] | None = None
    #: False: no ``terminal-output`` on this connection (the page reads the ticket URL).
    output: bool = True


class InputData(msgspec.Struct, kw_only=True):
    input: str
    vmId: str | None = None
    sessionId: str | None = None


class ResizeData(msgspec.Struct, kw_only=True):
    cols: int
    rows: int
    vmId: str | None = None
    sessionId: str | None = None


class SelectData(msgspec.Struct, kw_only=True):
    vmId: str | None = None
    sessionId: str | None = None


class ShareData(msgspec.Struct, kw_only=True):
    writers: bool
    vmId: str | None = None
    sessionId: str | None = None


class WsViewer(Viewer):
    """A ``/ws`` connection watching a terminal: frames go to its outbox."""

    framed = True

    def __init__(self, session: Session, mode: Mode, *, quiet: bool = False) -> None:
        assert session.user_id is not None
        super().__init__(session.user_id, mode, session.outbox)
        self.session = session
        self.key: tuple[str, str] = (ATTACH_KEY, "")
        #: Takes no output (``output: false``): it only controls the terminal.
        self.quiet = quiet
        self.framed = self.takes_output = not quiet

    def output(self, text: str, frame: str) -> None:
        if not self.quiet:
            self.outbox.put(frame)

    def ended(self, data: dict[str, Any]) -> None:
        self.session.subscriptions.pop(self.key, None)
        self.session.send("terminal-closed", data)


def _size(value: int | None, default: int, field: str) -> int:
    if value is None:
        return default
    if not 1 <= value <= MAX_SIZE:
        raise VirtwireError(
            ErrorCode.INVALID_MESSAGE,
            f"invalid data.{field}: must be between 1 and {MAX_SIZE}",
            details={"field": f"data.{field}", "reason": f"must be between 1 and {MAX_SIZE}"},
        )
    return value


class TerminalHandlers:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.text = gateway.catalogue

    @property
    def manager(self) -> TerminalManager:
        return self.gateway.terminals

    # -- helpers -----------------------------------------------------------------------
    def _viewers(self, session: Session) -> list[WsViewer]:
        return [
            sub.viewer  # type: ignore[attr-defined]
            for key, sub in session.subscriptions.items()
            if isinstance(key, tuple) and key[:1] == (ATTACH_KEY,)
        ]

    def _select(self, session: Session, vm_id: str | None, session_id: str | None) -> WsViewer:
        """The attachment a message means: by ``sessionId``, or the VM's only one."""
        viewers = self._viewers(session)
        if session_id is not None:
            found = [v for v in viewers if v.terminal is not None and v.terminal.id == session_id]
        else:
            found = [v for v in viewers if v.terminal is not None and v.terminal.vm_id == vm_id]
            if len(found) > 1:
                raise VirtwireError(
                    ErrorCode.INVALID_MESSAGE,
                    self.text("terminal.ambiguous", vm_id=vm_id),
                    vm_id=vm_id,
                    details={"field": "data.sessionId", "reason": "required"},
                )
        if not found:
            if session_id is not None:
                self.manager.lookup(session_id, session.user_id or "", vm_id)  # says why
            raise VirtwireError(
                ErrorCode.TERMINAL_NOT_FOUND,
                self.text("terminal.not_attached", vm_id=vm_id),
                vm_id=vm_id,
                details={"sessionId": session_id} if session_id else None,
            )
        return found[0]

    def _join(
        self, session: Session, terminal: ManagedTerminal, mode: Mode, *, output: bool = True
    ) -> Reply:
        """Issue a ticket, answer, then attach (scrollback first, then live output)."""
        principal = session.principal
        assert principal is not None
        ticket = self.gateway.tickets.issue(
            "terminal", principal.user_id, terminal, token_expires_at=principal.expires_at
        )
        terminal.grant(ticket.value, mode)
        viewer = WsViewer(session, mode, quiet=not output)
        viewer.key = (ATTACH_KEY, terminal.id)
        data = {
            **terminal.describe(),
            "ticket": ticket.value,
            "url": f"{terminal_ws.PATH_PREFIX}{ticket.value}",
            "mode": mode.value,
            "cols": terminal.cols,
            "rows": terminal.rows,
        }

        def then() -> None:
            if session.close_code is not None:
                if not terminal.viewers:
                    terminal.detach(viewer)  # nobody watches: start the detach clock
                return
            old = session.subscriptions.pop(viewer.key, None)
            if old is not None:
                old.close()
            sub = Subscription(key=viewer.key, close=lambda: terminal.detach(viewer))
            sub.viewer = viewer  # type: ignore[attr-defined]
            session.subscriptions[viewer.key] = sub
            terminal.attach(viewer)

        return Reply(data, then=then)

    async def _learn_owner(self, vm_id: str) -> None:
        """Find which backend owns ``vm_id`` (if any does) so that transports' cheap
        ``supports`` can tell; a VM no backend knows is fine (ssh to a configured host)."""
        vms = getattr(self.gateway, "vms", None)
        if vms is None or vm_id in vms.owner:
            return
        with contextlib.suppress(VirtwireError):
            await vms.backend_for(vm_id)

    # -- handlers ----------------------------------------------------------------------
    async def connect(self, session: Session, data: ConnectData) -> Reply:
        """``terminal-connect``, recorded in the audit stream (``terminal-open`` for a new
        terminal, ``terminal-attach`` for joining one by ``sessionId``)."""
        event = "terminal-open" if data.sessionId is None else "terminal-attach"
        login = (data.credentials or {}).get("username")
        with self.gateway.audit_log.request(
            event,
            session,
            vmId=data.vmId,
            type=data.type or ("ssh" if data.sessionId is None else None),
            login=login if isinstance(login, str) else None,
            sessionId=data.sessionId,
        ) as fields:
            reply = await self._connect(session, data)
            fields["type"] = reply.data["type"]
            fields["sessionId"] = reply.data["sessionId"]
            fields["mode"] = reply.data["mode"]
            return reply

    async def _connect(self, session: Session, data: ConnectData) -> Reply:
        vm_id = data.vmId
        session.require("console", vm_id=vm_id)
        principal = session.principal
        assert principal is not None
        manager = self.manager
        if data.sessionId is not None:
            terminal = manager.lookup(data.sessionId, principal.user_id, vm_id)
            if data.type is not None and data.type != terminal.kind:
                raise VirtwireError(
                    ErrorCode.INVALID_MESSAGE,
                    f"invalid data.type: session {terminal.id} is a {terminal.kind} terminal",
                    vm_id=vm_id,
                    details={"field": "data.type", "reason": f"expected {terminal.kind!r}"},
                )
            own = terminal.user_id == principal.user_id
            if not own and not principal.has_scope("console:share"):
                raise VirtwireError(
                    ErrorCode.FORBIDDEN,
                    self.text("terminal.busy_owner", session=terminal.id),
                    vm_id=vm_id,
                    details={"scope": "console:share"},
                )
            owner_elsewhere = any(
                v.mode is Mode.OWNER and getattr(v, "session", None) is not session
                for v in terminal.viewers
            )
            if own and not owner_elsewhere and data.mode is None:
                mode = Mode.OWNER
            elif data.mode == "writer" and terminal.allow_writers:
                mode = Mode.WRITER
            else:
                mode = Mode.OBSERVER
            return self._join(session, terminal, mode, output=data.output)

        kind = data.type or "ssh"
        await self._learn_owner(vm_id)
        transport = None if kind == "vnc" else find_transport(self.gateway.consoles, vm_id, kind)
        if transport is None:
            kinds = sorted({k for t in self.gateway.consoles for k in t.kinds if k != "vnc"})
            raise VirtwireError(
                ErrorCode.CONSOLE_UNAVAILABLE,
                self.text("terminal.no_transport", vm_id=vm_id, type=kind),
                vm_id=vm_id,
                details={"type": kind, "available": kinds},
            )
        config = self.gateway.settings.terminal
        cols = _size(data.cols, config.default_cols, "cols")
        rows = _size(data.rows, config.default_rows, "rows")
        limit = config.max_sessions_per_user
        if manager.count(principal.user_id) >= limit:
            raise VirtwireError(
                ErrorCode.RATE_LIMITED,
                self.text("terminal.too_many", limit=limit),
                vm_id=vm_id,
                details={"limit": limit},
            )
        term = await transport.open_terminal(
            vm_id, kind, credentials=data.credentials or {}, cols=cols, rows=rows
        )
        terminal = manager.create(
            term, vm_id=vm_id, kind=kind, user_id=principal.user_id, cols=cols, rows=rows
        )
        return self._join(session, terminal, Mode.OWNER, output=data.output)

    async def input(self, session: Session, data: InputData) -> dict[str, Any]:
        viewer = self._select(session, data.vmId, data.sessionId)
        terminal = viewer.terminal
        assert terminal is not None
        if not viewer.mode.can_write:
            raise VirtwireError(
                ErrorCode.FORBIDDEN, self.text("terminal.read_only"), vm_id=terminal.vm_id
            )
        await terminal.write(data.input.encode())
        return {"vmId": terminal.vm_id, "sessionId": terminal.id}

    async def resize(self, session: Session, data: ResizeData) -> dict[str, Any]:
        cols = _size(data.cols, 80, "cols")
        rows = _size(data.rows, 24, "rows")
        viewer = self._select(session, data.vmId, data.sessionId)
        terminal = viewer.terminal
        assert terminal is not None
        if not viewer.mode.can_write:
            raise VirtwireError(
                ErrorCode.FORBIDDEN, self.text("terminal.read_only"), vm_id=terminal.vm_id
            )
        await terminal.resize(cols, rows)
        return {"vmId": terminal.vm_id, "sessionId": terminal.id, "cols": cols, "rows": rows}

    async def share(self, session: Session, data: ShareData) -> dict[str, Any]:
        viewer = self._select(session, data.vmId, data.sessionId)
        terminal = viewer.terminal
        assert terminal is not None
        if viewer.mode is not Mode.OWNER:
            raise VirtwireError(
                ErrorCode.FORBIDDEN, self.text("terminal.not_owner"), vm_id=terminal.vm_id
            )
        terminal.allow_writers = data.writers
        if not data.writers:  # writers become observers at once
            for other in terminal.viewers:
                if other.mode is Mode.WRITER:
                    other.mode = Mode.OBSERVER
        return {"vmId": terminal.vm_id, "sessionId": terminal.id, "writers": data.writers}

    async def disconnect(self, session: Session, data: SelectData) -> dict[str, Any]:
        """The owner ends the terminal; anyone else just stops watching."""
        viewer = self._select(session, data.vmId, data.sessionId)
        terminal = viewer.terminal
        assert terminal is not None
        reply = {"vmId": terminal.vm_id, "sessionId": terminal.id}
        if viewer.mode is Mode.OWNER:
            await terminal.close(REASON_CLIENT)
        else:
            sub = session.subscriptions.pop(viewer.key, None)
            if sub is not None:
                sub.close()
        return reply


@hookimpl
def register_handlers(register: Any, gateway: Gateway) -> None:
    handlers = TerminalHandlers(gateway)
    register("terminal-connect", handlers.connect, schema=ConnectData, concurrent=True)
    register("terminal-input", handlers.input, schema=InputData)
    register("terminal-resize", handlers.resize, schema=ResizeData)
    register("terminal-share", handlers.share, schema=ShareData)
    register("terminal-disconnect", handlers.disconnect, schema=SelectData)


@hookimpl
def register_routes(register: Any, gateway: Gateway) -> None:
    register(terminal_ws.route(gateway))


@hookimpl
def shutdown(gateway: Gateway) -> Any:
    return gateway.terminals.close_all(REASON_SHUTDOWN)
