"""``/ws/terminal/{ticket}``: a terminal for xterm.js's ``@xterm/addon-attach``.

The ticket comes from ``terminal-connect`` on ``/ws`` (one use, bound to the user and the
terminal, ``tickets`` TTL to open). Text or binary frames in are keystrokes, exactly as the
addon sends them; output goes out as text frames the addon writes unchanged, the scrollback
first. ``?cols=&rows=`` sets the size on opening (the addon has no resize channel; later
resizes go through ``terminal-resize`` on ``/ws``). Observers' keystrokes are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.routing import WebSocketRoute

from ..consolesessions import accept_ticket
from ..errors import CloseCode, ErrorCode, VirtwireError
from ..hub import Outbox
from ..terminals import ManagedTerminal, Mode, TermState, Viewer

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from ..gateway import Gateway

PATH_PREFIX = "/ws/terminal/"
PATH = PATH_PREFIX + "{ticket}"


class RawViewer(Viewer):
    """An xterm.js socket: output as plain text frames through its own bounded outbox."""

    def __init__(self, user_id: str, mode: Mode, outbox: Outbox) -> None:
        super().__init__(user_id, mode, outbox)
        self.close_code = CloseCode.NORMAL
        self.close_reason = ""

    def output(self, text: str, frame: str) -> None:
        self.outbox.put(text)

    def ended(self, data: dict[str, Any]) -> None:
        reason = data.get("reason", "")
        if "exitStatus" in data:
            reason = f"{reason} (exit status {data['exitStatus']})"
        self.finish(CloseCode.NORMAL, reason)

    def finish(self, code: int, reason: str) -> None:
        """Close after what is queued (the terminal's last output) is sent."""
        if not self.outbox.closed:
            self.close_code, self.close_reason = code, reason
            self.outbox.close()


def _size(scope: Scope) -> tuple[int, int] | None:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    try:
        cols, rows = int(query["cols"][0]), int(query["rows"][0])
    except (KeyError, ValueError, IndexError):
        return None
    if 1 <= cols <= 1000 and 1 <= rows <= 1000:
        return cols, rows
    return None


class TerminalEndpoint:
    """The ASGI endpoint of ``/ws/terminal/{ticket}``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        admitted = await accept_ticket(gateway, "terminal", scope, receive, send)
        if admitted is None:
            return
        ticket = admitted.ticket
        value = ticket.value
        terminal: ManagedTerminal = ticket.target
        mode = terminal.ticket_modes.pop(value, Mode.OBSERVER)
        if terminal.state is not TermState.OPEN:
            with contextlib.suppress(OSError):
                await send({"type": "websocket.close", "code": 1000, "reason": terminal.reason})
            return
        size = _size(scope)
        if size is not None and mode.can_write:
            with contextlib.suppress(VirtwireError):
                await terminal.resize(*size)
        server = gateway.settings.server
        viewer = RawViewer(ticket.user_id, mode, Outbox(server.send_queue_bytes, 1 << 30))
        viewer.outbox.on_overflow = lambda: viewer.finish(
            CloseCode.SLOW_CONSUMER, gateway.catalogue("close.slow_consumer")
        )
        loop = asyncio.get_running_loop()
        writer = loop.create_task(self._write(viewer, send))
        expiry = None
        if ticket.token_expires_at is not None:
            delay = max(0.0, ticket.token_expires_at - time.time() + gateway.settings.auth.leeway)
            expiry = loop.call_later(delay, viewer.finish, CloseCode.AUTH, ErrorCode.TOKEN_EXPIRED)

        def closer(code: int, reason: str) -> asyncio.Task[None]:
            viewer.finish(code, reason)
            return writer

        gateway.closers.add(closer)
        gateway.log.debug(
            "terminal endpoint opened", session=terminal.id, user=ticket.user_id, mode=mode.value
        )
        opened = time.monotonic()
        terminal.attach(viewer)
        try:
            await self._read(viewer, terminal, receive, writer)
        finally:
            gateway.closers.discard(closer)
            if expiry is not None:
                expiry.cancel()
            terminal.detach(viewer)
            viewer.outbox.close()
            if not writer.done():
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, OSError):
                    await asyncio.wait_for(asyncio.shield(writer), 2.0)
            writer.cancel()
            gateway.log.debug("terminal endpoint closed", session=terminal.id)
            gateway.audit_log.record(
                "endpoint-close",
                {
                    "user": ticket.user_id,
                    "address": admitted.address,
                    "kind": "terminal",
                    "vmId": terminal.vm_id,
                    "sessionId": terminal.id,
                    "mode": mode.value,
                    "durationMs": (time.monotonic() - opened) * 1000,
                },
            )

    async def _read(
        self,
        viewer: RawViewer,
        terminal: ManagedTerminal,
        receive: Receive,
        writer: asyncio.Task[None],
    ) -> None:
        while True:
            receiving = asyncio.ensure_future(receive())
            done, _ = await asyncio.wait({receiving, writer}, return_when=asyncio.FIRST_COMPLETED)
            if receiving not in done:  # the writer closed the socket (terminal ended)
                receiving.cancel()
                return
            message = receiving.result()
            if message["type"] == "websocket.disconnect":
                return
            if message["type"] != "websocket.receive" or not viewer.mode.can_write:
                continue
            text = message.get("text")
            data = text.encode() if text is not None else message.get("bytes") or b""
            if data:
                try:
                    await terminal.write(data)
                except VirtwireError:
                    return

    @staticmethod
    async def _write(viewer: RawViewer, send: Send) -> None:
        outbox = viewer.outbox
        try:
            while True:
                text = await outbox.get()
                if text is None:
                    break
                await send({"type": "websocket.send", "text": text})
            await send(
                {
                    "type": "websocket.close",
                    "code": viewer.close_code,
                    "reason": viewer.close_reason.encode()[:123].decode(errors="ignore"),
                }
            )
        except (OSError, RuntimeError):  # the client went away
            pass


def route(gateway: Gateway) -> WebSocketRoute:
    return WebSocketRoute(PATH, TerminalEndpoint(gateway))
