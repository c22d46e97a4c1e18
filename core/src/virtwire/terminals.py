"""Terminal sessions that outlive their WebSocket.

A :class:`ManagedTerminal` wraps the :class:`~virtwire.consoles.TerminalSession` a transport
opened (an SSH shell, a serial console). One task reads it, decodes the output as UTF-8
incrementally, keeps the last ``scrollback_bytes`` and fans frames out to every viewer: the
``/ws`` connections attached to it and the ``/ws/terminal/{ticket}`` sockets of xterm.js.
When the last viewer leaves, the terminal waits ``detach_timeout`` seconds for someone to
reattach (``terminal-connect {sessionId}``), who first gets the scrollback replayed.
Reading pauses while a viewer has more than ``high_water_bytes`` waiting, so a fast producer
(``cat`` of a large file) is slowed to what the slowest viewer takes instead of overflowing it.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any

from .consoles import TerminalSession
from .errors import ErrorCode, VirtwireError
from .hub import Outbox
from .protocol import encode
from .termio import OutputDecoder, Scrollback, pieces

if TYPE_CHECKING:
    from .audit import AuditLog
    from .config import TerminalConfig

#: Most bytes asked of a transport per read.
READ_LIMIT = 64 * 1024
#: "Reset to initial state" (RIS): what a redraw starts with.
RESET = "\x1bc"
#: Ticket modes remembered per terminal (tickets live 30 s: more is never needed).
TICKET_MODES_MAX = 64
#: Ended terminals remembered (to tell "expired" or "exited" from "unknown").
ENDED_MAX = 1024


class Mode(StrEnum):
    """What a viewer may do: the ``owner`` (who opened it) and ``writer``s type and resize;
    ``observer``s only watch."""

    OWNER = "owner"
    WRITER = "writer"
    OBSERVER = "observer"

    @property
    def can_write(self) -> bool:
        return self is not Mode.OBSERVER


class TermState(Enum):
    OPEN = "open"
    CLOSED = "closed"


class Viewer(abc.ABC):
    """One place a terminal's output goes to. ``outbox`` is where its frames queue (the
    terminal pauses reading while it is too full); ``output`` queues one piece of text
    (``frame`` is the same piece already encoded as a ``terminal-output`` frame, or ``""``
    when no ``/ws`` viewer needs it); ``ended`` tells it the terminal is gone."""

    #: True for viewers that take ``terminal-output`` JSON frames (``/ws``).
    framed = False
    #: False for viewers that take no output (reading never waits for them).
    takes_output = True

    def __init__(self, user_id: str, mode: Mode, outbox: Outbox) -> None:
        self.user_id = user_id
        self.mode = mode
        self.outbox = outbox
        self.terminal: ManagedTerminal | None = None
        #: Characters of output an observer missed while it was too far behind, and whether it
        #: is behind now (it gets a redraw once it has caught up).
        self.skipped = 0
        self.behind = False

    @property
    def paces(self) -> bool:
        """Reading waits for the viewers who type (owner, writers): an observer that falls
        behind (a hidden tab) must not freeze the terminal of the one using it."""
        return self.takes_output and self.mode.can_write

    @abc.abstractmethod
    def output(self, text: str, frame: str) -> None: ...

    @abc.abstractmethod
    def ended(self, data: dict[str, Any]) -> None: ...


class ManagedTerminal:
    """A terminal session of the gateway: its transport session, viewers and scrollback."""

    def __init__(
        self,
        manager: TerminalManager,
        term: TerminalSession,
        *,
        vm_id: str,
        kind: str,
        user_id: str,
        cols: int,
        rows: int,
    ) -> None:
        config = manager.config
        self.manager = manager
        self.term = term
        self.id = secrets.token_urlsafe(12)
        self.vm_id = vm_id
        self.kind = kind
        self.user_id = user_id
        self.cols = cols
        self.rows = rows
        self.state = TermState.OPEN
        self.opened = time.monotonic()
        self.viewers: list[Viewer] = []
        self.scrollback = Scrollback(config.scrollback_bytes)
        self.allow_writers = False
        self.exit_status: int | None = None
        self.reason = ""
        #: Modes of the latest tickets issued for this terminal, by ticket value (bounded; a
        #: ticket whose entry is gone opens a read-only view).
        self.ticket_modes: OrderedDict[str, Mode] = OrderedDict()
        self._frame_chars = config.frame_chars
        self._high = config.high_water_bytes
        self._decoder = OutputDecoder()
        self._detach_timer: asyncio.TimerHandle | None = None
        self._watchers: set[asyncio.Future[None]] = set()
        self._closing: asyncio.Task[None] | None = None
        self._task = asyncio.create_task(self._pump(), name=f"terminal-{self.id}")

    def __repr__(self) -> str:
        return f"<ManagedTerminal {self.id} {self.kind} vm={self.vm_id} {self.state.value}>"

    @property
    def attached(self) -> bool:
        return bool(self.viewers)

    def grant(self, ticket: str, mode: Mode) -> None:
        """Remember what ``ticket`` lets its holder do (see ``ticket_modes``)."""
        self.ticket_modes[ticket] = mode
        while len(self.ticket_modes) > TICKET_MODES_MAX:
            self.ticket_modes.popitem(last=False)

    def describe(self) -> dict[str, Any]:
        return {"vmId": self.vm_id, "sessionId": self.id, "type": self.kind}

    # -- output ------------------------------------------------------------------------
    async def _pump(self) -> None:
        term = self.term
        reason = "exited"
        try:
            while True:
                await self._drained()
                data = await term.read(READ_LIMIT)
                if not data:
                    break
                self.scrollback.add(data)
                text = self._decoder.feed(data)
                if text:
                    self._fan_out(text)
            tail = self._decoder.flush()
            if tail:
                self._fan_out(tail)
            reason = term.close_reason or "exited"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = "error"
            self.manager.log.warning(
                "terminal read failed",
                session=self.id,
                vm=self.vm_id,
                error=f"{type(exc).__name__}: {exc}",
            )
        self.exit_status = getattr(term, "exit_status", None)
        self.close(reason)

    async def _drained(self) -> None:
        """Wait while any viewer has too much queued (bounded memory, fair to slow viewers)."""
        high = self._high
        while True:
            busy = next(
                (
                    v
                    for v in self.viewers
                    if v.paces
                    and v.outbox.queued_bytes > high
                    and not (v.outbox.closed or v.outbox.overflowed)  # leaving: not waited for
                ),
                None,
            )
            if busy is None:
                return
            await busy.outbox.room(high // 2)

    def _fan_out(self, text: str) -> None:
        framed = any(v.framed for v in self.viewers)
        redrawn: list[Viewer] = []  # their redraw already ends with all of ``text``
        for piece in pieces(text, self._frame_chars):
            frame = (
                encode(
                    "terminal-output",
                    {"vmId": self.vm_id, "sessionId": self.id, "output": piece},
                )
                if framed
                else ""
            )
            for viewer in list(self.viewers):
                if redrawn and viewer in redrawn:
                    continue
                if not viewer.paces and viewer.takes_output:
                    queued = viewer.outbox.queued_bytes
                    if queued > self._high or (viewer.behind and queued > self._high // 2):
                        viewer.skipped += len(piece)  # an observer too far behind misses it
                        if not viewer.behind:
                            viewer.behind = True
                            self._watch_catch_up(viewer)
                        continue
                    if viewer.behind:  # caught up: redraw instead of a screen with holes
                        viewer.behind = False
                        self._redraw(viewer)
                        redrawn.append(viewer)
                        continue
                viewer.output(piece, frame)

    def _watch_catch_up(self, viewer: Viewer) -> None:
        """Redraw ``viewer`` as soon as it has caught up, whether or not more output comes."""

        async def wait() -> None:
            await viewer.outbox.room(self._high // 2)
            if viewer.behind and viewer in self.viewers and not viewer.outbox.closed:
                viewer.behind = False
                self._redraw(viewer)

        task = asyncio.ensure_future(wait())
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def _redraw(self, viewer: Viewer) -> None:
        """A full redraw for a viewer that missed output: reset its terminal (``ESC c``),
        then the scrollback, which ends with what it would have got now."""
        self._replay(viewer, RESET)

    def _replay(self, viewer: Viewer, prefix: str = "") -> None:
        history = prefix + self.scrollback.text()
        if history:
            for piece in pieces(history, self._frame_chars):
                frame = (
                    encode(
                        "terminal-output",
                        {"vmId": self.vm_id, "sessionId": self.id, "output": piece},
                    )
                    if viewer.framed
                    else ""
                )
                viewer.output(piece, frame)

    # -- viewers -----------------------------------------------------------------------
    def attach(self, viewer: Viewer) -> None:
        """Add ``viewer``: it first gets the scrollback, then live output."""
        if self.state is not TermState.OPEN:
            viewer.ended(self.closed_data())
            return
        if self._detach_timer is not None:
            self._detach_timer.cancel()
            self._detach_timer = None
        viewer.terminal = self
        self._replay(viewer)
        self.viewers.append(viewer)

    def detach(self, viewer: Viewer) -> None:
        """Remove ``viewer``; with nobody left, wait ``detach_timeout`` for a reattach."""
        with contextlib.suppress(ValueError):
            self.viewers.remove(viewer)
        viewer.terminal = None
        if self.viewers or self.state is not TermState.OPEN:
            return
        timeout = self.manager.config.detach_timeout
        if timeout <= 0:
            self.close("detach-timeout")
            return
        if self._detach_timer is None:
            self._detach_timer = asyncio.get_running_loop().call_later(
                timeout, self.close, "detach-timeout"
            )

    # -- input -------------------------------------------------------------------------
    async def write(self, data: bytes) -> None:
        if self.state is not TermState.OPEN:
            raise self.manager.closed_error(self.id, self.vm_id, self.reason)
        await self.term.write(data)

    async def resize(self, cols: int, rows: int) -> None:
        if self.state is not TermState.OPEN:
            raise self.manager.closed_error(self.id, self.vm_id, self.reason)
        await self.term.resize(cols, rows)
        self.cols, self.rows = cols, rows

    # -- the end -----------------------------------------------------------------------
    def closed_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"vmId": self.vm_id, "sessionId": self.id, "reason": self.reason}
        if self.exit_status is not None:
            data["exitStatus"] = self.exit_status
        return data

    def close(self, reason: str) -> asyncio.Task[None]:
        """End the terminal (idempotent): tell every viewer (``terminal-closed``), forget it,
        close the transport session. Returns the task doing the closing."""
        if self._closing is not None:
            return self._closing
        self.state = TermState.CLOSED
        self.reason = reason
        if self._detach_timer is not None:
            self._detach_timer.cancel()
            self._detach_timer = None
        for watcher in list(self._watchers):
            watcher.cancel()
        self.manager.forget(self)
        data = self.closed_data()
        viewers, self.viewers = self.viewers, []
        for viewer in viewers:
            viewer.terminal = None
            viewer.ended(data)
        self.manager.log.debug(
            "terminal closed",
            session=self.id,
            vm=self.vm_id,
            kind=self.kind,
            reason=reason,
            exit_status=self.exit_status,
        )
        audit = self.manager.audit
        if audit is not None:
            audit.record(
                "terminal-close",
                {
                    "user": self.user_id,
                    "vmId": self.vm_id,
                    "type": self.kind,
                    "sessionId": self.id,
                    "reason": reason,
                    "exitStatus": self.exit_status,
                    "durationMs": (time.monotonic() - self.opened) * 1000,
                },
            )
        self._closing = asyncio.ensure_future(self._close_transport())
        self.manager.closing.add(self._closing)
        self._closing.add_done_callback(self.manager.closing.discard)
        return self._closing

    async def _close_transport(self) -> None:
        if self._task is not asyncio.current_task() and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        try:
            await self.term.close()
        except Exception as exc:
            self.manager.log.warning(
                "terminal close failed", session=self.id, error=f"{type(exc).__name__}: {exc}"
            )


class TerminalManager:
    """Every terminal of one gateway (``gateway.terminals``), by ``sessionId``."""

    def __init__(self, config: TerminalConfig, log: Any, catalogue: Callable[..., str]) -> None:
        self.config = config
        self.log = log
        self.text = catalogue
        self.terminals: dict[str, ManagedTerminal] = {}
        #: sessionId -> (reason, exit status, user) of terminals that ended lately.
        self.ended: OrderedDict[str, tuple[str, int | None, str]] = OrderedDict()
        #: Close tasks still running (kept so they are not collected).
        self.closing: set[asyncio.Task[None]] = set()
        #: Called with every terminal that ends (e.g. to revoke its tickets).
        self.on_end: list[Callable[[ManagedTerminal], object]] = []
        #: Where ``terminal-close`` records go (the gateway's audit stream).
        self.audit: AuditLog | None = None

    def __len__(self) -> int:
        return len(self.terminals)

    def create(
        self,
        term: TerminalSession,
        *,
        vm_id: str,
        kind: str,
        user_id: str,
        cols: int,
        rows: int,
    ) -> ManagedTerminal:
        managed = ManagedTerminal(
            self, term, vm_id=vm_id, kind=kind, user_id=user_id, cols=cols, rows=rows
        )
        self.terminals[managed.id] = managed
        self.log.debug("terminal opened", session=managed.id, vm=vm_id, kind=kind, user=user_id)
        return managed

    def count(self, user_id: str) -> int:
        return sum(1 for t in self.terminals.values() if t.user_id == user_id)

    def forget(self, terminal: ManagedTerminal) -> None:
        if self.terminals.pop(terminal.id, None) is None:
            return
        self.ended[terminal.id] = (terminal.reason, terminal.exit_status, terminal.user_id)
        while len(self.ended) > ENDED_MAX:
            self.ended.popitem(last=False)
        for callback in self.on_end:
            try:
                callback(terminal)
            except Exception:
                self.log.exception("terminal end callback failed")

    def closed_error(self, session_id: str, vm_id: str | None, reason: str) -> VirtwireError:
        return VirtwireError(
            ErrorCode.TERMINAL_CLOSED,
            self.text("terminal.closed", session=session_id, reason=reason),
            vm_id=vm_id,
            details={"sessionId": session_id, "reason": reason},
        )

    def lookup(self, session_id: str, user_id: str, vm_id: str | None) -> ManagedTerminal:
        """The open terminal ``session_id``; ``TERMINAL_CLOSED`` (with the reason) if it
        ended lately, ``TERMINAL_NOT_FOUND`` otherwise."""
        terminal = self.terminals.get(session_id)
        if terminal is not None and (vm_id is None or terminal.vm_id == vm_id):
            return terminal
        ended = self.ended.get(session_id)
        if terminal is None and ended is not None and ended[2] == user_id:
            raise self.closed_error(session_id, vm_id, ended[0])
        raise VirtwireError(
            ErrorCode.TERMINAL_NOT_FOUND,
            self.text("terminal.not_found", session=session_id),
            vm_id=vm_id,
            details={"sessionId": session_id},
        )

    async def close_all(self, reason: str = "gateway-shutdown") -> None:
        for terminal in list(self.terminals.values()):
            terminal.close(reason)
        if self.closing:
            await asyncio.wait(list(self.closing), timeout=5)


__all__ = ["ManagedTerminal", "Mode", "TermState", "TerminalManager", "Viewer"]
